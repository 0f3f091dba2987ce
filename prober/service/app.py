"""`prober serve`: load the config, schedule every endpoint, serve metrics until SIGTERM.

Threads: the asyncio loop (scheduler, probes, reloads) runs in the main
thread; the HTTP server runs in its own threads and reaches the loop with
``asyncio.run_coroutine_threadsafe``.  Reloads (SIGHUP, POST /-/reload) are
serialised, parse the file off the loop, and swap the config whole: a bad
file leaves the running config in force and sets
``prober_config_last_reload_successful`` to 0.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest

from ..config import ConfigError, load_config
from ..engine import probe, quiet_abandoned_connections
from ..model import Config
from ..shard import in_shard, parse_shard
from .metrics import OPTIONAL_FAMILIES, SelfMetrics, Snapshot, SnapshotStore, endpoint_exposition
from .page import Row
from .scheduler import OUTER_GUARD, Change, ProbeScheduler
from .web import ServiceApi, ServiceUnavailable, WebServer

log = logging.getLogger("prober.service")

EXIT_OK, EXIT_USAGE = 0, 3
GRACE_SECONDS = 10.0  # in-flight probes get this long after SIGTERM before they are cancelled
QUEUE_WAIT = 15.0  # /probe: how long a request may wait for a slot under --concurrency
RELOAD_WAIT = 120.0  # /-/reload: parsing 10,000 endpoints takes a while
MAX_LOCATION = 128
# The cyclic GC's thresholds once the service runs.  Python's default (700, 10, 10) ran a full
# collection every few seconds at a few thousand endpoints, each walking every kept report:
# 17-19% of the CPU.  10,000 cut the collector to 3% and lowered RSS; 50,000 kept more cyclic
# garbage (RSS up by half) for no CPU gain (bench/RESULTS.md, "Heap and collector").
GC_THRESHOLDS = (10_000, 10, 10)
T = TypeVar("T")


def settle_heap() -> int:
    """Once the first config is in force: freeze what start-up built, then collect less often.

    Modules, the config and the trust store live as long as the process; frozen, no
    collection walks them again (refcounting still frees them).  Returns how many objects
    were frozen.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return gc.get_freeze_count()


class Reloadable(Protocol):
    def load(self, reason: str, initial: bool = False) -> Coroutine[Any, Any, tuple[bool, str]]: ...


class StartupError(Exception):
    """The service cannot start: one line for the operator, exit code 3."""


@dataclass(frozen=True, slots=True)
class Options:
    config: str
    host: str
    port: int
    shard: tuple[int, int] | None
    location: str | None
    concurrency: int
    discover: str | None = None  # Kubernetes manifests merged under the config on every load
    first_round: bool = False  # probe everything once at start (the demo): /metrics is complete at once
    workers: int = 1
    drop: frozenset[str] = frozenset()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """Validate the flags; raises ValueError with a one-line message."""
        host, port = parse_listen(args.listen)
        shard = parse_shard(args.shard) if args.shard else None
        if args.concurrency < 1:
            raise ValueError(f"--concurrency {args.concurrency}: must be at least 1")
        location = args.location
        if location is not None and (not location.strip() or len(location) > MAX_LOCATION
                                     or not location.isprintable()):
            raise ValueError(f"--location: must be 1 to {MAX_LOCATION} printable characters")
        # Callers other than the CLI (`prober demo`) may leave the newer flags out.
        return cls(args.config, host, port, shard, location, args.concurrency,
                   discover=getattr(args, "discover", None),
                   first_round=bool(getattr(args, "first_round", False)),
                   workers=parse_workers(getattr(args, "workers", "1")),
                   drop=parse_drop(getattr(args, "drop_family", None) or []))


MAX_WORKERS = 256


def parse_workers(text: str) -> int:
    """--workers: a count, or 'auto' for the CPUs this process may use."""
    if text == "auto":
        return usable_cpus()
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError(f"--workers {text!r}: expected a number from 1 to {MAX_WORKERS}, or auto")
    return int(text)


def usable_cpus(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The CPUs this process may run on, capped by its cgroup's CPU quota (a container's CPU limit)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        with open(cpu_max) as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))  # a 1.5-CPU limit still gets 2
    except (OSError, ValueError):
        pass  # no cgroup v2 CPU controller here: the affinity mask is the answer
    return max(1, cpus)


