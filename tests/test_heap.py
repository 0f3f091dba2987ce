"""Freed memory goes back to the system: buffers freed between objects that stay alive (the way a
probe's connection buffers sit between the snapshots it leaves) are released by the periodic trim."""
from __future__ import annotations

import os
import sys

import pytest

from prober.service.heap import release_free_memory


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")
def test_memory_freed_between_live_objects_is_given_back() -> None:
    release_free_memory()
    buffers, kept = [], []
    for i in range(6000):  # 16 KiB buffers (malloc, not pymalloc) with a small survivor after each
        buffers.append(b"x" * 16384 + bytes([i % 256]))
        kept.append(b"y" * 700 + bytes([i % 256]))
    del buffers
    held = _resident_mb()
    assert release_free_memory() is True
    after = _resident_mb()
    assert held - after > 60, f"resident {held:.0f} MB before the trim, {after:.0f} MB after"
    assert len(kept) == 6000
