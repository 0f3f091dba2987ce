"""`prober serve --workers N`: N probing processes behind one port.

The supervisor is the only process that reads the config file and the only one
that listens.  Each endpoint belongs to one worker, by jump hash of its
hostname (prober.shard.worker_of, salted apart from --shard's hash), so the N
workers split this replica's endpoints without talking to each other.

- /metrics joins the workers' expositions family by family (their endpoint
  series are kept as exposition bytes already) with the supervisor's own.
- /probe and /report go to the worker that owns the hostname; the status page
  joins every worker's latest reports.
- A reload (SIGHUP, POST /-/reload) is parsed once here, staged on every
  running worker, and only then committed on all of them: a config that a
  worker could not take is not applied anywhere.
- A worker that exits on its own is started again after a back-off (1 s,
  doubling to 30 s while it keeps dying young) with the config in force, so
  its endpoints come back; prober_worker_restarts_total counts it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest

from ..config import ConfigError
from ..model import Endpoint, Report
from ..shard import in_shard, worker_of
from .app import (EXIT_OK, GRACE_SECONDS, OUTER_GUARD, QUEUE_WAIT, Options, StartupError, _loaded, _summary,
                  install_signals, open_web, read_config)
from .link import Client, LinkClosed, RemoteError, wait
from .heap import release_free_memory_forever
from .metrics import Snapshot, join_expositions, reload_gauges
from .page import Row
from .scheduler import Change
from .web import ServiceUnavailable
from .worker import WORKER_ENV

log = logging.getLogger("prober.service")

STAGE_WAIT = 120.0  # a worker unpickling 10,000 endpoints, or still importing after a restart
SCRAPE_WAIT = 30.0  # one worker's /metrics
BACKOFF_FIRST, BACKOFF_MAX, YOUNG = 1.0, 30.0, 30.0  # seconds
WATCH_EVERY = 0.2


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen | None = None
    link: Client | None = None
    started: float = 0.0
    backoff: float = BACKOFF_FIRST
    due: float | None = None  # when a dead worker is started again
    part: dict[str, Endpoint] = field(default_factory=dict)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.link is not None


class SupervisorMetrics:
    """The supervisor's own series: the reload gauges and one up and restart count per worker."""

    def __init__(self, registry: CollectorRegistry, location: str | None, count: int) -> None:
        loc = (location,) if location else ()
        names = ("location",) if location else ()
        self.reload_ok, self.reload_time = reload_gauges(registry, location)
        workers = Gauge("prober_workers", "Worker processes this prober runs (--workers).", names, registry=registry)
        (workers.labels(*loc) if loc else workers).set(count)
        up = Gauge("prober_worker_up", "1 while the worker process runs with the config in force.",
                   (*names, "worker"), registry=registry)
        restarts = Counter("prober_worker_restarts", "Worker processes started again after they exited.",
                           (*names, "worker"), registry=registry)
        self.up = [up.labels(*loc, str(i)) for i in range(count)]
        self.restarts = [restarts.labels(*loc, str(i)) for i in range(count)]


