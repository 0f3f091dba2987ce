"""The DNS-depth lab: a parent zone with real delegations, signed children, a stale secondary, a lame server.

Every server is a real Debian binary on its own loopback address, all on one
port (the prober asks a zone's NS, and the parent's, on dns_layer.AUTHORITATIVE_PORT,
which the tests point at that port):

    .61 knot   parent: lab.test (delegations and glue) and azurewebsites.net (a provider-shaped zone)
    .62 knot   child-a: every child zone, drift.lab.test at serial 10
    .63 knot   child-b: drift.lab.test at serial 9 (a secondary that stopped transferring), mismatch.lab.test
    .64 knot   lame: serves only other.test, so it answers REFUSED for the lab zones
    .66        a UDP socket that never answers: the parent of kid.quiet.test
    .91 .92    unbound, validating, with trust anchors for the signed zones (.92 reaches drift via child-b)
    .80 .81    the lab web server (TLS and plain HTTP), where every name points

Zones are signed with dnssec-signzone with explicit inception and expiration
times: good (valid 30 days), soon (expires in 10 hours), expired (expired two
days ago), big (expired, with a DNSKEY RRset too large for UDP), rollover (valid
signatures, but its DS at the parent and the resolvers' trust anchor are for a key
it dropped).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

from harness import Service, free_port, run, tcp_open, tool, wait_for
from servers import Unbound, knot_conf, start_unbound

PARENT = "lab.test"
PROVIDER = "azurewebsites.net"
SIGNED = {  # zone -> (inception, expiration) as dnssec-signzone takes them, and the key algorithm
    "good.lab.test": ("now-3600", "now+2592000", "ECDSAP256SHA256"),
    "soon.lab.test": ("now-2552400", "now+36000", "ECDSAP256SHA256"),
    # two days past: beyond the day of clock skew validating resolvers allow an expired signature
    "expired.lab.test": ("now-5184000", "now-172800", "ECDSAP256SHA256"),
    "big.lab.test": ("now-5184000", "now-172800", "RSASHA256"),
    # validly signed, but its DS (the parent's, and the resolvers' trust anchor) is for a key it no longer has
    "rollover.lab.test": ("now-3600", "now+2592000", "ECDSAP256SHA256"),
}
ROLLED = "rollover.lab.test"
BIG_KEYS = 4  # 2048-bit RSA DNSKEYs and their signatures: well over the 1232-byte UDP payload
MANY_NS = 100


@dataclass
class DepthLab:
    subnet: str
    port: int  # every authoritative server's port
    resolvers: tuple[Unbound, ...]
    web: str  # the address every healthy name points at
    old_web: str  # the address the stale secondary still hands out
    services: list[Service] = field(default_factory=list)
    silent: socket.socket | None = None

    def address(self, last: int) -> str:
        return f"{self.subnet}.{last}"

    def resolver_contract(self) -> list[dict[str, str]]:
        return [{"address": u.target, "name": u.name, "view": "internal"} for u in self.resolvers]


def _soa(zone: str, serial: int) -> list[str]:
    return [f"$ORIGIN {zone}.", "$TTL 300", f"@ SOA ns.{zone}. hostmaster.{zone}. {serial} 3600 600 86400 60"]


def _child(zone: str, ns: dict[str, str | None], records: list[str], serial: int = 1) -> str:
    """A child zone: its apex NS (name -> glue address, None for out-of-zone or CNAME'd), then RECORDS."""
    lines = _soa(zone, serial) + [f"@ NS {name}" for name in ns]
    lines += [f"{name} A {address}" for name, address in ns.items() if address]
    return "\n".join(lines + records) + "\n"


def zones(lab_subnet: str) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """(parent zone text, child-a zones, child-b zones, provider zone) for a /24 of loopback."""
    a, b, lame, web, old = (f"{lab_subnet}.{n}" for n in (62, 63, 64, 80, 81))
    www = [f"www A {web}"]
    parent = _soa(PARENT, 1) + ["@ NS ns1", f"ns1 A {lab_subnet}.61"]
    delegations: dict[str, dict[str, str | None]] = {
        "good": {"ns.good": a}, "soon": {"ns.soon": a}, "expired": {"ns.expired": a}, "big": {"ns.big": a},
        "rollover": {"ns.rollover": a},
        "drift": {"a.drift": a, "b.drift": b}, "lame": {"a.lame": a, "x.lame": lame},
        "mismatch": {"a.mismatch": a},  # the zone itself also lists b.mismatch
        "many": {f"ns{i}.many": a for i in range(MANY_NS)},
        "cnamens": {"ns.cnamens": a, "alias.cnamens": None},
    }
    for child, servers in delegations.items():
        parent += [f"{child} NS {ns}" for ns in servers]
        parent += [f"{ns} A {address}" for ns, address in servers.items() if address]
    rel = {zone: {ns.split(".")[0]: addr for ns, addr in servers.items()} for zone, servers in delegations.items()}
    child_a = {
        "good.lab.test": _child("good.lab.test", rel["good"], www + [
            f"intranet A {web}", f"xn--bcher-kva A {web}",
            f"live CNAME live-app.{PROVIDER}.", f"app CNAME gone-app.{PROVIDER}."]),
        "soon.lab.test": _child("soon.lab.test", rel["soon"], www),
        "expired.lab.test": _child("expired.lab.test", rel["expired"], www),
        "big.lab.test": _child("big.lab.test", rel["big"], www),
        "rollover.lab.test": _child("rollover.lab.test", rel["rollover"], www),
        "drift.lab.test": _child("drift.lab.test", rel["drift"], www, serial=10),
        "lame.lab.test": _child("lame.lab.test", rel["lame"], www),
        "mismatch.lab.test": _child("mismatch.lab.test", {"a": a, "b": b}, www, serial=3),
        "many.lab.test": _child("many.lab.test", rel["many"], www),
        "cnamens.lab.test": _child("cnamens.lab.test", {"ns": a, "alias": None}, www + ["alias CNAME ns"]),
        "kid.quiet.test": _child("kid.quiet.test", {"ns": a}, www),
    }
    child_b = {
        "drift.lab.test": _child("drift.lab.test", rel["drift"], [f"www A {old}"], serial=9),
        "mismatch.lab.test": child_a["mismatch.lab.test"],
    }
    provider = "\n".join(_soa(PROVIDER, 1) + ["@ NS ns.lab.test.", f"live-app A {web}"]) + "\n"
    return "\n".join(parent) + "\n", child_a, child_b, provider


def _sign(workdir: Path, zone: str, text: str) -> tuple[str, Path]:
    """dnssec-signzone with explicit times; returns the signed text and the DS set for trust anchors."""
    inception, expiration, algorithm = SIGNED[zone]
    keydir = workdir / "keys" / zone
    keydir.mkdir(parents=True, exist_ok=True)
    extra = ["-b", "2048"] if algorithm == "RSASHA256" else []
    run([tool("dnssec-keygen"), "-q", "-K", keydir, "-a", algorithm, *extra, "-f", "KSK", zone], timeout=120)
    for _ in range(BIG_KEYS if zone.startswith("big.") else 1):
        run([tool("dnssec-keygen"), "-q", "-K", keydir, "-a", algorithm, *extra, zone], timeout=120)
    unsigned = keydir / "zone"
    keys = "".join(p.read_text() for p in sorted(keydir.glob("K*.key")))
    unsigned.write_text(text + keys)
    signed = keydir / "zone.signed"
    # -P: no post-signing verification, which refuses the deliberately expired signatures
    run([tool("dnssec-signzone"), "-P", "-q", "-K", keydir, "-d", keydir, "-o", zone, "-s", inception,
         "-e", expiration, "-f", signed, unsigned], timeout=120)
    return signed.read_text(), keydir / f"dsset-{zone}."


def _lost_key_ds(workdir: Path, zone: str) -> Path:
    """The DS of a key the zone never published: what a rollover that dropped the old key too soon leaves."""
    lost = workdir / "keys" / f"{zone}-lost"
    lost.mkdir(parents=True, exist_ok=True)
    name = run([tool("dnssec-keygen"), "-q", "-K", lost, "-a", "ECDSAP256SHA256", "-f", "KSK", zone]).stdout.strip()
    ds = run([tool("dnssec-dsfromkey"), "-2", lost / f"{name}.key"]).stdout
    path = lost / f"dsset-{zone}."
    path.write_text(ds)
    return path


def _knot(workdir: Path, name: str, address: str, port: int, zone_texts: dict[str, str]) -> Service:
    conf = knot_conf(workdir, address, port, list(zone_texts))
    for zone, text in zone_texts.items():
        (workdir / "zones" / f"{zone}.zone").write_text(text)
    service = Service(name, [tool("knotd"), "-c", conf], workdir)
    first = next(iter(zone_texts))
    service.start(lambda: tcp_open(address, port) and (workdir / "knot.sock").exists())
    wait_for(f"{name} to load {first}", lambda: _soa_rcode(first, address, port) == "NOERROR", 20, 0.1)
    return service


def _soa_rcode(zone: str, address: str, port: int) -> str:
    query = dns.message.make_query(zone, "SOA")
    query.flags &= ~dns.flags.RD
    try:
        return dns.rcode.to_text(dns.query.udp(query, address, timeout=1.0, port=port).rcode())
    except (OSError, dns.exception.DNSException):
        return "no answer"


def start(workdir: Path, subnet: str) -> DepthLab:
    """Sign, start every server, and wait until each answers; the caller stops lab.services."""
    parent, child_a, child_b, provider = zones(subnet)
    anchors = []
    for zone in SIGNED:
        child_a[zone], ds = _sign(workdir, zone, child_a[zone])
        if zone == ROLLED:
            ds = _lost_key_ds(workdir, zone)
            parent += ds.read_text()  # the registrar still publishes the old key's DS
        anchors.append(ds)
    hosts = [f"{subnet}.{n}" for n in (61, 62, 63, 64, 66)]
    port = free_port(*hosts)
    lab = DepthLab(subnet, port, (), f"{subnet}.80", f"{subnet}.81")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((f"{subnet}.66", port))  # never read: the parent that never answers
    lab.silent = silent
    lab.services += [_knot(workdir / "parent", "knot-parent", hosts[0], port, {PARENT: parent, PROVIDER: provider}),
                     _knot(workdir / "child-a", "knot-child-a", hosts[1], port, child_a),
                     _knot(workdir / "child-b", "knot-child-b", hosts[2], port, child_b),
                     _knot(workdir / "lame", "knot-lame", hosts[3], port,
                           {"other.test": "\n".join(_soa("other.test", 1) + ["@ NS ns.lab.test."]) + "\n"})]
    resolvers = []
    for n, last, drift_via in ((1, 91, hosts[1]), (2, 92, hosts[2])):
        host = f"{subnet}.{last}"
        stubs = {PARENT: [f"{hosts[0]}@{port}"], PROVIDER: [f"{hosts[0]}@{port}"]}
        stubs |= {zone: [f"{hosts[1]}@{port}"] for zone in child_a}
        stubs["drift.lab.test"] = [f"{drift_via}@{port}"]
        extra = ('    module-config: "validator iterator"\n    ede: yes\n    val-log-level: 2\n'
                 + "".join(f'    trust-anchor-file: "{ds}"\n' for ds in anchors)
                 + '    local-zone: "quiet.test." transparent\n'
                 + '    local-data: "quiet.test. 3600 IN NS ns.quiet.test."\n'
                 + f'    local-data: "ns.quiet.test. 3600 IN A {hosts[4]}"\n')
        resolvers.append(start_unbound(workdir / f"unbound-depth-{n}", f"validating-{n}", host, free_port(host),
                                       free_port(host), None, stubs, extra))
        lab.services.append(resolvers[-1].service)
    lab.resolvers = tuple(resolvers)
    return lab


def stop(lab: DepthLab) -> None:
    for service in reversed(lab.services):
        service.stop()
    if lab.silent is not None:
        lab.silent.close()
