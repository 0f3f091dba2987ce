"""One worker process of `prober serve --workers N`.

The supervisor (supervisor.py) starts each worker as the same command line it
was started with, plus PROBER_WORKER="I/N FD" in the environment: FD is the
worker's end of a socketpair (link.py).  A worker binds no port and reads no
config file.  It probes the endpoints the supervisor hands it, on the same
scheduler, snapshot store and self-metrics (labelled worker="I") as the
single-process service, and answers the supervisor's commands:

- ``stage(generation, endpoints)`` keeps a config aside without applying it;
- ``commit(generation)`` puts the staged config in force (a reload is staged on
  every worker first, then committed on all of them, so no worker runs a
  config the others have not taken);
- ``metrics``, ``probe(hostname)``, ``report(hostname)``, ``overview``: as the HTTP routes.

It exits when told to (SIGTERM, SIGINT) and when the supervisor goes away.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry, disable_created_metrics

from ..engine import probe, quiet_abandoned_connections
from ..model import Endpoint
from .app import GRACE_SECONDS, RELOAD_WAIT, EXIT_OK, Options, Service, settle_heap
from .link import Server
from .metrics import SelfMetrics, SnapshotStore
from .scheduler import Change, ProbeScheduler

log = logging.getLogger("prober.service")

WORKER_ENV = "PROBER_WORKER"


def worker_spec() -> tuple[int, int, int] | None:
    """(index, count, fd) when this process is a worker; taken out of the environment once read."""
    raw = os.environ.pop(WORKER_ENV, None)
    if raw is None:
        return None
    shard, fd = raw.split()
    index, count = shard.split("/")
    return int(index), int(count), int(fd)


class _Staging:
    """Configs handed over by the supervisor, by generation, until they are committed."""

    def __init__(self, service: Service, scheduler: ProbeScheduler, metrics: SelfMetrics) -> None:
        self._service = service
        self._scheduler = scheduler
        self._metrics = metrics
        self._staged: dict[int, dict[str, Endpoint]] = {}
        self.started = asyncio.Event()

    def stage(self, generation: int, endpoints: dict[str, Endpoint]) -> int:
        for older in [g for g in self._staged if g < generation]:  # abandoned by a failed reload
            del self._staged[older]
        self._staged[generation] = endpoints
        return len(endpoints)

    async def _commit(self, generation: int) -> Change:
        endpoints = self._staged.pop(generation)
        change = self._scheduler.apply(endpoints)
        self._metrics.endpoints.set(len(endpoints))
        if not self.started.is_set():
            log.debug("heap settled: %d start-up objects frozen", settle_heap())
            self._scheduler.start()
            self._service.ready = True
            self.started.set()
        return change

    def commit(self, generation: int) -> Change:
        return self._service._call(self._commit(generation), RELOAD_WAIT)


async def work(options: Options, index: int, count: int, fd: int) -> int:
    loop = asyncio.get_running_loop()
    quiet_abandoned_connections(loop)
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=False)
    metrics = SelfMetrics(registry, options.location, worker=str(index))
    scheduler = ProbeScheduler(probe, SnapshotStore(), metrics, concurrency=options.concurrency,
                               location=options.location, drop=options.drop)
    service = Service(loop, options, scheduler, metrics, registry)
    staging = _Staging(service, scheduler, metrics)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # reloads come from the supervisor, to every worker
    server = Server(Connection(fd), {"stage": staging.stage, "commit": staging.commit, "metrics": service.metrics,
                                     "probe": service.probe, "report": service.report,
                                     "overview": service.overview},
                    on_close=lambda: loop.call_soon_threadsafe(stop.set))
    server.start()
    try:
        await stop.wait()
        service.ready = False
        await scheduler.stop(GRACE_SECONDS)
    finally:
        server.close()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.debug("worker %d of %d stopped", index, count)
    return EXIT_OK