class Supervisor:
    """The ServiceApi of the HTTP server, over N worker processes."""

    def __init__(self, options: Options) -> None:
        self._options = options
        self._count = options.workers
        self._workers = [_Worker(i) for i in range(self._count)]
        self._endpoints: dict[str, Endpoint] = {}
        self._generation = 0
        self._lock = threading.Lock()  # one reload or worker start at a time
        # Held by a scrape from its first request to its last answer, and by a commit burst: a
        # scrape sees every worker before a commit or every worker after it, never a mix.
        self._view = threading.Lock()
        self._stopping = False
        self.ready = False
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        own = SupervisorMetrics(self.registry, options.location, self._count)
        self.reload_ok, self.reload_time, self._up, self._restarts = own.reload_ok, own.reload_time, own.up, own.restarts

    # ------------------------------------------------------------ config
    def _read(self) -> dict[str, Endpoint]:
        config = read_config(self._options)
        self._total = len(config.endpoints)
        return {e.hostname: e for e in config.endpoints if in_shard(e.hostname, self._options.shard)}

    def _parts(self, endpoints: dict[str, Endpoint]) -> list[dict[str, Endpoint]]:
        parts: list[dict[str, Endpoint]] = [{} for _ in self._workers]
        for hostname, endpoint in endpoints.items():
            parts[worker_of(hostname, self._count)][hostname] = endpoint
        return parts

    def load(self, reason: str, initial: bool = False) -> tuple[bool, str]:
        """Parse the file, stage it on every running worker, then commit it on all of them."""
        with self._lock:
            path = self._options.config
            try:
                endpoints = self._read()
            except ConfigError as err:
                return self._failed(reason, _summary(err.problems))
            except Exception as err:  # a bad file must never take the running service down
                return self._failed(reason, f"{path}: {type(err).__name__}: {err}")
            parts = self._parts(endpoints)
            generation = self._generation + 1
            live = [w for w in self._workers if w.running()]
            try:
                staged = [(w, w.link.submit("stage", generation, parts[w.index])) for w in live]  # type: ignore[union-attr]
                for _, future in staged:
                    wait(future, STAGE_WAIT)
            except (LinkClosed, RemoteError, TimeoutError) as err:
                return self._failed(reason, f"a worker could not take the new config ({_why(err)})")
            with self._view:  # committed on every worker in one burst, between two scrapes
                commits = [(w, w.link.submit("commit", generation)) for w in live]  # type: ignore[union-attr]
                self._endpoints, self._generation = endpoints, generation
                for w in self._workers:
                    w.part = parts[w.index]
                change = self._settle(commits)
            self.reload_ok.set(1)
            self.reload_time.set(time.time())
            message = _loaded(path, self._total, len(endpoints), self._options.shard, change)
            message += f" over {self._count} workers"
            if not initial:
                log.info("%s (%s)", message, reason)
            return True, message

    def _settle(self, commits: list[tuple[_Worker, Future]]) -> Change:
        added: list[str] = []
        removed: list[str] = []
        changed: list[str] = []
        for w, future in commits:
            try:
                change = wait(future, STAGE_WAIT)
                added += change.added
                removed += change.removed
                changed += change.changed
                self._up[w.index].set(1)
            except (LinkClosed, RemoteError, TimeoutError) as err:
                # It must not keep the old config: end it; it comes back with the one in force.
                if not self._stopping:
                    log.error("worker %d did not commit the config (%s); restarting it", w.index, _why(err))
                self._end(w)
        return Change(tuple(added), tuple(removed), tuple(changed))

    def adopt(self, endpoints: dict[str, Endpoint]) -> None:
        """The first config, read before any worker runs: each worker is started with its part."""
        self._endpoints, self._generation = endpoints, 1
        for w, part in zip(self._workers, self._parts(endpoints)):
            w.part = part
        self.reload_ok.set(1)
        self.reload_time.set(time.time())

    def _failed(self, reason: str, message: str) -> tuple[bool, str]:
        self.reload_ok.set(0)
        log.error("config reload (%s) failed, the previous config stays in force: %s", reason, message)
        return False, message

    # ----------------------------------------------------------- workers
    def _spawn(self, w: _Worker) -> None:
        mine, theirs = socket.socketpair()
        env = {**os.environ, WORKER_ENV: f"{w.index}/{self._count} {theirs.fileno()}"}
        # The same interpreter and command line as this process: the same flags, the same entry point.
        argv = [sys.executable, *sys.orig_argv[1:]]
        try:
            # Its own session: a terminal's SIGINT or SIGHUP, or a signal to this process group, reaches
            # the supervisor only, which stops or reloads the workers itself (a worker still importing
            # would die of a SIGHUP).  systemd's control-group kill still reaches every worker.
            w.proc = subprocess.Popen(argv, env=env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        finally:
            theirs.close()
        w.link = Client(Connection(mine.detach()), f"worker {w.index}")
        w.started = time.monotonic()
        log.info("worker %d started as pid %d", w.index, w.proc.pid)

    def _start(self, workers: list[_Worker]) -> None:
        """Start workers (in parallel) and hand each its part of the config in force."""
        with self._lock:
            if self._stopping:
                return
            for w in workers:
                self._spawn(w)
            generation, staged = self._generation, []
            for w in workers:
                try:
                    staged.append((w, w.link.submit("stage", generation, w.part)))  # type: ignore[union-attr]
                except LinkClosed:
                    pass
            commits = []
            for w, future in staged:
                try:
                    wait(future, STAGE_WAIT)
                    commits.append((w, w.link.submit("commit", generation)))  # type: ignore[union-attr]
                except (LinkClosed, RemoteError, TimeoutError) as err:
                    if not self._stopping:
                        log.error("worker %d did not take the config (%s)", w.index, _why(err))
                    self._end(w)
            self._settle(commits)

    def _end(self, w: _Worker) -> None:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()

    def watch(self) -> None:
        """One supervision pass: notice exited workers, start them again when their back-off is over."""
        now = time.monotonic()
        for w in self._workers:
            if self._stopping or w.proc is None or w.proc.poll() is None:
                continue
            if w.due is None:
                self._up[w.index].set(0)
                if w.link is not None:
                    w.link.close()
                w.backoff = min(w.backoff * 2, BACKOFF_MAX) if now - w.started < YOUNG else BACKOFF_FIRST
                w.due = now + w.backoff
                log.error("worker %d (pid %d) exited with %s; its endpoints are started again in %gs",
                          w.index, w.proc.pid, _exit(w.proc.returncode), w.backoff)
            elif now >= w.due:
                w.due = None
                self._restarts[w.index].inc()
                self._start([w])

    def start(self) -> None:
        """Every worker, each with its part of the first config (already read by load's caller)."""
        self._start(self._workers)

    def stop(self, grace: float) -> None:
        self._stopping = True  # not under the lock: a worker start in progress must not hold up SIGTERM
        procs = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for w in self._workers:
            if w.link is not None:
                w.link.close()

    # ------------------------------------------------- ServiceApi (HTTP threads)
    def _ask_all(self, command: str, what: str) -> list:
        """Every running worker's answer to a command; a worker that cannot answer is left out (down)."""
        answers = []
        with self._view:
            asked = []
            for w in self._workers:
                if w.running():
                    try:
                        asked.append((w, w.link.submit(command)))  # type: ignore[union-attr]
                        continue
                    except LinkClosed:
                        pass
                self._up[w.index].set(0)  # gone before the supervision pass noticed
            for w, future in asked:
                try:
                    answers.append(wait(future, SCRAPE_WAIT))
                except (LinkClosed, RemoteError, TimeoutError) as err:
                    self._up[w.index].set(0)
                    log.warning("worker %d left out of %s: %s", w.index, what, _why(err))
        return answers

    def metrics(self) -> bytes:
        parts = self._ask_all("metrics", "this scrape")  # first: it sets prober_worker_up of a silent worker
        return join_expositions([generate_latest(self.registry), *parts])

    def overview(self) -> list[Row]:
        """Every endpoint in force with its worker's latest report; pending while that worker restarts."""
        latest: dict[str, Report | None] = {row.endpoint.hostname: row.report
                                            for rows in self._ask_all("overview", "the status page") for row in rows}
        return [Row(e, latest.get(h)) for h, e in self._endpoints.items()]

    def is_configured(self, hostname: str) -> bool:
        return hostname in self._endpoints

    def _ask(self, command: str, hostname: str) -> Snapshot | None:
        endpoint = self._endpoints.get(hostname)
        if endpoint is None:
            return None
        w = self._workers[worker_of(hostname, self._count)]
        try:
            if not w.running():
                raise LinkClosed("not running")
            return w.link.call(command, hostname,  # type: ignore[union-attr]
                               timeout=endpoint.timeout + OUTER_GUARD + QUEUE_WAIT + 1)
        except LinkClosed:
            raise ServiceUnavailable(f"the worker that probes {hostname} is restarting; try again") from None
        except RemoteError as err:
            if err.args and str(err.args[0]).startswith("TimeoutError"):
                raise TimeoutError from None
            raise ServiceUnavailable(f"the worker that probes {hostname} failed: {err}") from None

    def probe(self, hostname: str) -> Snapshot | None:
        return self._ask("probe", hostname)

    def report(self, hostname: str) -> Snapshot | None:
        return self._ask("report", hostname)

    def reload(self) -> tuple[bool, str]:
        ok, message = self.load("POST /-/reload")
        return ok, message if ok else f"reload failed, the previous config stays in force: {message}"


class _Loop:
    """What the signal handlers reload through: the supervisor's load, off the event loop."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def load(self, reason: str, initial: bool = False) -> tuple[bool, str]:
        return await asyncio.to_thread(self._supervisor.load, reason, initial)


def _why(err: Exception) -> str:
    return str(err) or type(err).__name__


def _exit(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"


async def supervise(options: Options) -> int:
    loop = asyncio.get_running_loop()
    supervisor = Supervisor(options)
    try:
        endpoints = await asyncio.to_thread(supervisor._read)
    except ConfigError as err:
        raise StartupError(f"cannot load the config: {_summary(err.problems)}") from None
    except OSError as err:
        raise StartupError(f"cannot load the config: {options.config}: {err}") from None
    supervisor.adopt(endpoints)
    web = open_web(options, supervisor)
    stop = asyncio.Event()
    install_signals(loop, stop, _Loop(supervisor))
    web.start()
    log.info("listening on %s", web.url)
    try:
        await asyncio.to_thread(supervisor.start)
        log.info("%d endpoints over %d workers", len(endpoints), options.workers)
        del endpoints
        supervisor.ready = True
        trimmer = asyncio.ensure_future(release_free_memory_forever())  # each scrape joins the workers' bytes
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), WATCH_EVERY)
            except asyncio.TimeoutError:
                await asyncio.to_thread(supervisor.watch)
        log.info("stopping: no new probes; in-flight probes get up to %gs", GRACE_SECONDS)
        supervisor.ready = False
        trimmer.cancel()
    finally:
        await asyncio.to_thread(supervisor.stop, GRACE_SECONDS)
        await asyncio.to_thread(web.stop)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
    return EXIT_OK
