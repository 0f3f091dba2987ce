"""How many probes run at once: at most `--concurrency`, fewer while the process is starved of CPU.

With a fixed limit, a prober that gets less CPU than its fleet needs (a pod throttled at its
CPU limit, a VM whose neighbours take its cores) turns into a convoy: every probe in flight
gets a sliver of the CPU, replies wait unread in their sockets, and all of them run into their
timeouts together, so a whole fleet reports unknown at once and the next batch starts cold.

The event loop's own lateness is the signal.  A watcher sleeps LOOK_SECONDS and measures how
much later than asked it woke up.  A loop that is late by more than STARVED_SECONDS is starved:
the limit shrinks by a third (never below FLOOR), so that the probes in flight finish with
honest timings.  A loop that is on time again lets the limit grow back by an eighth per look,
up to `--concurrency`.  Runs that cannot start wait for a slot (the scheduler lag shows it)
and a run that comes due while its endpoint still waits is skipped and counted: a late
answer, never a false timeout.  Probes already running are never stopped by a shrink.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

log = logging.getLogger("prober.service")

LOOK_SECONDS = 0.5
STARVED_SECONDS = 0.25  # a reply read this late already distorts the latency a probe measures
RELAXED_SECONDS = 0.05
FLOOR = 8
SHRINK = 2 / 3


class AdaptiveLimit:
    """A semaphore whose size follows the event loop's lateness, between FLOOR and `ceiling`."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.floor = min(ceiling, FLOOR)
        self.limit = ceiling
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted a slot as we were cancelled: hand it on
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def observe(self, late: float) -> int:
        """Adjust the limit to one look's lateness (seconds); returns the new limit."""
        before = self.limit
        if late > STARVED_SECONDS:
            self.limit = max(self.floor, int(self.limit * SHRINK))
        elif late < RELAXED_SECONDS and self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + max(1, self.limit // 8))
            self._wake()
        if self.limit != before and (self.limit in (self.floor, self.ceiling) or self.limit < before):
            log.info("probes in flight at most %d (was %d): the event loop was %.2fs late", self.limit, before, late)
        return self.limit

    async def watch(self, on_change=None) -> None:
        """Run until cancelled: look at the loop's lateness every LOOK_SECONDS and adjust."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + LOOK_SECONDS
            await asyncio.sleep(LOOK_SECONDS)
            late = max(0.0, loop.time() - asked)
            limit = self.observe(late)
            if on_change is not None:
                on_change(limit, late)
