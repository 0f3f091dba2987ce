"""What the fleet benchmark and the soak share: processes, /proc sampling, the nginx fleet, configs, metrics.

Every process is started in its own session (process group) and ended by
`Proc.stop()` (SIGTERM to the group, SIGKILL after a grace), from a finally
block.  Every address used is in 127.0.0.0/8.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the bench runs from a checkout, installed or not
    sys.path.insert(0, str(ROOT))
DOMAIN = "fleet.test"
NGINX_ADDRESSES = ("127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4")
DNS_ADDRESSES = ("127.0.0.61", "127.0.0.62", "127.0.0.63")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX = "/usr/sbin/nginx"
KNOTD = "/usr/sbin/knotd"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
HSTS = "max-age=31536000"
PACKAGES = {NGINX: "nginx-light", BLACKBOX: "prometheus-blackbox-exporter", KNOTD: "knot"}


class BenchError(Exception):
    """The harness cannot go on: one line for the operator."""


def missing_binaries(paths: Sequence[str] = (NGINX, BLACKBOX)) -> list[str]:
    """'PATH (Debian package P)' for every binary that is not installed."""
    return [f"{p} (Debian package {PACKAGES.get(p, '?')})" for p in paths if not os.access(p, os.X_OK)]


class Discard(list):
    """A list that forgets what is appended: DnsServer keeps every query for tests, a long run must not."""

    def append(self, item: object) -> None:
        pass


def name(i: int) -> str:
    return f"{i}.{DOMAIN}"


# --------------------------------------------------------------------------- processes
class Proc:
    """A child in its own process group, optionally pinned to CPUs, always ended by stop()."""

    def __init__(self, argv: Sequence[str], *, cpus: str | None = None, log: Path | None = None,
                 stdin: int | None = subprocess.DEVNULL, stdout: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        argv = list(argv)
        if cpus is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]  # taskset execs: the pid stays the program's
        self.log = open(log, "ab") if log else subprocess.DEVNULL
        self.popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout if stdout is not None else self.log,
                                      stderr=self.log, start_new_session=True, env=env)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(grace)
        with contextlib.suppress(ProcessLookupError):  # stragglers in the group (nginx workers)
            os.killpg(self.pid, signal.SIGKILL)
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """utime+stime (+ waited-for children's) of pid, and of every live descendant when tree=True."""
    total = 0
    for p in _descendants(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A Vm* line of /proc/PID/status in kB (VmHWM: peak RSS, VmRSS: now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_kb(pid: int, key: str) -> int:
    """status_kb summed over pid and its live descendants (a `--workers` service)."""
    total = 0
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            total += status_kb(p, key)
    return total


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_port(addresses: Sequence[str]) -> int:
    """A port number free on every one of `addresses` (TCP and UDP), tried a bounded number of times."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        try:
            for a in addresses:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as t:
                        t.bind((a, port))
            return port
        except OSError:
            continue
    raise BenchError("no free port found on " + ", ".join(addresses))


def wait_for(check, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise BenchError(f"{what}: the process exited early (see its log)")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what}: not ready after {timeout:g}s")


def http_get(url: str, timeout: float = 30.0) -> bytes:
    assert url.startswith("http://127."), url  # the network guard, in the harness too
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


# --------------------------------------------------------------------------- the fleet
NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp/body; proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi; uwsgi_temp_path {dir}/tmp/uwsgi; scgi_temp_path {dir}/tmp/scgi;
  keepalive_timeout 5s;
  server {{
    {http_listen}
    server_name *.{domain};
    return 301 https://$host:{tls_port}$request_uri;
  }}
  server {{
    {tls_listen}
    server_name *.{domain};
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {MODERN_CIPHERS};
    add_header Strict-Transport-Security "{hsts}" always;
    location = /healthz {{ default_type text/plain; return 200 "ok"; }}
    location / {{ default_type text/plain; return 200 "fleet"; }}
  }}
}}
"""


@dataclass
class Fleet:
    """nginx serving *.fleet.test (wildcard cert from a test CA) on NGINX_ADDRESSES, and the fleet DNS.

    dns: "knot" (knotd answering for the zone on DNS_ADDRESSES), "lab" (three lab
    DnsServers in a process of their own, bench/dnsfleet.py) or None (the caller's own).
    """
    n: int
    cpus: str | None = "1"
    dns: str | None = "knot"
    keep: bool = False  # keep the work dir (configs, logs) after stop, for a look at what went wrong
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prober-bench-")))
    procs: list[Proc] = field(default_factory=list)
    resolvers: list[str] = field(default_factory=list)
    tls_port: int = 0
    http_port: int = 0
    ca_file: str = ""

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # a failed run keeps its configs and logs
            self.keep = True
            print(f"bench: the fleet's configs and logs are kept in {self.workdir}", file=sys.stderr)
        self.stop()

    def start(self) -> None:
        missing = missing_binaries((NGINX,))
        if missing:
            raise BenchError("not installed: " + ", ".join(missing))
        self._pki()
        self.tls_port = free_port(NGINX_ADDRESSES)
        self.http_port = free_port(NGINX_ADDRESSES)
        self._nginx()
        if self.dns == "knot":
            self._knot()
        elif self.dns == "lab":
            self._dns()

    def stop(self) -> None:
        while self.procs:
            self.procs.pop().stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _pki(self) -> None:
        from prober.lab.pki import CA
        now = datetime.now(timezone.utc)
        root = CA.root("prober bench root", not_before=now - timedelta(days=30), not_after=now + timedelta(days=3650))
        inter = root.intermediate("prober bench intermediate", not_before=now - timedelta(days=30),
                                  not_after=now + timedelta(days=1825))
        self.cert, self.key = inter.issue([f"*.{DOMAIN}"], cn=f"*.{DOMAIN}", days_valid=90).write(self.workdir, "fleet")
        self.ca_file = root.write_bundle(self.workdir / "root.pem")

    def _nginx(self) -> None:
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        from prober.lab.catalogue import MODERN_CIPHERS
        conf = self.workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            MODERN_CIPHERS=MODERN_CIPHERS, dir=self.workdir, domain=DOMAIN, tls_port=self.tls_port, cert=self.cert, key=self.key, hsts=HSTS,
            http_listen=" ".join(f"listen {a}:{self.http_port};" for a in NGINX_ADDRESSES),
            tls_listen=" ".join(f"listen {a}:{self.tls_port} ssl;" for a in NGINX_ADDRESSES)))
        proc = Proc([NGINX, "-c", str(conf), "-p", str(self.workdir), "-e", str(self.workdir / "nginx-error.log")],
                    cpus=self.cpus, log=self.workdir / "nginx.out")
        self.procs.append(proc)
        self.nginx = proc
        wait_for(lambda: _connects(NGINX_ADDRESSES[-1], self.tls_port), 10, "nginx", proc)

    def _dns(self) -> None:
        proc = Proc([sys.executable, str(ROOT / "bench" / "dnsfleet.py"), "--n", str(self.n),
                     "--answers", ",".join(NGINX_ADDRESSES), "--listen", ",".join(DNS_ADDRESSES)],
                    cpus=self.cpus, log=self.workdir / "dns.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.procs.append(proc)
        self.dns_proc = proc
        line = proc.popen.stdout.readline() if proc.popen.stdout else b""
        if not line:
            raise BenchError("the fleet DNS did not start; see " + str(self.workdir / "dns.log"))
        self.resolvers = json.loads(line)["resolvers"]

    def _knot(self) -> None:
        if missing_binaries((KNOTD,)):
            raise BenchError("not installed: " + ", ".join(missing_binaries((KNOTD,))) + "; or use --dns lab")
        port = free_port(DNS_ADDRESSES)
        zone = self.workdir / f"{DOMAIN}.zone"
        records = "".join(f"{i} A {NGINX_ADDRESSES[i % len(NGINX_ADDRESSES)]}\n" for i in range(self.n))
        zone.write_text(f"$ORIGIN {DOMAIN}.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\n"
                        f"ns1 A {DNS_ADDRESSES[0]}\n{records}")
        conf = self.workdir / "knot.conf"
        conf.write_text(KNOT_CONF.format(dir=self.workdir, domain=DOMAIN,
                                         listen=", ".join(f"{a}@{port}" for a in DNS_ADDRESSES)))
        proc = Proc([KNOTD, "-c", str(conf)], cpus=self.cpus, log=self.workdir / "knot.log")
        self.procs.append(proc)
        self.dns_proc = proc
        self.resolvers = [f"{a}:{port}" for a in DNS_ADDRESSES]
        wait_for(lambda: _answers(DNS_ADDRESSES[-1], port, name(self.n - 1)), 30, "knotd", proc)

    def hosts_file(self, count: int) -> Path:
        """An /etc/hosts for the blackbox side (bind-mounted in a private mount namespace only)."""
        path = self.workdir / "hosts"
        lines = ["127.0.0.1 localhost"] + [f"{NGINX_ADDRESSES[i % len(NGINX_ADDRESSES)]} {name(i)}"
                                           for i in range(count)]
        path.write_text("\n".join(lines) + "\n")
        return path


KNOT_CONF = """\
server:
    rundir: "{dir}"
    listen: [ {listen} ]
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{dir}"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{dir}"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {domain}
"""


def _answers(host: str, port: int, qname: str) -> bool:
    import dns.exception
    import dns.message
    import dns.query
    try:
        return bool(dns.query.udp(dns.message.make_query(qname, "A"), host, port=port, timeout=1).answer)
    except dns.exception.Timeout:  # knotd still loading the zone (slowly, on a busy machine): ask again
        return False


def _connects(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


def dns_servers(fleet: Fleet, coverage: str) -> tuple[list[str], str]:
    """(resolvers, authoritative) of a coverage: "resolvers" is three resolvers and authoritative off
    (rounds 1-3); "authoritative" is two resolvers and knot asked as the zone's authoritative server
    (round 4).  Either way a probe asks six DNS questions: A and AAAA of three servers."""
    if coverage == "resolvers":
        return list(fleet.resolvers), "off"
    return list(fleet.resolvers[:2]), fleet.resolvers[2]


def write_probes(path: Path, fleet: Fleet, n: int, interval: float, timeout: float,
                 resolvers: Sequence[str] | None = None, coverage: str = "resolvers") -> Path:
    """probes.yaml for 0..n-1.fleet.test with the DNS servers of `coverage`, the test root as ca_file."""
    default_resolvers, authoritative = dns_servers(fleet, coverage)
    resolvers = list(resolvers if resolvers is not None else default_resolvers)
    config = {
        "defaults": {
            "timeout": f"{timeout:g}s", "interval": f"{interval:g}s",
            "resolvers": [{"address": r, "name": f"fleet-dns-{k + 1}", "view": "internal"}
                          for k, r in enumerate(resolvers)],
            "authoritative": authoritative,
            "ca_file": fleet.ca_file,
            "tls": {"port": fleet.tls_port},
            "http": {"port": fleet.http_port, "health_path": "/healthz"},
        },
        "endpoints": [{"hostname": name(i)} for i in range(n)],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------- prober serve
@dataclass
class Serve:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_serve(config: Path, workdir: Path, cpus: str | None = "0", concurrency: int = 256,
                ready_timeout: float = 120.0, extra: Sequence[str] = ()) -> Serve:
    port = free_port(["127.0.0.1"])
    proc = Proc([sys.executable, "-m", "prober", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}",
                 "--concurrency", str(concurrency), "--log-level", "warning", *extra],
                cpus=cpus, log=workdir / f"serve-{port}.log", env={**os.environ, "PYTHONPATH": str(ROOT)})
    serve = Serve(proc, port)
    try:
        wait_for(lambda: http_get(serve.url + "/-/ready", 2) is not None, ready_timeout, "prober serve", proc)
    except BaseException:
        proc.stop()
        raise
    return serve


def parse_metrics(text: str, wanted: Sequence[str]) -> dict[str, float]:
    """Sum each wanted series (name plus a literal label set such as le="0.5") over the others; cheap, no parser."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(wanted[0][:7]) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric = series.split("{", 1)[0]
        for key in wanted:
            if metric == key.split("{", 1)[0] and (("{" not in key) or key.split("{", 1)[1].rstrip("}") in series):
                out[key] = out.get(key, 0.0) + float(value)
    return out


LAG_LE = ("0.01", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf")
SELF = ["prober_probe_runs_total", "prober_probe_runs_skipped_total", "prober_scheduler_lag_seconds_count",
        'prober_probe_runs_total{result="critical"}', 'prober_probe_runs_total{result="unknown"}',
        "prober_concurrency_limit",
        *[f'prober_scheduler_lag_seconds_bucket{{le="{le}"}}' for le in LAG_LE]]


def self_metrics(serve: Serve) -> dict[str, float]:
    return parse_metrics(http_get(serve.url + "/metrics", 120).decode(), SELF)


def lag_quantile(q: float, before: dict[str, float], after: dict[str, float]) -> float | None:
    """histogram_quantile over the bucket deltas between two scrapes (linear within a bucket)."""
    counts = [(float(le), after.get(f'prober_scheduler_lag_seconds_bucket{{le="{le}"}}', 0)
               - before.get(f'prober_scheduler_lag_seconds_bucket{{le="{le}"}}', 0)) for le in LAG_LE]
    total = counts[-1][1]
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for upper, cumulative in counts:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(cumulative - below, 1e-9)
        lower, below = upper, cumulative
    return lower


def lag_over_1s(before: dict[str, float], after: dict[str, float]) -> float:
    """Scheduled runs that started more than a second late between two scrapes."""
    def late(m: dict[str, float]) -> float:
        count = m.get("prober_scheduler_lag_seconds_count", 0)
        return count - m.get('prober_scheduler_lag_seconds_bucket{le="1.0"}', 0)
    return late(after) - late(before)


@contextlib.contextmanager
def stopping(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()


def machine() -> dict[str, str]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"nproc": str(os.cpu_count()), "cpu": model, "kernel": os.uname().release,
            "python": sys.version.split()[0], "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
