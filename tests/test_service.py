"""`prober serve` for real: a subprocess on a loopback port, probing lab servers.

The service runs under a network guard of its own (the conftest guard only
covers this process): a connect, sendto or lookup outside 127.0.0.0/8 and ::1
is refused and reported on stderr, and every test fails on such a report.
Metrics are read with prometheus_client's parser, as Prometheus would.
"""
from __future__ import annotations

import gc
import http.client
import os
import signal
import socket
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import netguard
import pytest
from waiting import wait_for
from prometheus_client.parser import text_string_to_metric_families

from prober.lab.dnsserver import DnsServer
from prober.lab.pki import CA, self_signed
from prober.lab.runner import LabLoop
from prober.lab.webserver import PlainHttpServer, TlsHttpServer
from prober.service.app import GC_THRESHOLDS, settle_heap
from prober.service.scheduler import phase_seconds
from prober.shard import shard_of

REPO = Path(__file__).resolve().parents[1]
ZONE = "example.test"
WWW, API, EXPIRED, UNTRUSTED, HUNG, RENEW, NEW, UNLISTED = (
    f"{n}.{ZONE}" for n in ("www", "api", "expired", "untrusted", "hung", "renew", "new", "unlisted"))
GUARD_MARK = netguard.MARK
T = TypeVar("T")

# `prober serve` runs under the network guard of its own process (tests/netguard.py).
GUARDED = [sys.executable, str(REPO / "tests" / "netguard.py")]


