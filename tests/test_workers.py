"""`prober serve --workers N` for real: worker processes on loopback lab servers.

A killed worker is started again and its endpoints come back; a reload reaches
every worker at once; one /metrics lists every endpoint exactly once.
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from test_service import (GUARD_MARK, REPO, ZONE, Lab, Serve, _fails_to_start, _free_port, hostnames, lab,  # noqa: F401
                          parse, pick, until)

from prober.service.metrics import join_expositions
from prober.service.scheduler import TICK_SECONDS, on_tick, phase_seconds
from prober.shard import shard_of, worker_of

NAMES = [f"w{i}.{ZONE}" for i in range(12)]


def _pids(service: Serve, index: int) -> list[int]:
    return [int(m[1]) for line in service.lines if (m := re.search(rf"worker {index} started as pid (\d+)", line))]


def _each_endpoint_once(text: str, names: list[str]) -> None:
    for name in names:
        assert text.count(f'prober_probe_success{{hostname="{name}"') == 1, name
    for family in ("prober_probe_success", "prober_endpoint_info", "prober_scheduler_lag_seconds",
                   "prober_endpoints_configured", "prober_config_last_reload_successful"):
        assert text.count(f"# HELP {family} ") == 1, family  # one family, not one per worker


def test_workers_share_the_endpoints_and_one_metrics_lists_each_once(lab: Lab, tmp_path: Path) -> None:
    parts = {i: {n for n in NAMES if worker_of(n, 2) == i} for i in (0, 1)}
    assert parts[0] and parts[1]
    service = Serve(lab.config(tmp_path / "probes.yaml", NAMES), "--workers", "2", "--location", "lab-w",
                    "--drop-family", "prober_dns_resolver_latency_seconds")
    try:
        service.wait_ready()
        until(lambda: hostnames(service.metrics()) == set(NAMES), 15, "a first probe of every endpoint")
        status, text = service.get("/metrics")
        assert status == 200
        _each_endpoint_once(text, NAMES)
        s = parse(text)
        for i in (0, 1):
            assert pick(s, "prober_endpoints_configured", worker=str(i)) == [len(parts[i])]
            assert pick(s, "prober_worker_up", worker=str(i)) == [1]
            assert sum(pick(s, "prober_probe_runs_total", worker=str(i))) >= len(parts[i])
        assert pick(s, "prober_workers") == [2]
        assert pick(s, "prober_config_last_reload_successful") == [1]
        assert all(l.get("location") == "lab-w" for rows in s.values() for l, _ in rows)
        assert "prober_dns_resolver_latency_seconds" not in s and pick(s, "prober_dns_resolver_up")
        for name in (sorted(parts[0])[0], sorted(parts[1])[0]):  # routed to the worker that owns it
            status, body = service.get(f"/probe?hostname={name}")
            assert status == 200 and f'prober_probe_success{{hostname="{name}",location="lab-w"}}' in body
            status, body = service.get(f"/report?hostname={name}")
            assert status == 200 and f'"hostname": "{name}"' in body
        assert service.get(f"/probe?hostname=unlisted.{ZONE}")[0] == 404
        status, page = service.get("/")  # the status page joins every worker's latest reports
        assert status == 200
        for name in NAMES:
            assert page.count(f">{name}<") == 1, name
        assert "not probed yet" not in page  # every worker answered with its reports
        assert len(_pids(service, 0)) == len(_pids(service, 1)) == 1
    finally:
        assert service.stop() == 0
    assert lab.unlisted_untouched()


def test_a_killed_worker_is_started_again_and_its_endpoints_come_back(lab: Lab, tmp_path: Path) -> None:
    victim = {n for n in NAMES if worker_of(n, 2) == 1}
    service = Serve(lab.config(tmp_path / "probes.yaml", NAMES), "--workers", "2")
    try:
        service.wait_ready()
        until(lambda: hostnames(service.metrics()) == set(NAMES), 15, "a first probe of every endpoint")
        (pid,) = _pids(service, 1)
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        def without_victim() -> dict | None:
            s = service.metrics()
            return None if hostnames(s) & victim else s

        gone = until(without_victim, 10, "the dead worker's endpoints to leave /metrics")
        assert pick(gone, "prober_worker_up", worker="1") == [0]
        assert hostnames(gone) == set(NAMES) - victim  # the other worker goes on

        def back() -> dict | None:
            s = service.metrics()
            fresh = {n for n in victim if pick(s, "prober_probe_last_run_timestamp_seconds", hostname=n)
                     and pick(s, "prober_probe_last_run_timestamp_seconds", hostname=n)[0] > killed}
            return s if fresh == victim else None

        s = until(back, 20, "the restarted worker to probe its endpoints again")
        assert pick(s, "prober_worker_restarts_total", worker="1") == [1]
        assert pick(s, "prober_worker_restarts_total", worker="0") == [0]
        assert pick(s, "prober_worker_up", worker="1") == [1]
        assert pick(s, "prober_endpoints_configured", worker="1") == [len(victim)]
        _each_endpoint_once(service.get("/metrics")[1], NAMES)
        restarted = _pids(service, 1)
        assert len(restarted) == 2 and restarted[1] != pid
        assert "worker 1 (pid %d) exited with signal SIGKILL" % pid in service.stderr
    finally:
        assert service.stop() == 0


def test_a_reload_reaches_every_worker_at_once(lab: Lab, tmp_path: Path) -> None:
    shared = [f"s{i}.{ZONE}" for i in range(12)]
    only_a, only_b = [f"a{i}.{ZONE}" for i in range(6)], [f"b{i}.{ZONE}" for i in range(6)]
    for group in (only_a, only_b):  # each side of the swap lives on both workers
        assert {worker_of(n, 2) for n in group} == {0, 1}
    config = lab.config(tmp_path / "probes.yaml", shared + only_a)
    service = Serve(config, "--workers", "2")
    seen_bad: list[str] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            s = service.metrics()
            names = hostnames(s)
            if names & set(only_a) and names & set(only_b):
                seen_bad.append(f"half-applied: {sorted(names - set(shared))}")
            if not set(shared) <= names:
                seen_bad.append(f"lost series: {sorted(set(shared) - names)}")
            if sum(pick(s, "prober_endpoints_configured")) != 18:
                seen_bad.append(f"endpoints_configured {pick(s, 'prober_endpoints_configured')}")

    try:
        service.wait_ready()
        until(lambda: hostnames(service.metrics()) == set(shared + only_a), 15, "every endpoint probed")
        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        for round_ in range(6):
            lab.config(config, shared + (only_b if round_ % 2 == 0 else only_a))
            status, body, _ = service.request("POST", "/-/reload")
            assert status == 200 and "over 2 workers" in body, body
            time.sleep(0.4)
        config.write_text("endpoints:\n  - hostname: x.example.test\n    colour: blue\n")
        status, body, _ = service.request("POST", "/-/reload")
        assert status == 500 and "probes.yaml:3" in body
        stop.set()
        scraper.join(10)
        assert seen_bad == []
        s = service.metrics()
        assert pick(s, "prober_config_last_reload_successful") == [0]
        until(lambda: hostnames(service.metrics()) == set(shared + only_a), 10, "the last good config probed")
        lab.config(config, shared + only_b)
        service.signal(signal.SIGHUP)  # to the supervisor only; it reloads every worker
        until(lambda: hostnames(service.metrics()) == set(shared + only_b), 15, "the SIGHUP config probed")
        assert pick(service.metrics(), "prober_worker_restarts_total") == [0, 0]
    finally:
        stop.set()
        assert service.stop() == 0


@pytest.mark.parametrize("flags, says", [
    (["--workers", "0"], "--workers"),
    (["--workers", "many"], "--workers"),
    (["--drop-family", "prober_probe_success"], "--drop-family"),
])
def test_bad_worker_flags_are_one_line_and_exit_3(lab: Lab, tmp_path: Path, flags: list[str], says: str) -> None:
    _fails_to_start(lab.config(tmp_path / "probes.yaml", [NAMES[0]]), f"127.0.0.1:{_free_port()}", flags, says)


def test_a_bad_first_config_with_workers_exits_3_before_any_worker(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints:\n  - hostname: www.example.test\n    interval: soon\n")
    _fails_to_start(bad, f"127.0.0.1:{_free_port()}", ["--workers", "2"], "bad.yaml:3")


def test_worker_hash_is_independent_of_the_shard_hash() -> None:
    names = [f"host{i}.example.test" for i in range(2000)]
    mine = [n for n in names if shard_of(n, 2) == 0]  # one replica of two
    split = [sum(1 for n in mine if worker_of(n, 2) == w) for w in (0, 1)]
    assert min(split) > 0.4 * len(mine)  # the replica's endpoints still spread over both workers


def test_joined_exposition_has_each_family_once_and_every_sample() -> None:
    texts = []
    for w in ("0", "1"):
        registry = CollectorRegistry()
        Counter("runs", "Runs.", ["worker"], registry=registry).labels(w).inc()
        Gauge("up", "Up.", ["worker"], registry=registry).labels(w).set(1)
        texts.append(generate_latest(registry))
    joined = join_expositions([b"", *texts]).decode()
    s = parse(joined)
    assert sorted(l["worker"] for l, _ in s["runs_total"]) == ["0", "1"]
    assert sorted(l["worker"] for l, _ in s["up"]) == ["0", "1"]
    assert joined.count("# HELP runs_total") == 1 and joined.count("# TYPE up gauge") == 1


def test_starts_are_batched_on_ticks_and_still_spread() -> None:
    names = [f"host{i}.example.test" for i in range(10_000)]
    phases = [phase_seconds(n, 60.0) for n in names]
    ticks = [on_tick(p) for p in phases]
    assert all(0 <= p - t < TICK_SECONDS + 1e-9 for p, t in zip(phases, ticks))
    occupied = len(set(ticks))
    assert occupied > 0.95 * 60 / TICK_SECONDS  # nearly every tick of the minute has starts
    assert max(ticks.count(t) for t in set(ticks[:50])) < 40  # and none takes a large share
    assert on_tick(12.3456, 0) == 12.3456


def test_auto_workers_follow_the_cpu_limit(tmp_path: Path) -> None:
    from prober.service.app import usable_cpus
    affinity = len(os.sched_getaffinity(0))
    limit = tmp_path / "cpu.max"
    for text, expected in (("max 100000", affinity), ("150000 100000", min(affinity, 2)),
                           ("50000 100000", 1), ("garbage", affinity)):
        limit.write_text(text + "\n")
        assert usable_cpus(str(limit)) == expected, text
    assert usable_cpus(str(tmp_path / "absent")) == affinity


def test_optional_families_are_documented_and_no_alert_reads_them() -> None:
    from prober.service.metrics import OPTIONAL_FAMILIES
    budget = (REPO / "docs" / "metrics.md").read_text().split("## Cardinality budget", 1)[1].split("\n## ", 1)[0]
    optional = {m for line in budget.splitlines() if line.endswith("| yes |") for m in re.findall(r"`(prober_\w+)`", line)}
    assert optional == set(OPTIONAL_FAMILIES)
    alerts = (REPO / "helm" / "prober" / "files" / "alerts.yaml").read_text()
    assert [f for f in OPTIONAL_FAMILIES if f in alerts] == []


class _Big:
    """A service whose /metrics is large: the HTTP layer's gzip is what is under test here."""
    ready = True
    body = b"".join(b'prober_probe_success{hostname="h%d.example.test"} 1.0\n' % i for i in range(5000))

    def metrics(self) -> bytes:
        return self.body


def test_a_large_metrics_body_is_gzipped_for_a_client_that_asks() -> None:
    import gzip
    import http.client
    from prober.service.web import WebServer
    web = WebServer("127.0.0.1", 0, _Big())  # type: ignore[arg-type]
    web.start()
    try:
        for accept, encoded in (("gzip, deflate", True), (None, False)):
            conn = http.client.HTTPConnection("127.0.0.1", web.server_address[1], timeout=10)
            conn.request("GET", "/metrics", headers={"Accept-Encoding": accept} if accept else {})
            reply = conn.getresponse()
            raw = reply.read()
            conn.close()
            assert reply.status == 200
            assert (reply.getheader("Content-Encoding") == "gzip") is encoded
            assert (gzip.decompress(raw) if encoded else raw) == _Big.body
            assert not encoded or len(raw) < len(_Big.body) / 5
    finally:
        web.stop()
