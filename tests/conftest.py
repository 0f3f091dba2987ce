"""Shared fixtures.  The network guard is autouse and absolute.

Tests may only talk to 127.0.0.0/8 and ::1.  The guard patches the socket
calls that open or address traffic, refuses anything else, and records the
attempt so the test fails even when the prober swallowed the error and
turned it into a finding.
"""
from __future__ import annotations

import pytest

import netguard


@pytest.fixture(autouse=True)
def network_guard(monkeypatch):
    violations: list[str] = []
    for owner, name, replacement in netguard.patches(violations.append):
        monkeypatch.setattr(owner, name, replacement)
    yield violations
    if violations:
        pytest.fail("network guard: this test tried to reach outside loopback: " + "; ".join(violations))
