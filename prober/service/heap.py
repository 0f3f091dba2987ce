"""Give the memory that the C allocator holds free back to the system, once a minute.

Every probe allocates and frees its connection buffers (asyncio's TLS read buffer, OpenSSL's
records and handshake state), and the snapshot and report that outlive it are allocated among
them.  glibc's malloc returns memory to the system by itself only from the top of its heap, so
those long-lived objects, scattered between freed buffers, keep the process's resident size at
its high-water mark.  Measured with 2,000 endpoints in one process: 315 MB resident, of which
malloc_trim released 200 MB, in 19 ms the first time and under 1 ms after.  malloc_trim(0) also
releases the free pages inside the heap (glibc 2.8 and later).  Without glibc this does nothing.
"""
from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

TRIM_SECONDS = 60.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the process already runs on
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; True when some memory was released."""
    return bool(_TRIM(0)) if _TRIM is not None else False


async def release_free_memory_forever(every: float = TRIM_SECONDS) -> None:
    while True:
        await asyncio.sleep(every)
        release_free_memory()
