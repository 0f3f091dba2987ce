"""Polling for tests that wait on real servers."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(what: str, condition: Callable[[], T | None], timeout: float, interval: float = 0.1) -> T:
    """Poll until `condition()` is truthy and return it; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}", pytrace=False)
        time.sleep(interval)


def sigint_default() -> None:
    """preexec_fn for a child that a test interrupts with SIGINT, as Ctrl-C would.

    A non-interactive shell starts its background jobs with SIGINT ignored, and the ignore is
    inherited through exec: a test suite run that way (as CI may be) would send a Ctrl-C the
    child never sees.  A terminal's foreground job has it at its default.
    """
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
