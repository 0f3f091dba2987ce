"""The metric contract (docs/metrics.md) from real reports.

Each report comes from the real engine probing lab servers on loopback with a
real PKI; the series are read back through prometheus_client's own parser
from the exposition text, as Prometheus would read them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from prober.config import parse_config
from prober.engine import probe
from prober.lab.dnsserver import DnsServer
from prober.lab.pki import CA, self_signed
from prober.lab.runner import LabLoop
from prober.lab.webserver import PlainHttpServer, TlsHttpServer
from prober.model import Endpoint, Report
from prober.service.metrics import (ENDPOINT_FAMILIES, MAX_LABEL_CHARS, SelfMetrics, build_snapshot,
                                    endpoint_exposition, render_snapshot)

ZONE = "example.test"
WWW, EXPIRED, UNTRUSTED, REFUSED, TWIN = (f"{n}.{ZONE}" for n in ("www", "expired", "untrusted", "refused", "twin"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A DNS server, healthy/expired/untrusted TLS servers, and one name served from two addresses."""
    d = tmp_path_factory.mktemp("pki")
    root = CA.root()
    inter = root.intermediate()
    past = datetime.now(timezone.utc) - timedelta(days=2)
    files = {
        WWW: inter.issue([WWW]).write(d, "www"),
        EXPIRED: inter.issue([EXPIRED], not_after=past).write(d, "expired"),
        UNTRUSTED: self_signed([UNTRUSTED]).write(d, "untrusted"),
        TWIN: inter.issue([TWIN]).write(d, "twin"),
    }
    with LabLoop() as loop:
        dns = loop.start(DnsServer())
        dns.add_zone(ZONE)
        servers = {name: loop.start(TlsHttpServer(*files[name], hsts="max-age=31536000"))
                   for name in (WWW, EXPIRED, UNTRUSTED)}
        # The twin: one certificate served on two addresses, same port.
        first = loop.start(TlsHttpServer(*files[TWIN], host="127.0.0.1", hsts="max-age=31536000"))
        loop.start(TlsHttpServer(*files[TWIN], host="127.0.0.2", port=first.port, hsts="max-age=31536000"))
        servers[TWIN] = first
        plain = loop.start(PlainHttpServer())
        for name in (WWW, EXPIRED, UNTRUSTED, REFUSED):
            dns.set(name, "A", ["127.0.0.1"])
        dns.set(TWIN, "A", ["127.0.0.1", "127.0.0.2"])
        yield {"dns": dns, "servers": servers, "plain": plain, "bundle": root.write_bundle(d / "root.pem"),
               "closed_port": _closed_port()}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _endpoint(lab: dict, hostname: str, **extra: str) -> Endpoint:
    server = lab["servers"].get(hostname)
    port = server.port if server is not None else lab["closed_port"]
    lines = "\n".join(f"    {k}: {v}" for k, v in extra.items())
    text = f"""
endpoints:
  - hostname: {hostname}
    resolvers: ["127.0.0.1:{lab['dns'].port}"]
    authoritative: "off"
    ca_file: {lab['bundle']}
    timeout: 3s
    tls: {{port: {port}}}
    http: {{port: {lab['plain'].port}, redirect: false}}
{lines}
"""
    return parse_config(text).endpoints[0]


def _report(lab: dict, hostname: str, **extra: str) -> Report:
    return asyncio.run(probe(_endpoint(lab, hostname, **extra)))


