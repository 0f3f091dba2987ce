"""The per-zone cadence of the delegation check, in the scheduler `prober serve` runs, and its metrics.

Lab DNS servers on loopback: a resolver that knows the zone's NS and the
parent's, and one server that is authoritative for the parent lab.test and
the child app.lab.test (dns_layer.AUTHORITATIVE_PORT points at it).  Two
endpoints of app.lab.test are probed on a short interval by the real
ProbeScheduler: the zone's servers are asked for the SOA once per cadence,
not once per probe and endpoint, and every report still carries the result.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from prober import delegation
from prober.engine import probe
from prober.lab.dnsserver import DnsServer
from prober.lab.runner import LabLoop
from prober.layers import dns as dns_layer
from prober.model import Endpoint, Report, ResolverSpec, TlsContract, HttpContract
from prober.service.metrics import SelfMetrics, SnapshotStore, build_snapshot, render_snapshot
from prober.service.scheduler import ProbeScheduler

LOOPBACK = "127.0.0.1"
ZONE, PARENT = "app.lab.test", "lab.test"
HOSTS = (f"a.{ZONE}", f"b.{ZONE}")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[DnsServer, DnsServer]]:
    with LabLoop() as loop:
        resolver, zone = loop.start(DnsServer(LOOPBACK)), loop.start(DnsServer(LOOPBACK))
        for server in (resolver, zone):
            server.add_zone(PARENT, {f"ns.{PARENT}": LOOPBACK})
            server.add_zone(ZONE, {f"ns1.{ZONE}": LOOPBACK})
            for host in HOSTS:
                server.set(host, "A", [LOOPBACK], ttl=60)
        yield resolver, zone


@pytest.fixture
def lab(servers: tuple[DnsServer, DnsServer], monkeypatch: pytest.MonkeyPatch) -> tuple[DnsServer, DnsServer]:
    monkeypatch.setattr(dns_layer, "AUTHORITATIVE_PORT", servers[1].port)
    monkeypatch.setattr(dns_layer, "_zone_cache", {})
    monkeypatch.setattr(delegation, "_checked", {})
    servers[1].queries.clear()
    return servers


def endpoint(host: str, resolver: DnsServer) -> Endpoint:
    # TLS and HTTP to a closed loopback port: refused at once; only the DNS layer matters here
    return Endpoint(hostname=host, timeout=2.0, interval=0.3, authoritative="auto",
                    resolvers=(ResolverSpec("lab", LOOPBACK, resolver.port),),
                    tls=TlsContract(port=9), http=HttpContract(port=9, redirect=False, hsts=False))


def soa_asks(zone: DnsServer) -> int:
    return sum(1 for q in zone.queries if q.qtype == "SOA" and not q.rd)


async def run_scheduler(endpoints: list[Endpoint], probes_each: int) -> list[Report]:
    reports: list[Report] = []

    async def counting(e: Endpoint) -> Report:
        report = await probe(e)
        reports.append(report)
        return report

    scheduler = ProbeScheduler(counting, SnapshotStore(), SelfMetrics(CollectorRegistry(), None), concurrency=8)
    scheduler.apply({e.hostname: e for e in endpoints})
    scheduler.start()
    try:
        for _ in range(200):
            if all(sum(r.hostname == e.hostname for r in reports) >= probes_each for e in endpoints):
                break
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop(grace=3.0)
    return reports


def test_serve_checks_a_zone_once_per_cadence_for_all_its_endpoints(lab, monkeypatch) -> None:
    resolver, zone = lab
    endpoints = [endpoint(h, resolver) for h in HOSTS]
    reports = asyncio.run(run_scheduler(endpoints, probes_each=3))
    assert len(reports) >= 6
    assert soa_asks(zone) == 1  # one NS, one check, shared by both endpoints and every probe
    checked = {r.dns.delegation for r in reports}
    assert len(checked) == 1 and next(iter(checked)).child_ns == (f"ns1.{ZONE}",)  # reported from the cache
    assert not any(f.code in ("dns.lame_delegation", "dns.serial_drift", "dns.delegation_mismatch")
                   for r in reports for f in r.findings)

    # With a cadence of zero (every entry already due), every probe checks the zone again.
    monkeypatch.setattr(delegation, "RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(delegation, "_checked", {})
    zone.queries.clear()
    again = asyncio.run(run_scheduler(endpoints, probes_each=2))
    assert soa_asks(zone) == len(again)  # one SOA per probe


def test_zone_serials_and_dnssec_validation_reach_the_metrics(lab) -> None:
    resolver, _ = lab
    report = asyncio.run(probe(endpoint(HOSTS[0], resolver)))
    families = {f.name: f for f in text_string_to_metric_families(render_snapshot(build_snapshot(report)).decode())}
    (serial,) = families["prober_dns_zone_serial"].samples
    assert (serial.labels["zone"], serial.labels["server"], serial.value) == (ZONE, f"ns1.{ZONE}", 1.0)
    (validated,) = families["prober_dns_resolver_dnssec_validated"].samples
    assert (validated.labels["resolver"], validated.value) == ("lab", 0.0)  # the lab resolver does not validate


def test_a_zone_with_one_server_behind_is_drift_and_reaches_prober_finding(lab) -> None:
    resolver, zone = lab
    zone.set(ZONE, "NS", [f"ns1.{ZONE}.", f"ns2.{ZONE}."])
    resolver.set(ZONE, "NS", [f"ns1.{ZONE}.", f"ns2.{ZONE}."])
    behind = DnsServer(LOOPBACK.replace(".1", ".2"), zone.port)
    with LabLoop() as loop:
        loop.start(behind)
        behind.add_zone(ZONE, {f"ns2.{ZONE}": "127.0.0.2"})
        behind.set(ZONE, "SOA", [f"ns1.{ZONE}. hostmaster.{ZONE}. 0 3600 600 86400 300"])
        resolver.set(f"ns2.{ZONE}", "A", ["127.0.0.2"])
        try:
            report = asyncio.run(probe(endpoint(HOSTS[0], resolver)))
        finally:
            zone.set(ZONE, "NS", [f"ns1.{ZONE}."])
            resolver.set(ZONE, "NS", [f"ns1.{ZONE}."])
    drift = next(f for f in report.findings if f.code == "dns.serial_drift")
    assert f"ns2.{ZONE} is behind serial 1" in drift.message
    text = render_snapshot(build_snapshot(report)).decode()
    assert 'code="dns.serial_drift"' in text
