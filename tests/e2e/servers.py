"""The real servers of the e2e tier: knot, unbound, Prometheus, Alertmanager and `prober serve`.

Each starter writes a config into its own directory, starts the Debian
binary as a foreground child (harness.Service) on the given loopback
address and port, and waits until it answers.  nginx lives in edge.py, next
to the sites it serves.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import httpx
import yaml

from harness import Service, http_ok, prober_argv, prober_env, run, tcp_open, tool, wait_for

ZONE = "e2e.test"
TTL = 3600  # long, so a resolver that cached the old answer keeps it for the whole session


# ----------------------------------------------------------------------- knot
def zone_text(serial: int, ns_address: str, records: dict[str, str], ttl: int, extra: tuple[str, ...] = ()) -> str:
    """The zone file: SOA, NS, one A record per name (relative to the zone), then any extra lines."""
    lines = [f"$ORIGIN {ZONE}.", f"$TTL {ttl}",
             f"@ SOA ns.{ZONE}. hostmaster.{ZONE}. {serial} 3600 600 86400 60",
             "@ NS ns", f"ns A {ns_address}"]
    lines += [f"{name} {ttl} A {address}" for name, address in sorted(records.items())]
    return "\n".join([*lines, *extra]) + "\n"


@dataclass
class Knot:
    """knotd, authoritative for e2e.test., driven with knotc over its control socket."""
    service: Service
    address: str
    port: int
    control: Path
    zone_file: Path
    ttl: int
    records: dict[str, str]
    serial: int = 1
    extra: tuple[str, ...] = ()  # more zone lines (CAA, a second A record)

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"

    def move(self, name: str, address: str) -> None:
        """Point NAME at ADDRESS: rewrite the zone file with a bumped serial, reload, wait until served."""
        self.records[name] = address
        self.serial += 1
        self.zone_file.write_text(zone_text(self.serial, self.address, self.records, self.ttl, self.extra))
        run([tool("knotc"), "-s", self.control, "-b", "zone-reload", f"{ZONE}."])
        wait_for(f"knot to serve serial {self.serial}", lambda: self.soa_serial() == self.serial, 10, 0.1)

    def soa_serial(self) -> int | None:
        answer = self.ask(ZONE, "SOA")
        return answer[0].serial if answer else None

    def ask(self, name: str, rdtype: str) -> list[Any]:
        """Ask knot directly, without recursion, as the zone's own server."""
        query = dns.message.make_query(name, rdtype)
        query.flags &= ~dns.flags.RD
        response = dns.query.udp(query, self.address, timeout=2.0, port=self.port)
        rrset = response.get_rrset(response.answer, query.question[0].name, query.question[0].rdclass,
                                   query.question[0].rdtype)
        return list(rrset) if rrset else []


def knot_conf(workdir: Path, address: str, port: int, domains: list[str]) -> Path:
    """knot.conf for a knotd on ADDRESS@PORT serving DOMAINS from workdir/zones/DOMAIN.zone, as written."""
    for sub in ("zones", "db"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    conf = workdir / "knot.conf"
    conf.write_text(f"""\
server:
    rundir: "{workdir}"
    listen: {address}@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{workdir / 'db'}"
control:
    listen: "{workdir / 'knot.sock'}"
template:
  - id: default
    storage: "{workdir / 'zones'}"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
""" + "".join(f"  - domain: {d}.\n" for d in domains))
    return conf


def start_knot(workdir: Path, address: str, port: int, records: dict[str, str], ttl: int,
               extra: tuple[str, ...] = ()) -> Knot:
    conf = knot_conf(workdir, address, port, [ZONE])
    control = workdir / "knot.sock"
    zone_file = workdir / "zones" / f"{ZONE}.zone"
    zone_file.write_text(zone_text(1, address, records, ttl, extra))
    knot = Knot(Service("knotd", [tool("knotd"), "-c", conf], workdir), address, port, control, zone_file,
                ttl, dict(records), extra=extra)
    knot.service.start(lambda: tcp_open(address, port) and control.exists())
    wait_for("knot to load the zone", lambda: knot.soa_serial() == 1, 10, 0.1)
    return knot


# -------------------------------------------------------------------- unbound
@dataclass
class Unbound:
    """A recursive unbound whose only way out is a stub-zone to knot."""
    service: Service
    name: str
    address: str
    port: int
    conf: Path

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"

    def flush_zone(self, zone: str = ZONE) -> str:
        return run([tool("unbound-control"), "-c", self.conf, "flush_zone", zone]).stdout.strip()

    def cached(self, name: str) -> str:
        """The lines of unbound's cache dump that hold NAME."""
        dump = run([tool("unbound-control"), "-c", self.conf, "dump_cache"]).stdout
        return "\n".join(line for line in dump.splitlines() if line.startswith(f"{name}."))


def unbound_conf(workdir: Path, address: str, port: int, control_port: int, stubs: dict[str, list[str]],
                 server_extra: str = "") -> Path:
    """unbound.conf whose only way out is a stub-zone per zone in STUBS (zone -> ["ADDR@PORT", ...])."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "unbound.conf"
    # local-zone "." refuse + outgoing-interface on loopback: whatever is asked,
    # this unbound cannot send a packet anywhere but to the stub servers.
    transparent = "".join(f'    local-zone: "{zone}." transparent\n' for zone in stubs)
    stub_zones = "".join(f'stub-zone:\n    name: "{zone}."\n' + "".join(f"    stub-addr: {a}\n" for a in addrs)
                         for zone, addrs in stubs.items())
    conf.write_text(f"""\
server:
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir / 'unbound.pid'}"
    interface: {address}
    outgoing-interface: {address}
    port: {port}
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    local-zone: "." refuse
{transparent}{server_extra}{stub_zones}remote-control:
    control-enable: yes
    control-interface: {address}
    control-port: {control_port}
    control-use-cert: no