def parse_drop(names: list[str]) -> frozenset[str]:
    """--drop-family: only the optional endpoint families may be left out (docs/metrics.md)."""
    unknown = [n for n in names if n not in OPTIONAL_FAMILIES]
    if unknown:
        raise ValueError(f"--drop-family {unknown[0]!r}: not an optional family; "
                         f"choose from {', '.join(OPTIONAL_FAMILIES)}")
    return frozenset(names)


def read_config(options: Options) -> Config:
    """The config file, with the --discover manifests merged under it (its own keys win)."""
    if options.discover is None:
        return load_config(options.config)
    from ..discover import ManifestError, merged_config
    try:
        return merged_config(options.config, options.discover)
    except ManifestError as err:
        raise ConfigError([f"--discover {err}"]) from None


def parse_listen(text: str) -> tuple[str, int]:
    """'ADDR:PORT', '[V6]:PORT' or ':PORT' (all IPv4 interfaces) -> (address, port)."""
    usage = f"--listen {text!r}: expected ADDR:PORT with an IP address, e.g. 0.0.0.0:9716 or [::1]:9716"
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(usage)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(usage + " (put an IPv6 address in brackets)")
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(usage) from None
    return host, int(port)


class Service:
    """The service state the HTTP threads and the signal handlers act on."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: Options, scheduler: ProbeScheduler,
                 metrics: SelfMetrics, registry: CollectorRegistry) -> None:
        self._loop = loop
        self._options = options
        self._scheduler = scheduler
        self._metrics = metrics
        self._registry = registry
        self._reload_lock = asyncio.Lock()
        self.ready = False

    # ------------------------------------------------- loop side
    async def load(self, reason: str, initial: bool = False) -> tuple[bool, str]:
        """Load the config file and put it in force; (False, one-line reason) leaves the old one running."""
        async with self._reload_lock:
            path = self._options.config
            try:
                config = await asyncio.to_thread(self._read_config)
            except ConfigError as err:
                return self._failed(reason, _summary(err.problems), initial)
            except Exception as err:  # a bad file must never take the running service down
                return self._failed(reason, f"{path}: {type(err).__name__}: {err}", initial)
            endpoints = {e.hostname: e for e in config.endpoints if in_shard(e.hostname, self._options.shard)}
            change = self._scheduler.apply(endpoints)
            self._metrics.endpoints.set(len(endpoints))
            self._metrics.reload_ok.set(1)
            self._metrics.reload_time.set(time.time())
            message = _loaded(path, len(config.endpoints), len(endpoints), self._options.shard, change)
            log.info("%s (%s)", message, reason)
            if not endpoints:
                log.warning("no endpoint of %s is in this shard: nothing will be probed", path)
            return True, message

    def _read_config(self) -> Config:
        return read_config(self._options)

    def _failed(self, reason: str, message: str, initial: bool) -> tuple[bool, str]:
        self._metrics.reload_ok.set(0)
        if not initial:
            log.error("config reload (%s) failed, the previous config stays in force: %s", reason, message)
        return False, message

    # ------------------------------------------------- thread side (ServiceApi)
    def metrics(self) -> bytes:
        return generate_latest(self._registry) + endpoint_exposition(self._scheduler.snapshots())

    def is_configured(self, hostname: str) -> bool:
        return hostname in self._scheduler.endpoints

    def probe(self, hostname: str) -> Snapshot | None:
        endpoint = self._scheduler.endpoints.get(hostname)
        if endpoint is None:
            return None
        return self._call(self._scheduler.probe_now(hostname), endpoint.timeout + OUTER_GUARD + QUEUE_WAIT)

    def report(self, hostname: str) -> Snapshot | None:
        latest = self._scheduler.latest(hostname)
        return latest if latest is not None else self.probe(hostname)

    def overview(self) -> list[Row]:
        """Every endpoint in force with its latest report (None before its first probe)."""
        latest = {s.hostname: s.report for s in self._scheduler.snapshots()}
        return [Row(e, latest.get(h)) for h, e in self._scheduler.endpoints.items()]

    def reload(self) -> tuple[bool, str]:
        ok, message = self._call(self.load("POST /-/reload"), RELOAD_WAIT)
        return ok, message if ok else f"reload failed, the previous config stays in force: {message}"

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: we are shutting down
            coro.close()
            raise ServiceUnavailable("the service is shutting down") from None
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError from None


def _summary(problems: list[str]) -> str:
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem{'s' if more > 1 else ''}; "
                          "`prober validate` lists them all)" if more > 0 else "")


def _loaded(path: str, total: int, kept: int, shard: tuple[int, int] | None, change: Change) -> str:
    where = f", {kept} in shard {shard[0]}/{shard[1]}" if shard else ""
    return (f"loaded {path}: {total} endpoints{where}; {len(change.added)} added, "
            f"{len(change.removed)} removed, {len(change.changed)} changed")


def _setup_logging(level: str, who: str = "") -> None:
    """One line per event on stderr.

    httpx/httpcore log every request's and response's headers at debug level,
    which would print the health-check headers (secrets such as an
    Authorization token), so they stay at WARNING even under --log-level debug.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{who}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    debug = level == "debug"
    # APScheduler logs every job's start and success at info, whatever the probe found, and a
    # warning for every skipped run: under a backlog thousands a minute, formatting each job, at
    # 3% of the CPU.  The scheduler's own per-probe line and its once-a-minute summary of skipped
    # runs say more, so APScheduler keeps only its errors.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("asyncio").setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in ("httpx", "httpcore", "hpack"):
        logging.getLogger(name).setLevel(logging.WARNING)


