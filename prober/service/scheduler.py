"""One APScheduler job per endpoint, every `interval`, under a global concurrency limit.

Starts are spread over the interval: each endpoint's phase is a stable hash of
its hostname plus a little per-process jitter, anchored on the unix epoch, so
10,000 endpoints do not fire in the same second, a restart keeps each phase,
and replicas in different locations do not hit an endpoint at the same instant.
Phases are rounded down to a 100 ms tick (TICK_SECONDS): the endpoints of one
tick share one planned time, so the loop wakes once per tick and starts them
together instead of waking from idle for every single start.

Every run goes through an AdaptiveLimit (prober/service/limit.py): at most
`concurrency` at once, fewer while the event loop is starved of CPU; the scheduler lag
(actual start, once the semaphore is held, minus the planned run time that
APScheduler reports on submission) shows when that limit or the loop falls
behind.  The engine enforces each endpoint's timeout; an outer guard a little
later backs it up, so one hung endpoint never holds a slot past its budget.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ..engine import unknown_report
from ..model import Endpoint, Report
from .heap import release_free_memory_forever
from .limit import AdaptiveLimit
from .metrics import SelfMetrics, Snapshot, SnapshotStore, build_snapshot

log = logging.getLogger("prober.service")

Probe = Callable[[Endpoint], Awaitable[Report]]
# Seconds past the endpoint's timeout before the outer guard stops a probe the engine did not.
OUTER_GUARD = 2.0
# Per-process jitter added to the stable phase, as a fraction of the interval.
JITTER_FRACTION = 0.1
# Starts are batched on this grid: at 10,000 endpoints a minute, ~17 starts per wake-up instead of 1,
# and a start is at most this much earlier than its hashed phase.  Paced at 50/s, a probe cost
# 13.6 ms of CPU unbatched, 12.9 on 50 ms ticks and 11.4 on 100 ms ticks (8.6 all at once; bench/perprobe.py,
# bench/RESULTS.md round 4).
TICK_SECONDS = 0.1
# Skipped runs are counted one by one and said in the log at most once per this many seconds.
SKIP_SUMMARY_SECONDS = 60.0


def phase_seconds(hostname: str, interval: float, jitter: float = 0.0) -> float:
    """Where in [0, interval) this endpoint's runs fall: a stable hash of the hostname plus `jitter`.

    The hash is salted so that it is independent of the shard assignment
    (prober.shard hashes the same name): a shard's endpoints still spread
    evenly over the interval.
    """
    digest = hashlib.sha256(b"prober-phase\0" + hostname.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return (fraction * interval + jitter) % interval


def on_tick(phase: float, tick: float = TICK_SECONDS) -> float:
    """`phase` rounded down to the tick grid (whole milliseconds, so equal ticks compare equal)."""
    if tick <= 0:
        return phase
    return round((phase // tick) * tick, 3)


@dataclass(frozen=True, slots=True)
class Change:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]


class ProbeScheduler:
    """Schedules the loaded endpoints, keeps their latest snapshots, and applies config changes."""

    def __init__(self, probe: Probe, store: SnapshotStore, metrics: SelfMetrics, *, concurrency: int,
                 location: str | None = None, drop: frozenset[str] = frozenset(),
                 tick: float = TICK_SECONDS) -> None:
        self._probe = probe
        self._store = store
        self._metrics = metrics
        self._location = location
        self._drop = drop
        self._tick = tick
        self._limit = AdaptiveLimit(concurrency)
        self._watcher: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None
        self._skips, self._skips_said = 0, None  # skipped runs since the last line that said so, and when
        metrics.concurrency_limit.set(concurrency)
        self._endpoints: dict[str, Endpoint] = {}
        self._planned: dict[str, float] = {}  # hostname -> planned run time of the submitted run
        self._inflight: dict[str, set[asyncio.Task[Report]]] = {}
        self._stopping = False
        self._scheduler = AsyncIOScheduler(timezone=timezone.utc, job_defaults={
            "max_instances": 1, "coalesce": True,
            "misfire_grace_time": None,  # a late run still runs (once: coalesce); the lag histogram shows it
        })
        self._scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)

    # ------------------------------------------------------------------ config
    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """The endpoints in force: swapped whole by apply(), so readers never see half a config."""
        return self._endpoints

    def snapshots(self) -> list[Snapshot]:
        """The latest snapshot of every endpoint in force (what /metrics exports)."""
        current = self._endpoints
        return [s for s in self._store.all() if s.hostname in current]

    def apply(self, endpoints: Mapping[str, Endpoint]) -> Change:
        """Make `endpoints` the config in force: swap first, then fix jobs, probes and snapshots."""
        old, new = self._endpoints, dict(endpoints)
        self._endpoints = new
        change = Change(added=tuple(sorted(new.keys() - old.keys())),
                        removed=tuple(sorted(old.keys() - new.keys())),
                        changed=tuple(sorted(h for h in new.keys() & old.keys() if new[h] != old[h])))
        for hostname in change.removed:
            self._cancel(hostname)
            self._store.drop(hostname)
            self._planned.pop(hostname, None)
            try:
                self._scheduler.remove_job(hostname)
            except JobLookupError:
                pass
        for hostname in change.changed:
            self._cancel(hostname)  # its result would describe the old contract
            self._schedule(new[hostname])
        for hostname in change.added:
            self._schedule(new[hostname])
        return change

    def _schedule(self, endpoint: Endpoint) -> None:
        interval = endpoint.interval
        phase = on_tick(phase_seconds(endpoint.hostname, interval, random.uniform(0.0, interval * JITTER_FRACTION)),
                        self._tick)
        trigger = IntervalTrigger(seconds=interval, start_date=datetime.fromtimestamp(phase, tz=timezone.utc),
                                  timezone=timezone.utc)
        self._scheduler.add_job(self._scheduled_run, trigger, args=(endpoint.hostname,), id=endpoint.hostname,
                                name=endpoint.hostname, replace_existing=True)

    def _cancel(self, hostname: str) -> None:
        for task in self._inflight.pop(hostname, set()):
            task.cancel()

    # ----------------------------------------------------------- APScheduler
    def _submitted(self, event: JobSubmissionEvent) -> None:
        # Runs in the loop thread before the job's task starts: the plan is there when it looks.
        self._planned[event.job_id] = event.scheduled_run_times[0].timestamp()

    def _skipped(self, event: JobSubmissionEvent) -> None:
        self._metrics.skipped.inc()
        log.debug("skipped a run of %s: the previous run is still going", event.job_id)
        self._skips += 1
        now = time.monotonic()
        if self._skips_said is not None and now - self._skips_said < SKIP_SUMMARY_SECONDS:
            return
        why = ("because the previous run of the same endpoint was still going: the fleet needs more CPU, "
               "more --concurrency or more --workers (prober_probe_runs_skipped_total, prober_scheduler_lag_seconds)")
        if self._skips_said is None:
            log.warning("skipped a run of %s %s; further skips are summed up once a minute", event.job_id, why)
        else:
            log.warning("skipped %d run%s in the last %.0fs %s", self._skips, "" if self._skips == 1 else "s",
                        now - self._skips_said, why)
        self._skips, self._skips_said = 0, now

    def start(self) -> None:
        self._scheduler.start()
        self._watcher = asyncio.ensure_future(self._limit.watch(self._looked))
        self._trimmer = asyncio.ensure_future(release_free_memory_forever())

    def _looked(self, limit: int, late: float) -> None:
        self._metrics.concurrency_limit.set(limit)
        self._metrics.loop_late.set(late)

    async def stop(self, grace: float) -> None:
        """Stop scheduling, give in-flight probes `grace` seconds, cancel the rest."""
        self._stopping = True
        for task in (self._watcher, self._trimmer):
            if task is not None:
                task.cancel()
        if self._scheduler.running:
            self._scheduler.pause()
        tasks = [t for group in self._inflight.values() for t in group]
        if tasks:
            log.info("waiting up to %gs for %d probes in flight", grace, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(0)  # let the job coroutines finish storing what they got
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    # ------------------------------------------------------------------- runs
    async def _scheduled_run(self, hostname: str) -> None:
        planned = self._planned.pop(hostname, None)
        endpoint = self._endpoints.get(hostname)
        if endpoint is None:
            return
        try:
            report = await self._guarded(endpoint, planned)
        except asyncio.CancelledError:  # shutdown: nothing to record, and APScheduler would log it as a crash
            return
        if report is not None:
            self._metrics.observe_run(report)
            self._keep(endpoint, report)

    async def probe_now(self, hostname: str) -> Snapshot | None:
        """Probe a configured endpoint now (for /probe and /report); None when it is not configured."""
        endpoint = self._endpoints.get(hostname)
        if endpoint is None:
            return None
        report = await self._guarded(endpoint, None)
        return None if report is None else self._keep(endpoint, report)

    def latest(self, hostname: str) -> Snapshot | None:
        return self._store.get(hostname) if hostname in self._endpoints else None

    def _keep(self, endpoint: Endpoint, report: Report) -> Snapshot:
        log.info("probed %s: %s %s in %.2fs", report.hostname, report.status.upper(),
                 report.verdict.code or "-", report.duration_seconds)
        snapshot = build_snapshot(report, self._location, self._drop)
        if self._endpoints.get(endpoint.hostname) is endpoint:  # not removed or changed meanwhile
            self._store.put(snapshot)
        return snapshot

    async def _bounded(self, endpoint: Endpoint) -> Report:
        """The probe under the outer guard, in the task a reload can cancel (one task, not two)."""
        async with asyncio.timeout(endpoint.timeout + OUTER_GUARD):
            return await self._probe(endpoint)

    async def _guarded(self, endpoint: Endpoint, planned: float | None) -> Report | None:
        """Run one probe under the limit and the outer guard; None when a reload or shutdown cancelled it."""
        hostname = endpoint.hostname
        async with self._limit:
            if self._stopping:
                return None
            started_wall, started = time.time(), time.monotonic()
            if planned is not None:
                self._metrics.lag.observe(max(0.0, started_wall - planned))
            task = asyncio.ensure_future(self._bounded(endpoint))
            self._inflight.setdefault(hostname, set()).add(task)
            try:
                return await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves
                log.debug("cancelled the probe of %s: removed or changed by a reload", hostname)
                return None
            except asyncio.TimeoutError:
                log.warning("the probe of %s overran its %gs timeout; stopped by the outer guard",
                            hostname, endpoint.timeout)
                return unknown_report(endpoint, started_wall, started, f"the probe did not finish within its "
                               f"{endpoint.timeout:g}s timeout and was stopped by the service")
            except Exception as err:  # the engine never raises; if it does, one endpoint must not stop the rest
                log.warning("the probe of %s failed: %s: %s", hostname, type(err).__name__, err)
                return unknown_report(endpoint, started_wall, started, f"the probe failed inside the prober "
                               f"({type(err).__name__}); see the service log")
            finally:
                group = self._inflight.get(hostname)
                if group is not None:
                    group.discard(task)
                    if not group:
                        del self._inflight[hostname]