""")
    return conf


def start_unbound(workdir: Path, name: str, address: str, port: int, control_port: int, knot: Knot | None,
                  stubs: dict[str, list[str]] | None = None, server_extra: str = '    module-config: "iterator"\n'
                  ) -> Unbound:
    if stubs is None:
        assert knot is not None, "an unbound needs a knot or its stub zones"
        stubs = {ZONE: [f"{knot.address}@{knot.port}"]}
    conf = unbound_conf(workdir, address, port, control_port, stubs, server_extra)
    unbound = Unbound(Service(name, [tool("unbound"), "-d", "-c", conf], workdir), name, address,
                      port, conf)
    unbound.service.start(lambda: tcp_open(address, port) and tcp_open(address, control_port))
    return unbound


@dataclass
class DnsLab:
    """knot and the unbound instances that recurse to it: what a probes.yaml entry asks."""
    knot: Knot
    resolvers: tuple[Unbound, ...]

    def contract(self) -> dict[str, Any]:
        return {"resolvers": [{"address": u.target, "name": u.name, "view": "internal"} for u in self.resolvers],
                "authoritative": self.knot.target}


# --------------------------------------------------------------- prober serve
@dataclass
class ProberServe:
    service: Service
    url: str
    guard_log: Path

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5.0).text


def start_prober_serve(workdir: Path, config: Path, address: str, port: int) -> ProberServe:
    guard_log = workdir / "serve-guard.log"
    url = f"http://{address}:{port}"
    service = Service("prober-serve", prober_argv("serve", "--config", str(config), "--listen", f"{address}:{port}",
                                                  "--log-level", "info"),
                      workdir, env=prober_env(guard_log))
    service.start(lambda: http_ok(f"{url}/-/ready"), timeout=30)
    return ProberServe(service, url, guard_log)


# ----------------------------------------------------------------- Prometheus
@dataclass
class Prometheus:
    service: Service
    url: str

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts: /api/v1/alerts."""
        return self._get("/api/v1/alerts")["alerts"]

    def rule_groups(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/rules")["groups"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", {"query": expr})["result"]

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        reply = httpx.get(self.url + path, params=params, timeout=5.0)
        reply.raise_for_status()
        return reply.json()["data"]


def start_prometheus(workdir: Path, address: str, port: int, scrape_target: str, rule_files: list[Path],
                     interval: str = "1s") -> Prometheus:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "prometheus.yml"
    conf.write_text(yaml.safe_dump({
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "prober", "static_configs": [{"targets": [scrape_target]}]}],
    }, sort_keys=False))
    url = f"http://{address}:{port}"
    service = Service("prometheus", [tool("prometheus"), f"--config.file={conf}",
                                     f"--storage.tsdb.path={workdir / 'tsdb'}",
                                     f"--web.listen-address={address}:{port}",
                                     f"--web.console.templates={workdir}", f"--web.console.libraries={workdir}",
                                     "--log.level=info"], workdir)
    service.start(lambda: http_ok(f"{url}/-/ready"), timeout=30)
    return Prometheus(service, url)


# --------------------------------------------------------------- Alertmanager
@dataclass
class Alertmanager:
    service: Service
    url: str

    def post(self, alerts: list[dict[str, Any]]) -> None:
        reply = httpx.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=5.0)
        assert reply.status_code == 200, reply.text

    def alerts(self) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v2/alerts", timeout=5.0)
        reply.raise_for_status()
        return reply.json()


def start_alertmanager(workdir: Path, config: Path, address: str, port: int) -> Alertmanager:
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"http://{address}:{port}"
    # --cluster.listen-address= turns gossip off: no 0.0.0.0:9094 listener, no peers.
    service = Service("alertmanager", [tool("alertmanager"), f"--config.file={config}",
                                       f"--storage.path={workdir / 'data'}",
                                       f"--web.listen-address={address}:{port}",
                                       "--cluster.listen-address=", "--log.level=info"], workdir)
    service.start(lambda: http_ok(f"{url}/-/ready"), timeout=30)
    return Alertmanager(service, url)


def now_iso(offset: float = 0.0) -> str:
    """RFC 3339 UTC with milliseconds: truncating to the second would date an alert up to a second back."""
    t = time.time() + offset
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class WebhookSink:
    """Where the test Alertmanager's webhook receivers deliver: records (path, JSON body) of every POST."""

    def __init__(self, host: str) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                sink.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass  # the test reads `received`; nothing to print

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-sink", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