# ------------------------------------------------------------------ helpers
def until(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    return wait_for(what, check, timeout)


Series = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def pick(series: Series, name: str, **labels: str) -> list[float]:
    return [v for l, v in series.get(name, []) if all(l.get(k) == w for k, w in labels.items())]


def hostnames(series: Series, name: str = "prober_endpoint_info") -> set[str]:
    return {l["hostname"] for l, _ in series.get(name, [])}


class Serve:
    """A `prober serve` subprocess: start, talk HTTP to it, signal it, collect its stderr."""

    def __init__(self, config: Path, *flags: str) -> None:
        self.config = config
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*GUARDED, "serve", "--config", str(config), "--listen", "127.0.0.1:0",
             *flags], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        url = until(lambda: self._find("listening on http://") or self._dead(), 20, "the service to listen")
        self.host, port = url.split("listening on http://", 1)[1].strip().rsplit(":", 1)
        self.port = int(port)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _find(self, text: str) -> str | None:
        return next((line for line in self.lines if text in line), None)

    def _dead(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"prober serve exited with {self.proc.returncode}: " + "\n".join(self.lines))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read().decode(), dict(response.getheaders())
        finally:
            conn.close()

    def get(self, target: str) -> tuple[int, str]:
        status, body, _ = self.request("GET", target)
        return status, body

    def metrics(self) -> Series:
        status, body = self.get("/metrics")
        assert status == 200
        return parse(body)

    def wait_ready(self) -> None:
        until(lambda: self.get("/-/ready")[0] == 200 or self._dead(), 20, "/-/ready")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        """SIGTERM; the exit status.  Fails the test if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail("prober serve did not exit within 20s of SIGTERM")
        self._reader.join(5)
        assert GUARD_MARK not in self.stderr, self.stderr
        assert "Traceback" not in self.stderr, self.stderr
        return rc


# ------------------------------------------------------------------ the lab
class Lab:
    """PKI, one DNS server and TLS servers on loopback, shared by the module."""

    def __init__(self, directory: Path, loop: LabLoop) -> None:
        self.dir = directory
        self.loop = loop
        root = CA.root()
        self.inter = root.intermediate()
        self.bundle = root.write_bundle(directory / "root.pem")
        past = datetime.now(timezone.utc) - timedelta(days=3)
        self.dns = loop.start(DnsServer())
        self.dns.add_zone(ZONE)
        self.plain = loop.start(PlainHttpServer())
        self.servers: dict[str, TlsHttpServer] = {}
        for name in (WWW, API, RENEW, NEW, UNLISTED):
            self.serve(name, *self.inter.issue([name]).write(directory, name))
        self.serve(EXPIRED, *self.inter.issue([EXPIRED], not_after=past).write(directory, "expired"))
        self.serve(UNTRUSTED, *self_signed([UNTRUSTED]).write(directory, "untrusted"))
        self.serve(HUNG, *self.inter.issue([HUNG]).write(directory, "hung"), mode="silent")

    def serve(self, name: str, certfile: str, keyfile: str, mode: str = "normal") -> None:
        self.servers[name] = self.loop.start(TlsHttpServer(certfile, keyfile, mode=mode, hsts="max-age=31536000"))
        self.dns.set(name, "A", ["127.0.0.1"])

    def config(self, path: Path, names: list[str], interval: str = "1s", timeout: str = "1s") -> Path:
        """A probes.yaml for `names`.  The defaults point at the UNLISTED server: a probe of an
        unconfigured name that fell back to the defaults would show up there."""
        trap = self.servers[UNLISTED].port
        lines = [
            "defaults:",
            f'  resolvers: ["127.0.0.1:{self.dns.port}"]',
            '  authoritative: "off"',
            f"  ca_file: {self.bundle}",
            "  connect_to: 127.0.0.1",
            f"  interval: {interval}",
            f"  timeout: {timeout}",
            f"  tls: {{port: {trap}}}",
            f"  http: {{port: {self.plain.port}, redirect: false}}",
            "endpoints:",
        ]
        for name in names:
            port = self.servers[name].port if name in self.servers else self.servers[WWW].port
            lines += [f"  - hostname: {name}", "    owner_team: web", f"    tls: {{port: {port}}}"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def unlisted_untouched(self) -> bool:
        return (self.servers[UNLISTED].connections == 0
                and not any(q.qname == UNLISTED for q in self.dns.queries))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with LabLoop() as loop:
        yield Lab(tmp_path_factory.mktemp("lab"), loop)


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """One service probing healthy, expired, untrusted, hung and renewable endpoints every second."""
    config = lab.config(tmp_path_factory.mktemp("fleet") / "probes.yaml",
                        [WWW, API, EXPIRED, UNTRUSTED, HUNG, RENEW])
    service = Serve(config, "--location", "lab-1")
    service.wait_ready()
    until(lambda: hostnames(service.metrics()) == {WWW, API, EXPIRED, UNTRUSTED, HUNG, RENEW}, 10,
          "a first probe of every endpoint")
    yield service
    assert service.stop() == 0


# ------------------------------------------------------------------ the fleet
def test_healthy_endpoint_metrics(fleet: Serve) -> None:
    s = fleet.metrics()
    assert pick(s, "prober_probe_success", hostname=WWW) == [1]
    assert pick(s, "prober_probe_status", hostname=WWW) == [0]
    assert sorted(pick(s, "prober_layer_success", hostname=WWW)) == [1, 1, 1]
    assert pick(s, "prober_endpoint_info", hostname=WWW, owner_team="web") == [1]
    assert pick(s, "prober_tls_verified", hostname=WWW) == [1]
    assert len(pick(s, "prober_tls_certificate_not_after_timestamp_seconds", hostname=WWW)) == 2
    assert pick(s, "prober_dns_resolver_up", hostname=WWW) == [1]
    assert pick(s, "prober_endpoints_configured") == [6]
    assert pick(s, "prober_concurrency_limit") == [256]  # six endpoints never starve the loop
    assert 0 <= pick(s, "prober_event_loop_late_seconds")[0] < 0.25
    assert pick(s, "prober_config_last_reload_successful") == [1]
    assert pick(s, "prober_probe_runs_total", result="ok")[0] >= 2


def test_periodic_handshakes_are_not_made_on_every_probe(fleet: Serve, lab: Lab) -> None:
    """The weak-protocol, RSA-only, weak-suite and DHE handshakes: once per listener per hour, so
    after the first probe each probe of the endpoint opens one connection, not five."""
    server = lab.servers[API]
    before, started = server.connections, time.monotonic()
    until(lambda: server.connections - before >= 4 or None, 20, "four more probes of the endpoint")
    time.sleep(1.0)
    made, elapsed = server.connections - before, time.monotonic() - started
    probes_at_most = elapsed / 1.0 + 2  # interval 1s, plus a probe at each edge of the window
    assert 4 <= made <= probes_at_most, f"{made} connections in {elapsed:.1f}s"


def test_location_label_on_every_series(fleet: Serve) -> None:
    s = fleet.metrics()
    missing = [(name, labels) for name, rows in s.items() for labels, _ in rows if labels.get("location") != "lab-1"]
    assert not missing
    assert "prober_scheduler_lag_seconds_bucket" in s and "prober_probe_runs_total" in s


def test_expired_and_untrusted_certificates_export_their_dates(fleet: Serve) -> None:
    s = fleet.metrics()
    now = time.time()
    expired = pick(s, "prober_tls_certificate_not_after_timestamp_seconds", hostname=EXPIRED, position="leaf")
    assert len(expired) == 1 and expired[0] < now
    assert pick(s, "prober_tls_verified", hostname=EXPIRED) == [0]
    assert pick(s, "prober_finding", hostname=EXPIRED, code="tls.expired") == [1]
    untrusted = pick(s, "prober_tls_certificate_not_after_timestamp_seconds", hostname=UNTRUSTED, position="leaf")
    assert len(untrusted) == 1 and untrusted[0] > now
    assert pick(s, "prober_tls_verified", hostname=UNTRUSTED) == [0]
    assert pick(s, "prober_probe_success", hostname=UNTRUSTED) == [0]


def test_hung_endpoint_does_not_delay_the_others(fleet: Serve) -> None:
    before = fleet.metrics()
    first = pick(before, "prober_probe_last_run_timestamp_seconds", hostname=WWW)[0]
    # Three more runs of www while the hung endpoint keeps its probe slots busy.
    until(lambda: pick(fleet.metrics(), "prober_probe_last_run_timestamp_seconds", hostname=WWW)[0] > first + 2.5,
          8, "www to be probed again while hung hangs")
    s = fleet.metrics()
    assert pick(s, "prober_probe_success", hostname=HUNG) == [0]
    assert pick(s, "prober_probe_success", hostname=WWW) == [1]
    runs = pick(s, "prober_scheduler_lag_seconds_count")[0]
    within_a_second = pick(s, "prober_scheduler_lag_seconds_bucket", le="1.0")[0]
    assert runs >= 12
    assert within_a_second == runs, "every run started within 1s of its plan"
    assert pick(s, "prober_probe_run_duration_seconds_count")[0] >= runs - 6  # those in flight not yet counted


def test_probe_and_report_for_a_configured_hostname(fleet: Serve) -> None:
    status, body = fleet.get(f"/probe?hostname={WWW.upper()}.")
    assert status == 200
    s = parse(body)
    assert hostnames(s, "prober_probe_success") == {WWW}
    assert pick(s, "prober_probe_success", hostname=WWW, location="lab-1") == [1]
    status, body, headers = fleet.request("GET", f"/report?hostname={WWW}")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert '"hostname": "www.example.test"' in body and '"status": "ok"' in body


@pytest.mark.parametrize("path", ["/probe", "/report"])
def test_unconfigured_hostname_is_refused_without_a_connection(fleet: Serve, lab: Lab, path: str) -> None:
    for query, expected in ((f"hostname={UNLISTED}", 404), ("hostname=127.0.0.1", 400), ("", 400),
                            (f"hostname={WWW}&hostname={UNLISTED}", 400), ("hostname=%ff", 400),
                            ("hostname=a..b", 400), (f"target={UNLISTED}", 400),
                            # a Unicode name is converted (IDNA 2008) and looked up; one IDNA 2008 forbids is refused
                            (f"hostname=b%C3%BCcher.{ZONE}", 404), (f"hostname=%E2%98%83.{ZONE}", 400)):
        status, body = fleet.get(f"{path}?{query}" if query else path)
        assert status == expected, (query, body)
        assert body.count("\n") == 1 and body.strip(), body
    assert lab.unlisted_untouched(), "the service reached out for a hostname it does not own"


def test_http_bounds_and_methods(fleet: Serve) -> None:
    assert fleet.get("/-/healthy")[0] == 200
    assert fleet.get("/-/ready")[0] == 200
    assert fleet.get("/nope")[0] == 404
    status, _, headers = fleet.request("GET", "/-/reload")
    assert status == 405 and headers["Allow"] == "POST"
    assert fleet.request("POST", "/metrics")[0] == 405
    assert fleet.get("/probe?hostname=" + "a" * 5000)[0] == 414
    reloaded = pick(fleet.metrics(), "prober_config_last_reload_success_timestamp_seconds")
    assert fleet.request("POST", "/-/reload", body=b"x" * 10_000)[0] == 413
    assert pick(fleet.metrics(), "prober_config_last_reload_success_timestamp_seconds") == reloaded


def test_renewed_certificate_replaces_its_series(fleet: Serve, lab: Lab) -> None:
    def leaf_serials() -> set[str]:
        return {l["serial"] for l, _ in fleet.metrics()["prober_tls_certificate_not_after_timestamp_seconds"]
                if l["hostname"] == RENEW and l["position"] == "leaf"}

    old = until(leaf_serials, 5, "the first certificate of renew")
    renewed = lab.inter.issue([RENEW])
    certfile, keyfile = renewed.write(lab.dir, "renew-2")
    server = lab.servers[RENEW]

    async def swap() -> None:  # on the lab loop, between handshakes
        server.context.load_cert_chain(certfile, keyfile)

    lab.loop.run(swap())
    new = until(lambda: (serials := leaf_serials()) != old and serials, 5, "the renewed certificate")
    assert new == {format(renewed.cert.serial_number, "x")}
    assert not new & old


# ------------------------------------------------------------------ reload
def test_reload_adds_removes_and_survives_a_bad_file(lab: Lab, tmp_path: Path) -> None:
    config = lab.config(tmp_path / "probes.yaml", [WWW])
    service = Serve(config)
    try:
        service.wait_ready()
        until(lambda: hostnames(service.metrics()) == {WWW}, 5, "www probed")

        lab.config(config, [WWW, NEW])
        service.signal(signal.SIGHUP)
        until(lambda: hostnames(service.metrics()) == {WWW, NEW}, 5, "SIGHUP to add new")
        assert pick(service.metrics(), "prober_endpoints_configured") == [2]
        assert service.get(f"/report?hostname={NEW}")[0] == 200

        lab.config(config, [WWW])
        status, body, _ = service.request("POST", "/-/reload")
        assert status == 200, body
        s = service.metrics()  # at once: no probe needed for a removal to show
        assert NEW not in {l.get("hostname") for rows in s.values() for l, _ in rows}
        assert pick(s, "prober_endpoints_configured") == [1]
        assert service.get(f"/probe?hostname={NEW}")[0] == 404
        good_at = pick(s, "prober_config_last_reload_success_timestamp_seconds")[0]

        config.write_text("endpoints: [\n")  # broken YAML
        status, body, _ = service.request("POST", "/-/reload")
        assert status == 500 and body.count("\n") == 1 and "previous config" in body
        service.signal(signal.SIGHUP)
        until(lambda: service._find("(SIGHUP) failed"), 5, "the SIGHUP reload to fail")
        s = service.metrics()
        assert pick(s, "prober_config_last_reload_successful") == [0]
        assert pick(s, "prober_config_last_reload_success_timestamp_seconds") == [good_at]
        assert pick(s, "prober_endpoints_configured") == [1]
        last = pick(s, "prober_probe_last_run_timestamp_seconds", hostname=WWW)[0]
        until(lambda: pick(service.metrics(), "prober_probe_last_run_timestamp_seconds", hostname=WWW)[0] > last,
              5, "the old config to keep probing")

        lab.config(config, [WWW])
        assert service.request("POST", "/-/reload")[0] == 200
        assert pick(service.metrics(), "prober_config_last_reload_successful") == [1]
    finally:
        assert service.stop() == 0


def test_reload_cancels_the_probe_of_a_removed_endpoint(lab: Lab, tmp_path: Path) -> None:
    config = lab.config(tmp_path / "probes.yaml", [HUNG], interval="3s", timeout="3s")
    service = Serve(config)
    try:
        service.wait_ready()
        seen = lab.servers[HUNG].connections
        until(lambda: lab.servers[HUNG].connections > seen, 5, "a probe of the hung endpoint in flight")
        lab.config(config, [WWW])
        assert service.request("POST", "/-/reload")[0] == 200
        # Uncancelled, the hung probe would end at its timeout and count as a failed run.
        until(lambda: pick(service.metrics(), "prober_probe_runs_total", result="ok")[0] >= 4, 8, "www runs")
        s = service.metrics()
        assert sum(pick(s, "prober_probe_runs_total", result=r)[0] for r in ("warning", "critical", "unknown")) == 0
        assert hostnames(s) == {WWW}
    finally:
        assert service.stop() == 0


def test_starts_are_spread_over_the_interval_and_stable() -> None:
    names = [f"host-{i}.{ZONE}" for i in range(10_000)]
    phases = [phase_seconds(n, 60.0) for n in names]
    per_second = [0] * 60
    for p in phases:
        assert 0 <= p < 60
        per_second[int(p)] += 1
    assert max(per_second) < 2 * len(names) / 60  # no second carries more than twice its share
    assert phases == [phase_seconds(n, 60.0) for n in names]  # stable: a restart keeps each phase
    assert phase_seconds(WWW, 60.0, jitter=59.0) == (phase_seconds(WWW, 60.0) + 59.0) % 60


# ------------------------------------------------------------------ start, stop, shard
def test_not_ready_until_the_config_is_loaded(lab: Lab, tmp_path: Path) -> None:
    fifo = tmp_path / "probes.yaml"
    os.mkfifo(fifo)  # the service blocks reading it until we write: the window before readiness
    service = Serve(fifo)
    try:
        assert service.get("/-/ready")[0] == 503
        assert service.get("/-/healthy")[0] == 200
        assert service.get(f"/probe?hostname={WWW}")[0] == 503
        with open(fifo, "w") as pipe:
            pipe.write(lab.config(tmp_path / "real.yaml", [WWW]).read_text())
        service.wait_ready()
    finally:
        assert service.stop() == 0
    assert "stopped" in service.stderr


def test_settled_heap_freezes_start_up_and_collects_less_often() -> None:
    before = gc.get_threshold()
    try:
        frozen = settle_heap()
        assert frozen > 10_000  # at least the imported modules' objects
        # (the count only shrinks afterwards: refcounting still frees a frozen object nobody holds)
        assert gc.get_threshold() == GC_THRESHOLDS
        cycle: list[object] = []
        cycle.append(cycle)  # cyclic garbage made after the freeze is still found and freed
        del cycle
        assert gc.collect() >= 1
        assert 10_000 < gc.get_freeze_count() <= frozen  # a collection leaves the frozen objects alone
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_service_settles_its_heap_once_the_config_is_in_force(lab: Lab, tmp_path: Path) -> None:
    service = Serve(lab.config(tmp_path / "probes.yaml", [WWW]), "--log-level", "debug")
    try:
        service.wait_ready()
        line = until(lambda: service._find("heap settled:"), 10, "the heap to be settled")
        assert int(line.split("heap settled: ", 1)[1].split()[0]) > 10_000
    finally:
        assert service.stop() == 0


def test_shard_filters_endpoints(lab: Lab, tmp_path: Path) -> None:
    names = [f"host{i}.{ZONE}" for i in range(8)]
    mine = {n for n in names if shard_of(n, 2) == 1}
    assert mine and mine != set(names)
    service = Serve(lab.config(tmp_path / "probes.yaml", names), "--shard", "1/2")
    try:
        service.wait_ready()
        until(lambda: hostnames(service.metrics()) == mine, 8, "the shard's endpoints probed")
        s = service.metrics()
        assert pick(s, "prober_endpoints_configured") == [len(mine)]
        assert all("location" not in l for rows in s.values() for l, _ in rows)
        other = next(n for n in names if n not in mine)
        assert service.get(f"/probe?hostname={other}")[0] == 404
    finally:
        assert service.stop() == 0


def test_sigterm_with_a_probe_in_flight_exits_zero(lab: Lab, tmp_path: Path) -> None:
    service = Serve(lab.config(tmp_path / "probes.yaml", [HUNG], interval="2s", timeout="2s"))
    service.wait_ready()
    until(lambda: lab.servers[HUNG].connections > 0, 5, "a probe of the hung endpoint")
    assert service.stop() == 0
    assert "stopped" in service.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fails_to_start(config: Path, listen: str, flags: list[str], says: str) -> None:
    """`prober serve` exits 3 at once, with exactly one `prober:` line that contains `says`."""
    done = subprocess.run([*GUARDED, "serve", "--config", str(config),
                           "--listen", listen, *flags], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("prober: ")]
    assert len(errors) == 1 and says in errors[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("flags, says", [
    (["--listen", "nowhere"], "--listen"),
    (["--listen", "[::1:80"], "--listen"),
    (["--shard", "3/2"], "--shard"),
    (["--concurrency", "0"], "--concurrency"),
    (["--location", ""], "--location"),
    (["--config", "/nonexistent/probes.yaml"], "cannot read"),
])
def test_bad_usage_is_one_line_and_exit_3(lab: Lab, tmp_path: Path, flags: list[str], says: str) -> None:
    config = lab.config(tmp_path / "probes.yaml", [WWW])
    _fails_to_start(config, f"127.0.0.1:{_free_port()}", flags, says)


def test_port_in_use_and_bad_initial_config_exit_3(lab: Lab, tmp_path: Path) -> None:
    good = lab.config(tmp_path / "probes.yaml", [WWW])
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints:\n  - hostname: www.example.test\n    colour: blue\n    interval: soon\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cases = [(good, f"127.0.0.1:{taken.getsockname()[1]}", "cannot listen"),
                 (bad, f"127.0.0.1:{_free_port()}", "bad.yaml:3")]
        for config, listen, says in cases:
            _fails_to_start(config, listen, [], says)


# ------------------------------------------------------------ service surface
SECRET = "Bearer s3cr3t-probe-token"


def test_health_check_headers_are_sent_but_never_shown(lab: Lab, tmp_path: Path) -> None:
    import yaml
    config = lab.config(tmp_path / "probes.yaml", [API])
    doc = yaml.safe_load(config.read_text())
    doc["endpoints"][0]["http"] = {"health_path": "/secret-health", "headers": {"Authorization": SECRET}}
    config.write_text(yaml.safe_dump(doc))
    lab.servers[API].route("/secret-health", 200, b"ok", headers={"authorization": SECRET})  # a server echoing it
    service = Serve(config, "--log-level", "debug")
    try:
        service.wait_ready()
        until(lambda: hostnames(service.metrics()) == {API}, 5, "a first probe")
        sent = [r for r in lab.servers[API].requests if r.target == "/secret-health"]
        assert sent and dict(sent[-1].headers).get("authorization") == SECRET  # it is used ...
        for target in ("/metrics", f"/report?hostname={API}", f"/probe?hostname={API}"):
            status, body = service.get(target)
            assert status == 200 and "s3cr3t" not in body, target  # ... and never shown
    finally:
        assert service.stop() == 0
    assert "s3cr3t" not in service.stderr
    proc = subprocess.run([*GUARDED, "check", API, "--config", str(config), "--json"], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert API in proc.stdout and "s3cr3t" not in proc.stdout + proc.stderr


def test_binds_only_the_configured_address(lab: Lab, tmp_path: Path) -> None:
    service = Serve(lab.config(tmp_path / "probes.yaml", [WWW]), "--listen", "127.0.0.2:0")
    try:
        assert service.host == "127.0.0.2"
        service.wait_ready()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", service.port), timeout=2).close()
    finally:
        assert service.stop() == 0


def test_reload_under_load_is_never_half_applied_and_loses_no_series(lab: Lab, tmp_path: Path) -> None:
    shared = [f"s{i}.{ZONE}" for i in range(16)]
    only_a, only_b = [f"a{i}.{ZONE}" for i in range(8)], [f"b{i}.{ZONE}" for i in range(8)]
    config = lab.config(tmp_path / "probes.yaml", shared + only_a)
    service = Serve(config)
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
            if pick(s, "prober_endpoints_configured") != [24]:
                seen_bad.append(f"endpoints_configured {pick(s, 'prober_endpoints_configured')}")

    try:
        service.wait_ready()
        until(lambda: hostnames(service.metrics()) == set(shared + only_a), 10, "every endpoint probed")
        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        for round_ in range(8):
            lab.config(config, shared + (only_b if round_ % 2 == 0 else only_a))
            status, body, _ = service.request("POST", "/-/reload")
            assert status == 200, body
            time.sleep(0.4)
        stop.set()
        scraper.join(10)
        assert seen_bad == []
        until(lambda: hostnames(service.metrics()) == set(shared + only_a), 10, "the last config fully probed")
    finally:
        stop.set()
        assert service.stop() == 0


@pytest.mark.parametrize("level", ["info", "debug"])
def test_one_log_line_per_finished_probe_and_none_from_apscheduler(lab: Lab, tmp_path: Path, level: str) -> None:
    service = Serve(lab.config(tmp_path / "probes.yaml", [WWW, EXPIRED]), "--log-level", level)
    try:
        service.wait_ready()
        line = re.compile(r" INFO prober\.service: probed (\S+): (OK|WARNING|CRITICAL|UNKNOWN) (\S+) in \d+\.\d\ds$")
        done = until(lambda: (lambda seen: seen if {WWW, EXPIRED} <= set(seen) else None)(
            {m.group(1): m.groups()[1:] for m in map(line.search, service.lines) if m}), 15, "a probe line each")
        assert done[WWW] == ("OK", "-") and done[EXPIRED] == ("CRITICAL", "tls.expired")
        assert not [l for l in service.lines if "apscheduler" in l or "executed successfully" in l], service.stderr
    finally:
        assert service.stop() == 0