def _series(text: bytes | str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text -> {sample name: [(labels, value)]}, through prometheus_client's parser."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text.decode() if isinstance(text, bytes) else text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _one(series: dict, name: str, **labels: str) -> float:
    hits = [v for l, v in series.get(name, []) if all(l.get(k) == w for k, w in labels.items())]
    assert len(hits) == 1, f"{name}{labels}: expected one series, got {hits}"
    return hits[0]


def test_healthy_endpoint_exports_the_contract(lab: dict) -> None:
    report = _report(lab, WWW, owner_team="web", app_owner="alice", visibility="private")
    assert report.status == "ok", report.verdict.message
    s = _series(render_snapshot(build_snapshot(report)))

    info = s["prober_endpoint_info"]
    assert info == [({"hostname": WWW, "owner_team": "web", "app_owner": "alice", "visibility": "private",
                      "tls_termination": "", "certificate_source": ""}, 1.0)]
    assert _one(s, "prober_probe_success", hostname=WWW) == 1
    assert _one(s, "prober_probe_status", hostname=WWW) == 0
    assert {l["layer"]: v for l, v in s["prober_layer_success"]} == {"dns": 1, "tls": 1, "http": 1}
    assert _one(s, "prober_probe_duration_seconds") == pytest.approx(report.duration_seconds)
    assert _one(s, "prober_probe_last_run_timestamp_seconds") == pytest.approx(time.time(), abs=30)
    assert {l["phase"] for l, _ in s["prober_phase_duration_seconds"]} <= {"dns", "connect", "tls", "first_byte"}
    assert "prober_finding" not in s
    assert {l["tier"]: v for l, v in s["prober_expiry_threshold_days"]} == {
        "warning": 30, "high": 14, "urgent": 7, "incident": 3, "outage": 0}

    resolver = f"127.0.0.1:{lab['dns'].port}"
    assert _one(s, "prober_dns_resolver_up", resolver=resolver, view="internal") == 1
    assert _one(s, "prober_dns_resolver_rcode", resolver=resolver, rcode="NOERROR") == 1
    assert _one(s, "prober_dns_resolver_answers", resolver=resolver) == 1
    assert _one(s, "prober_dns_resolver_latency_seconds", resolver=resolver) > 0
    assert "prober_dns_resolver_agrees_with_authoritative" not in s  # no authoritative answer was had

    certs = s["prober_tls_certificate_not_after_timestamp_seconds"]
    chain = report.tls.targets[0].chain
    assert sorted((l["position"], l["serial"], v) for l, v in certs) == sorted(
        (c.position, c.serial, c.not_after) for c in chain)
    assert len(s["prober_tls_certificate_not_before_timestamp_seconds"]) == len(chain)
    assert _one(s, "prober_tls_earliest_expiry_timestamp_seconds") == min(c.not_after for c in chain)
    assert _one(s, "prober_tls_verified") == 1
    assert _one(s, "prober_tls_hostname_match") == 1
    assert [l["version"] for l, _ in s["prober_tls_version_info"]] == [report.tls.targets[0].version]


def test_expired_certificate_still_exports_its_dates(lab: dict) -> None:
    s = _series(render_snapshot(build_snapshot(_report(lab, EXPIRED))))
    leaf = _one(s, "prober_tls_certificate_not_after_timestamp_seconds", position="leaf")
    assert leaf < time.time()
    assert _one(s, "prober_tls_earliest_expiry_timestamp_seconds") == leaf
    assert _one(s, "prober_tls_verified") == 0
    assert _one(s, "prober_finding", code="tls.expired", severity="critical", layer="tls") == 1
    assert _one(s, "prober_probe_success") == 0
    assert _one(s, "prober_probe_status") == 2
    assert _one(s, "prober_layer_success", layer="tls") == 0


def test_untrusted_chain_still_exports_its_dates(lab: dict) -> None:
    report = _report(lab, UNTRUSTED)
    s = _series(render_snapshot(build_snapshot(report)))
    leaf = _one(s, "prober_tls_certificate_not_after_timestamp_seconds", position="leaf")
    assert leaf > time.time()
    assert _one(s, "prober_tls_verified") == 0
    assert _one(s, "prober_tls_hostname_match") == 1  # trust failed, the name is right
    assert {l["code"] for l, _ in s["prober_finding"]} == {f.code for f in report.findings}
    assert "tls.untrusted" in {l["code"] for l, _ in s["prober_finding"]}


def test_no_handshake_means_no_certificate_series(lab: dict) -> None:
    report = _report(lab, REFUSED)
    s = _series(render_snapshot(build_snapshot(report)))
    for name in ENDPOINT_FAMILIES:
        if name.startswith("prober_tls_"):
            assert name not in s, f"{name} must be absent when no handshake completed"
    assert _one(s, "prober_finding", code="tls.connect_failed") == 1
    assert _one(s, "prober_probe_success") == 0


def test_one_certificate_on_two_addresses_is_one_series(lab: dict) -> None:
    report = _report(lab, TWIN)
    assert [t.address for t in report.tls.targets if t.handshake] == ["127.0.0.1", "127.0.0.2"]
    s = _series(render_snapshot(build_snapshot(report)))
    positions = [l["position"] for l, _ in s["prober_tls_certificate_not_after_timestamp_seconds"]]
    assert sorted(positions) == ["intermediate", "leaf"]
    assert _one(s, "prober_dns_resolver_answers") == 2
    for labels, _ in (row for rows in s.values() for row in rows):
        assert not any(re.fullmatch(r"127\.0\.0\.\d+(:\d+)?", v) for k, v in labels.items() if k != "resolver"), \
            "no label may hold a dialled address"


def test_hostile_label_values_survive_the_exposition_and_stay_bounded(lab: dict) -> None:
    """Labels come from certificates and contracts an attacker may shape: quotes, backslashes, newlines,
    non-ASCII, braces and sheer length must read back exactly (clipped), one series each, nothing injected."""
    report = _report(lab, WWW)
    hostile = {"owner_team": 'a"b\\c\nd} x{y="1"', "app_owner": "zürich ☃ \t tab", "tls_termination": "x" * 5000}
    report = dataclasses.replace(report, endpoint=dataclasses.replace(report.endpoint, **hostile))
    s = _series(render_snapshot(build_snapshot(report)))
    (labels, value), = s["prober_endpoint_info"]
    assert value == 1
    assert labels["owner_team"] == hostile["owner_team"]
    assert labels["app_owner"] == hostile["app_owner"]
    assert len(labels["tls_termination"]) == MAX_LABEL_CHARS and labels["tls_termination"].endswith("…")
    assert sum(len(rows) for rows in s.values()) == sum(
        len(rows) for rows in _series(render_snapshot(build_snapshot(_report(lab, WWW)))).values())


def test_a_scrape_joins_the_rendered_lines_in_family_order(lab: dict) -> None:
    """/metrics is one HELP and TYPE per family, then every endpoint's lines: valid text, no repeats."""
    snapshots = [build_snapshot(_report(lab, name)) for name in (WWW, EXPIRED, REFUSED)]
    text = endpoint_exposition(snapshots).decode()
    helps = [line.split(" ")[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert helps == list(ENDPOINT_FAMILIES)
    s = _series(text)
    assert {l["hostname"] for l, _ in s["prober_probe_success"]} == {WWW, EXPIRED, REFUSED}
    assert sorted(l["hostname"] for l, _ in s["prober_tls_verified"]) == [EXPIRED, WWW]
    assert all(len(snapshot.lines) == len(ENDPOINT_FAMILIES) for snapshot in snapshots)


def test_location_is_on_every_series_and_the_exposition_follows_its_source(lab: dict) -> None:
    registry = CollectorRegistry(auto_describe=False)
    own = SelfMetrics(registry, "eu-west")
    snapshots = [build_snapshot(_report(lab, WWW), "eu-west"), build_snapshot(_report(lab, EXPIRED), "eu-west")]

    def scrape() -> bytes:  # what the service's /metrics returns
        return generate_latest(registry) + endpoint_exposition(snapshots)

    own.observe_run(snapshots[0].report)
    own.lag.observe(0.2)
    own.skipped.inc()
    own.endpoints.set(2)
    own.reload_ok.set(1)

    s = _series(scrape())
    unlabelled = [(n, l) for n, rows in s.items() for l, _ in rows if l.get("location") != "eu-west"]
    assert not unlabelled
    assert _one(s, "prober_probe_runs_total", result="ok") == 1
    assert _one(s, "prober_probe_runs_total", result="critical") == 0
    assert _one(s, "prober_scheduler_lag_seconds_count") == 1
    assert _one(s, "prober_probe_runs_skipped_total") == 1
    assert {l["hostname"] for l, _ in s["prober_probe_success"]} == {WWW, EXPIRED}

    snapshots.pop()  # what a reload does to the store: the next scrape no longer has it
    s = _series(scrape())
    assert {l.get("hostname") for rows in s.values() for l, _ in rows} <= {WWW, None}


def test_self_metrics_without_location_have_no_location_label() -> None:
    registry = CollectorRegistry(auto_describe=False)
    own = SelfMetrics(registry, None)
    own.endpoints.set(3)
    s = _series(generate_latest(registry))
    assert _one(s, "prober_endpoints_configured") == 3
    assert all("location" not in l for rows in s.values() for l, _ in rows)
    assert {l["result"] for l, _ in s["prober_probe_runs_total"]} == {"ok", "warning", "critical", "unknown"}


def test_metric_names_match_the_documented_contract() -> None:
    documented = set(re.findall(r"^\| `(prober_[a-z_]+)`", Path(__file__).parents[1].joinpath(
        "docs", "metrics.md").read_text(), re.M))
    registry = CollectorRegistry(auto_describe=False)
    SelfMetrics(registry, None)
    from prober.service.supervisor import SupervisorMetrics
    SupervisorMetrics(supervisor := CollectorRegistry(auto_describe=False), None, 2)
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in supervisor.collect()}
    exported |= set(ENDPOINT_FAMILIES) | {f.name + ("_total" if f.type == "counter" else "")
                                         for f in registry.collect()}
    assert exported == documented


def test_snapshot_lines_are_byte_for_byte_what_prometheus_client_writes(lab: dict) -> None:
    """The snapshot formats its own lines (once per probe); they must equal generate_latest's."""
    from prober.service.metrics import snapshot_rows
    hostile = {"owner_team": 'a"b\\c\nd} x{y="1"', "app_owner": "zürich ☃ \t tab", "tls_termination": "x" * 5000}
    for name in (WWW, EXPIRED, UNTRUSTED, REFUSED, TWIN):
        report = _report(lab, name)
        report = dataclasses.replace(report, endpoint=dataclasses.replace(report.endpoint, **hostile))
        for location in (None, 'eu "west"'):
            rows = snapshot_rows(report, location)
            assert rows.render() == rows.render_by_client(), (name, location)
    rows = snapshot_rows(_report(lab, WWW), drop=frozenset({"prober_tls_version_info"}))
    assert rows.render()[list(ENDPOINT_FAMILIES).index("prober_tls_version_info")] == b""


def test_certificate_series_carry_bounded_key_and_signature_labels(lab: dict) -> None:
    report = _report(lab, WWW)
    s = _series(render_snapshot(build_snapshot(report)))
    leaf = [l for l, _ in s["prober_tls_certificate_not_after_timestamp_seconds"] if l["position"] == "leaf"]
    assert [(l["key_type"], l["key_bits"], l["signature_algorithm"]) for l in leaf] == [
        ("EC", "256", "ecdsa-with-SHA256")]
    # A hostile certificate's odd key or unnamed signature OID becomes "other", never a new value.
    target = report.tls.targets[0]
    odd = dataclasses.replace(target.chain[0], key_type="GOST R 34.10", key_size=1234567,
                              signature_algorithm="1.2.643.7.1.1.3.2")
    report = dataclasses.replace(report, tls=dataclasses.replace(
        report.tls, targets=(dataclasses.replace(target, chain=(odd, *target.chain[1:])),)))
    s = _series(render_snapshot(build_snapshot(report)))
    (odd_labels,) = [l for l, _ in s["prober_tls_certificate_not_after_timestamp_seconds"] if l["position"] == "leaf"]
    assert (odd_labels["key_type"], odd_labels["key_bits"], odd_labels["signature_algorithm"]) == (
        "other", "other", "other")
