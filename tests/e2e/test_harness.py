"""The tier's own rules: the prober runs under a loopback-only guard; a missing server skips or fails.

The guard is checked without sending a packet anywhere: the decision and the
refusal happen before the real socket call, which a non-loopback address
never reaches.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import harness
import netguard

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("host", ["127.0.0.1", "127.201.7.53", "::1", "[::1]", "::ffff:127.0.0.2", "localhost", ""])
def test_loopback_destinations_pass(host: str) -> None:
    seen: list[str] = []
    netguard.check((host, 53), "connect", seen.append)
    assert seen == []


@pytest.mark.parametrize("host", ["192.0.2.1", "198.51.100.7", "10.0.0.1", "2001:db8::1", "example.test", "0.0.0.0"])
def test_anything_else_is_refused_and_logged(host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "guard.log"
    monkeypatch.setenv("PROBER_GUARD_LOG", str(log))
    with pytest.raises(ConnectionRefusedError, match="network guard"):
        netguard.check((host, 53), "sendto", netguard._report_outward)
    assert log.read_text() == f"sendto to {(host, 53)!r}\n"


def test_unix_sockets_are_not_network_traffic() -> None:
    seen: list[str] = []
    netguard.check("/run/some.sock", "connect", seen.append)
    assert seen == []


@pytest.fixture
def missing_tool(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(harness.TOOLS, "e2e-no-such-server", ("/nonexistent/e2e-no-such-server", "no-such-package"))
    return "e2e-no-such-server"


def test_a_missing_server_skips_the_test_outside_ci(missing_tool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install no-such-package"):
        harness.tool(missing_tool)


def test_a_missing_server_fails_the_test_under_ci(missing_tool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install no-such-package"):
        harness.tool(missing_tool)
