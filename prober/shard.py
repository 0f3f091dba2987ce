"""Split the endpoint list across N prober replicas.

Each replica keeps the endpoints whose hostname hashes to its shard.  The hash
is jump consistent hash (Lamping & Veach 2014, arXiv:1406.2294) keyed on the
first 8 bytes, big-endian, of SHA-256 of the normalised hostname (lower case,
no trailing dot).  Jump hash is used instead of ``key % n`` because growing
from N to N+1 replicas then moves only ~1/(N+1) of the endpoints to the new
replica; with modulo most endpoints would change replica, and every moved
endpoint briefly loses its series and its alert ``for:`` timers.

SHA-256 (not Python's ``hash()``) keeps the assignment identical across
processes, runs and machines, so every replica agrees without talking.
"""
from __future__ import annotations

import hashlib
import re
import socket

_MASK64 = (1 << 64) - 1
_JUMP_MULTIPLIER = 2862933555777941757  # the 64-bit LCG constant from the paper
_SHARD_RE = re.compile(r"(?P<index>\d+|ordinal)/(?P<count>\d+)")
_ORDINAL_RE = re.compile(r"-(\d+)$")
_USAGE = "expected I/N with 0 <= I < N (e.g. 0/4) or ordinal/N"


def normalise(hostname: str) -> str:
    """The form that is hashed: 'API.Example.com.' and 'api.example.com' are one endpoint."""
    return hostname.strip().rstrip(".").lower()


def _key(hostname: str, salt: bytes = b"") -> int:
    digest = hashlib.sha256(salt + normalise(hostname).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def jump_hash(key: int, n: int) -> int:
    """Jump consistent hash: map a 64-bit key to a bucket in [0, n)."""
    if n < 1:
        raise ValueError(f"shard count must be at least 1, got {n}")
    bucket, j = -1, 0
    while j < n:
        bucket = j
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK64
        j = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


def shard_of(hostname: str, n: int) -> int:
    """The shard in [0, n) that probes ``hostname``."""
    return jump_hash(_key(hostname), n)


def worker_of(hostname: str, n: int) -> int:
    """The worker process in [0, n) of one `prober serve --workers n` that probes ``hostname``.

    The key is salted: within a replica that already holds only shard I of N, the
    unsalted hash would send every endpoint to the same worker whenever n == N.
    """
    return jump_hash(_key(hostname, b"prober-worker\0"), n)


def parse_shard(text: str, hostname: str | None = None) -> tuple[int, int]:
    """Parse ``--shard``: ``I/N``, or ``ordinal/N`` for a StatefulSet pod.

    With ``ordinal/N`` the index is the trailing ``-<digits>`` of the pod's
    hostname (``prober-2`` -> 2), as a StatefulSet names its pods; ``hostname``
    defaults to this machine's.  Raises ValueError with a one-line message.
    """
    match = _SHARD_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--shard {text!r}: {_USAGE}")
    count = int(match["count"])
    if count < 1:
        raise ValueError(f"--shard {text!r}: the shard count N must be at least 1")
    if match["index"] == "ordinal":
        index = _ordinal(hostname if hostname is not None else socket.gethostname(), text)
    else:
        index = int(match["index"])
    if index >= count:
        raise ValueError(f"--shard {text!r}: shard index {index} is not below the shard count {count}")
    return index, count


def _ordinal(hostname: str, text: str) -> int:
    match = _ORDINAL_RE.search(hostname.strip())
    if match is None:
        raise ValueError(
            f"--shard {text!r}: hostname {hostname!r} does not end in -<digits>; "
            "ordinal/N needs a StatefulSet pod name such as prober-0, otherwise give I/N")
    return int(match[1])


def in_shard(hostname: str, shard: tuple[int, int] | None) -> bool:
    """True when this replica (``shard`` = (I, N), None = unsharded) probes ``hostname``."""
    if shard is None:
        return True
    index, count = shard
    return shard_of(hostname, count) == index