def install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, service: Reloadable) -> None:
    reloads: set[asyncio.Task] = set()  # held so a running reload is not garbage-collected

    def hangup() -> None:
        task = loop.create_task(service.load("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def open_web(options: Options, api: ServiceApi) -> WebServer:
    try:
        return WebServer(options.host, options.port, api)
    except OSError as err:
        raise StartupError(f"cannot listen on {options.host}:{options.port}: {err.strerror or err}") from None


async def _serve(options: Options) -> int:
    loop = asyncio.get_running_loop()
    quiet_abandoned_connections(loop)
    disable_created_metrics()  # *_created series would double the self-metrics for no alert's use
    registry = CollectorRegistry(auto_describe=False)
    metrics = SelfMetrics(registry, options.location)
    scheduler = ProbeScheduler(probe, SnapshotStore(), metrics, concurrency=options.concurrency,
                               location=options.location, drop=options.drop)
    service = Service(loop, options, scheduler, metrics, registry)
    web = open_web(options, service)
    stop = asyncio.Event()
    install_signals(loop, stop, service)
    web.start()
    log.info("listening on %s", web.url)
    try:
        ok, message = await service.load("start", initial=True)
        if not ok:
            raise StartupError(f"cannot load the config: {message}")
        log.debug("heap settled: %d start-up objects frozen", settle_heap())
        if options.first_round:
            await asyncio.gather(*(scheduler.probe_now(h) for h in list(scheduler.endpoints)))
        scheduler.start()
        service.ready = True
        await stop.wait()
        log.info("stopping: no new probes; in-flight probes get up to %gs", GRACE_SECONDS)
        service.ready = False
        await scheduler.stop(GRACE_SECONDS)
    finally:
        await asyncio.to_thread(web.stop)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
    return EXIT_OK


def serve_main(args: argparse.Namespace) -> int:
    """Entry point of `prober serve`: 0 after a clean SIGTERM/SIGINT, 3 on bad usage or an unloadable config."""
    try:
        options = Options.from_args(args)
    except ValueError as err:
        print(f"prober: {err}", file=sys.stderr)
        return EXIT_USAGE
    from .worker import worker_spec
    spec = worker_spec()
    _setup_logging(args.log_level, f"[worker {spec[0]}]" if spec else "")
    try:
        if spec is not None:
            from .worker import work
            return asyncio.run(work(options, *spec))
        if options.workers > 1:
            from .supervisor import supervise
            return asyncio.run(supervise(options))
        return asyncio.run(_serve(options))
    except StartupError as err:
        print(f"prober: {err}", file=sys.stderr)
        return EXIT_USAGE
