"""Renewal assurance end to end: nginx serving certificates at each interesting point of their life,
knot serving CAA, two addresses of one name out of step, and a lab RFC 9773 responder.

Each Site is a name under renew.e2e.test with the leaf nginx serves on each of
two loopback addresses (one unless `mixed`), the CAA records knot holds, the
CA window the responder gives, and the finding codes `prober check` must
report, exactly.  `prober serve` then exports the same facts, and a real
Prometheus evaluating the shipped rules raises exactly the expected alerts:
text, JSON, metrics and alerts all come from one report.
"""
from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import (STARTED, Service, free_port, guard_violations, prober_argv, prober_check, prober_env,
                     stop_since, tcp_open, tool, wait_for)
from prober.lab.ari import AriResponder, certificate_id
from prober.lab.catalogue import nginx_conf
from prober.lab.pki import CA, Issued
from rulecopies import fast_copy
from servers import start_knot, start_prober_serve, start_prometheus

pytestmark = pytest.mark.e2e

DOMAIN = "renew.e2e.test"
CA_IDENTITY = "ca.e2e.test"  # the lab CA's CAA identity (tls.caa_identities)
DAY = 86400.0


@dataclass(frozen=True)
class Site:
    name: str
    life: float  # days
    left: float  # days left
    expect: tuple[str, ...]
    status: str
    alerts: tuple[str, ...] = ()
    old: tuple[float, float] | None = None  # (life, left) of the leaf the second address still serves
    other: tuple[float, float] | None = None  # a different but fresh leaf on the second address
    caa: str | None = None  # "name" | "parent": CAA forbidding the lab CA, at the name or its parent only
    ari: str | None = None  # past | started | now | future | 404 | hang | malformed
    source: str | None = None  # certificate_source
    tier: str | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def two_addresses(self) -> bool:
        return self.old is not None or self.other is not None


SITES: tuple[Site, ...] = (
    Site("six-half", 6, 3, (), "ok"),
    Site("six-before-warning", 6, 2 + 1 / 24, (), "ok"),
    Site("six-warning", 6, 1.9, ("tls.expiring",), "warning", ("ProberCertificateExpiryWarning",), tier="warning"),
    Site("six-6h", 6, 0.25, ("tls.expiring", "tls.renewal_overdue"), "critical",
         ("ProberCertificateExpiryUrgent", "ProberCertificateRenewalOverdue"), tier="urgent"),
    Site("d45-before", 45, 15.1, (), "ok"),
    Site("d45-warning", 45, 14.9, ("tls.expiring",), "warning", ("ProberCertificateExpiryWarning",), tier="warning"),
    Site("d45-high", 45, 7.4, ("tls.expiring", "tls.renewal_overdue"), "warning",
         ("ProberCertificateExpiryHigh", "ProberCertificateRenewalOverdue"), tier="high"),
    Site("d90-warning", 90, 25, ("tls.expiring",), "warning", ("ProberCertificateExpiryWarning",), tier="warning"),
    Site("d90-overdue", 90, 20, ("tls.expiring", "tls.renewal_overdue"), "warning",
         ("ProberCertificateExpiryWarning", "ProberCertificateRenewalOverdue"), tier="warning"),
    Site("d200-before", 200, 50, (), "ok"),
    Site("d200-80pct", 200, 40, ("tls.renewal_overdue",), "warning", ("ProberCertificateRenewalOverdue",)),
    Site("caa-here", 90, 80, ("dns.caa_forbids_issuer",), "warning", ("ProberCertificateRenewalBlockedByCAA",),
         caa="name"),
    Site("www.caa-parent", 90, 80, ("dns.caa_forbids_issuer",), "warning",
         ("ProberCertificateRenewalBlockedByCAA",), caa="parent"),
    Site("caa-acm", 90, 80, ("dns.caa_forbids_issuer",), "warning", ("ProberCertificateRenewalBlockedByCAA",),
         source="acm"),  # the apex permits only the lab CA, not Amazon, which certificate_source acm implies
    Site("mixed", 90, 85, ("tls.expiring", "tls.mixed_certificates"), "warning",
         ("ProberCertificateExpiryWarning", "ProberCertificateStaleOnSomeAddresses"), old=(90, 20), tier="warning"),
    Site("per-region", 90, 85, (), "ok", other=(90, 80)),
    Site("ari-past", 90, 80, ("tls.renewal_overdue",), "critical", ("ProberCertificateRenewalWindowPassed",),
         ari="past"),
    Site("ari-started", 90, 80, ("tls.renewal_overdue",), "warning", ("ProberCertificateRenewalOverdue",),
         ari="started"),
    Site("ari-now", 90, 80, (), "ok", ari="now"),
    Site("ari-future", 90, 80, (), "ok", ari="future"),
    Site("ari-404", 90, 80, (), "ok", ari="404"),
    Site("ari-hang", 90, 80, (), "ok", ari="hang"),
    Site("ari-malformed", 90, 80, (), "ok", ari="malformed"),
)
BY_HOST = {s.hostname: s for s in SITES}
NOTED = {"ari-404": "answered 404", "ari-hang": "did not answer", "ari-malformed": "not JSON"}
TIMEOUT = 4.0


def _at(days: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=days)


@dataclass
class Lab:
    dir: Path
    addresses: tuple[str, str]
    tls_port: int
    http_port: int
    knot: Any
    responder: AriResponder
    ca_file: str
    leaves: dict[str, tuple[Issued, Issued]] = field(default_factory=dict)
    requests_before_serve: int = 0

    def entry(self, site: Site) -> dict[str, Any]:
        knot = f"{self.knot.address}:{self.knot.port}"
        # auto for the others: their issuer is a lab CA, which is never asked
        tls: dict[str, Any] = {"port": self.tls_port, "caa_identities": [CA_IDENTITY],
                               "ari": self.responder.directory if site.ari else "auto"}
        return {"hostname": site.hostname, "owner_team": f"team-{site.name}", "app_owner": "renewals",
                **({"certificate_source": site.source} if site.source else {}),
                "timeout": f"{TIMEOUT:g}s", "ca_file": self.ca_file,
                "resolvers": [{"address": knot, "view": "public", "name": "knot"}], "authoritative": knot,
                "tls": tls, "http": {"port": self.http_port, "health_path": "/healthz"}}

    def config(self, path: Path, interval: float) -> Path:
        doc = {"defaults": {"interval": f"{interval:g}s", "timeout": f"{TIMEOUT:g}s"},
               "endpoints": [self.entry(s) for s in SITES]}
        path.write_text("# generated by tests/e2e/test_certificate_renewal.py: every address is on loopback\n"
                        + yaml.safe_dump(doc, sort_keys=False))
        return path


def _issue(issuer: CA, site: Site, life: float, left: float) -> Issued:
    return issuer.issue([site.hostname], not_before=_at(left - life), not_after=_at(left))


def _windows(responder: AriResponder, site: Site, cert: Any) -> None:
    now = time.time()
    kind = site.ari
    if kind == "past":
        responder.window(cert, now - 3 * DAY, now - 3600, explanation="http://127.0.0.1/incident")
    elif kind == "started":
        responder.window(cert, now - 10 * DAY, now + DAY)  # start + 10% of 90 days is a day ago
    elif kind == "now":
        responder.window(cert, now - 60, now + 2 * DAY)
    elif kind == "future":
        responder.window(cert, now + 10 * DAY, now + 12 * DAY)
    elif kind == "404":
        responder.not_found(cert)
    elif kind == "hang":
        responder.hang(cert)
    elif kind == "malformed":
        responder.malformed(cert)


def _zone(site_names: list[Site], a: str, b: str) -> tuple[dict[str, str], tuple[str, ...]]:
    records = {f"{s.name}.renew": a for s in site_names}
    extra = [f'@ CAA 0 issue "{CA_IDENTITY}"']  # the zone apex permits the lab CA: climbing ends here
    for s in site_names:
        if s.two_addresses:
            extra.append(f"{s.name}.renew 3600 A {b}")
        if s.caa == "name":
            extra.append(f'{s.name}.renew 3600 CAA 0 issue "other-ca.test"')
        if s.caa == "parent":
            extra.append(f'{s.name.split(".", 1)[1]}.renew 3600 CAA 0 issue "other-ca.test"')
    return records, tuple(extra)


def _nginx_conf(lab: Lab) -> str:
    d = lab.dir
    blocks = []
    for site in SITES:
        for index, (address, issued) in enumerate(zip(lab.addresses, lab.leaves[site.name])):
            cert, key = issued.write(d / "pki", f"{site.name}-{index}")
            blocks.append(f"""
    server {{
        listen {address}:{lab.http_port};
        server_name {site.hostname};
        return 301 https://$host:{lab.tls_port}$request_uri;
    }}
    server {{
        listen {address}:{lab.tls_port} ssl;
        server_name {site.hostname};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        add_header Strict-Transport-Security "max-age=31536000" always;
        location = /healthz {{ return 200 "ok\\n"; }}
    }}""")
    return nginx_conf(d, "tests/e2e/test_certificate_renewal.py", "".join(blocks))


@pytest.fixture(scope="module")
def lab(e2e_dir: Path, subnet: str) -> Iterator[Lab]:
    for binary in ("nginx", "knotd", "knotc"):
        tool(binary)
    workdir = e2e_dir / "renewal"
    workdir.mkdir()
    a, b = f"{subnet}.31", f"{subnet}.32"
    root = CA.root("renewal root", not_before=_at(-400), not_after=_at(3650))
    issuer = root.intermediate("renewal intermediate", not_before=_at(-365), not_after=_at(1825))
    mark = len(STARTED)
    responder = AriResponder(a, 0, hang_seconds=2 * TIMEOUT).start()
    try:
        records, extra = _zone(list(SITES), a, b)
        knot_address = f"{subnet}.33"
        knot = start_knot(workdir / "knot", knot_address, free_port(knot_address), records, 3600, extra)
        lab = Lab(workdir, (a, b), free_port(a, b), free_port(a, b), knot, responder,
                  root.write_bundle(workdir / "pki" / "root.pem"))
        for site in SITES:
            first = _issue(issuer, site, site.life, site.left)
            second_life = site.old or site.other
            second = _issue(issuer, site, *second_life) if second_life else first
            lab.leaves[site.name] = (first, second)
            if site.ari:
                _windows(responder, site, first.cert)
        conf = workdir / "nginx.conf"
        conf.write_text(_nginx_conf(lab))
        nginx = Service("nginx", [tool("nginx"), "-p", f"{workdir}/", "-c", conf, "-g", "daemon off;"], workdir)
        nginx.start(lambda: all(tcp_open(x, lab.tls_port) for x in (a, b)))
        yield lab
    finally:
        stop_since(mark)
        responder.stop()


@pytest.fixture(scope="module")
def checked(lab: Lab, e2e_dir: Path):
    config = lab.config(lab.dir / "check.yaml", interval=60)
    return config, prober_check(config, [s.hostname for s in SITES], lab.dir, timeout=90)


# ------------------------------------------------------------------ prober check
@pytest.mark.parametrize("site", SITES, ids=lambda s: s.name)
def test_prober_check_reports_exactly_the_sites_findings(checked, site: Site) -> None:
    _, run = checked
    doc = run.reports[site.hostname]
    assert run.codes(site.hostname) == sorted(site.expect), [f["message"] for f in doc["findings"]]
    assert doc["status"] == site.status
    if site.tier:
        assert run.finding(site.hostname, "tls.expiring")["tier"] == site.tier


def test_six_day_thresholds_are_hours_and_the_message_says_so(checked) -> None:
    _, run = checked
    doc = run.reports["six-6h.renew.e2e.test"]
    assert doc["renewal"]["thresholds_days"] == {"warning": 2.0, "high": 1.0, "urgent": 0.5, "incident": 0.2,
                                                  "outage": 0.0}
    message = run.finding("six-6h.renew.e2e.test", "tls.expiring")["message"]
    assert "expires in 6.0 hours (tier urgent at 12.0 hours for a 6-day certificate;" in message, message
    assert run.reports["six-half.renew.e2e.test"]["status"] == "ok"


def test_renewal_overdue_says_when_it_was_due_and_what_to_inspect(checked) -> None:
    _, run = checked
    finding = run.finding("d200-80pct.renew.e2e.test", "tls.renewal_overdue")
    due = run.reports["d200-80pct.renew.e2e.test"]["renewal"]["due"]
    assert finding["severity"] == "warning"
    assert f"renewal was due by {due[:10]} {due[11:16]} UTC" in finding["message"]
    assert "automation renews at 67% of its lifetime" in finding["message"]
    assert "inspect the renewal automation" in finding["message"]


def test_a_past_ari_window_is_critical_and_names_its_end(checked) -> None:
    _, run = checked
    finding = run.finding("ari-past.renew.e2e.test", "tls.renewal_overdue")
    assert finding["severity"] == "critical" and "renewal window ended" in finding["message"]
    ari = run.reports["ari-past.renew.e2e.test"]["renewal"]["ari"]
    assert ari["explanation_url"] == "http://127.0.0.1/incident" and "/renewal-info/" in ari["url"]
    assert run.reports["ari-future.renew.e2e.test"]["renewal"]["ari"] is not None


@pytest.mark.parametrize("name, words", NOTED.items())
def test_a_failed_ari_fetch_is_a_note_not_a_finding(checked, name: str, words: str) -> None:
    _, run = checked
    doc = run.reports[f"{name}.{DOMAIN}"]
    assert doc["findings"] == [] and doc["renewal"]["ari"] is None
    assert len(doc["notes"]) == 1 and words in doc["notes"][0]


def test_caa_at_the_name_and_at_a_parent_only(checked) -> None:
    _, run = checked
    here, parent = run.reports[f"caa-here.{DOMAIN}"], run.reports[f"www.caa-parent.{DOMAIN}"]
    assert here["caa"]["found_at"] == f"caa-here.{DOMAIN}"
    assert parent["caa"]["found_at"] == f"caa-parent.{DOMAIN}"
    message = run.finding(f"caa-here.{DOMAIN}", "dns.caa_forbids_issuer")["message"]
    assert "permit only other-ca.test to issue" in message and CA_IDENTITY in message
    assert run.reports[f"six-half.{DOMAIN}"]["caa"]["found_at"] == "e2e.test"  # climbed to the apex: permitted
    acm = run.finding(f"caa-acm.{DOMAIN}", "dns.caa_forbids_issuer")["message"]
    assert "not Amazon (amazon.com, amazontrust.com, awstrust.com, amazonaws.com), which certificate_source acm" in acm


def test_the_stale_address_is_named_with_both_serials_and_dates(checked, lab: Lab) -> None:
    _, run = checked
    finding = run.finding(f"mixed.{DOMAIN}", "tls.mixed_certificates")
    new, old = (f"{i.cert.serial_number:x}" for i in lab.leaves["mixed"])
    assert finding["address"] == f"{lab.addresses[1]}:{lab.tls_port}"
    assert finding["message"].startswith(f"{lab.addresses[1]}:{lab.tls_port} still serves an older leaf")
    assert f"serial {old}" in finding["message"] and f"serial {new}" in finding["message"]
    assert f"while {lab.addresses[0]}:{lab.tls_port} serves the renewed one" in finding["message"]
    assert finding["message"].count(" UTC") == 2


def test_the_text_report_says_the_same(checked, lab: Lab) -> None:
    config, run = checked
    hosts = ["six-6h", "d200-80pct", "ari-404"]
    done = subprocess.run(prober_argv("check", *(f"{h}.{DOMAIN}" for h in hosts), "--config", str(config),
                                      "--color", "never"),
                          capture_output=True, text=True, timeout=60, cwd=lab.dir,
                          env=prober_env(lab.dir / "text-guard.log"), stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stderr == ""
    for host in hosts:
        for f in run.reports[f"{host}.{DOMAIN}"]["findings"]:
            assert f"{f['code']}: {f['message']}" in done.stdout
    assert "renewal: serial" in done.stdout and "tiers at 2.0 days/24.0 hours/12.0 hours/4.8 hours" in done.stdout
    assert run.reports[f"ari-404.{DOMAIN}"]["notes"][0] in done.stdout


def test_no_connection_leaves_loopback_and_auto_asks_no_one_for_a_lab_ca(checked, lab: Lab) -> None:
    assert guard_violations(lab.dir / "guard.log") == []
    asked = {p.rsplit("/", 1)[-1] for p in lab.responder.requests if p.startswith("/renewal-info/")}
    with_ari = {certificate_id(lab.leaves[s.name][0].cert) for s in SITES if s.ari}
    assert asked and asked <= with_ari  # the others (tls.ari: auto, a lab CA) were never asked about


# ------------------------------------------------------------------ prober serve and the shipped rules
@pytest.fixture(scope="module")
def served(lab: Lab, checked) -> Iterator[tuple[Any, Any]]:
    tool("prometheus")
    workdir = lab.dir / "serve"
    workdir.mkdir()
    config = lab.config(workdir / "serve.yaml", interval=5)
    mark = len(STARTED)
    lab.requests_before_serve = len(lab.responder.requests)
    try:
        serve = start_prober_serve(workdir, config, lab.addresses[0], free_port(lab.addresses[0]))
        wait_for("every endpoint probed once", lambda: all(
            f'prober_probe_status{{hostname="{s.hostname}"}}' in serve.metrics() for s in SITES), 60, 0.5)
        prometheus = start_prometheus(workdir / "prometheus", lab.addresses[0], free_port(lab.addresses[0]),
                                      serve.url.removeprefix("http://"), [fast_copy(workdir / "rules.yaml")])
        yield serve, prometheus
    finally:
        stop_since(mark)


def _samples(text: str, metric: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        match = re.match(rf'{metric}\{{(.*)\}} (\S+)$', line)
        if match:
            out[match.group(1)] = float(match.group(2))
    return out


def test_serve_metrics_carry_the_reports_thresholds_due_and_window(served, checked) -> None:
    serve, _ = served
    _, run = checked
    text = serve.metrics()
    thresholds = _samples(text, "prober_expiry_threshold_days")
    assert thresholds['hostname="six-6h.renew.e2e.test",tier="urgent"'] == 0.5
    assert thresholds['hostname="d45-high.renew.e2e.test",tier="high"'] == 7.5
    assert thresholds['hostname="d200-80pct.renew.e2e.test",tier="warning"'] == 30
    due = _samples(text, "prober_tls_renewal_due_timestamp_seconds")
    for site in SITES:
        iso = run.reports[site.hostname]["renewal"]["due"]
        want = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
        assert abs(due[f'hostname="{site.hostname}"'] - want) < 1.5, site.name
    ends = _samples(text, "prober_tls_ari_window_end_timestamp_seconds")
    assert set(ends) == {f'hostname="{s.hostname}"' for s in SITES if s.ari in ("past", "started", "now", "future")}
    findings = _samples(text, "prober_finding")
    for site in SITES:
        got = sorted(re.search(r'code="([^"]+)"', k).group(1) for k in findings if f'"{site.hostname}"' in k)
        assert got == sorted(site.expect), site.name
    assert guard_violations(serve.guard_log) == []


def test_the_shipped_rules_raise_exactly_each_sites_alerts(served) -> None:
    _, prometheus = served
    expected = {s.hostname: set(s.alerts) for s in SITES}

    def by_host() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {h: set() for h in expected}
        for alert in prometheus.alerts():
            host = alert["labels"].get("hostname")
            if host in out:
                out[host].add(alert["labels"]["alertname"])
        return out

    wait_for("every site's alerts", lambda: all(want <= by_host()[h] for h, want in expected.items()), 60, 1.0)
    time.sleep(3)  # a few more evaluations: nothing else fires on this data
    assert by_host() == expected
    for alert in prometheus.alerts():
        labels = alert["labels"]
        if labels.get("hostname") in expected:
            assert labels["owner_team"] == f"team-{BY_HOST[labels['hostname']].name}"


def test_serve_asks_the_ca_once_however_many_probes_run(served, lab: Lab) -> None:
    serve, _ = served
    runs = sum(_samples(serve.metrics(), "prober_probe_runs_total").values())
    assert runs >= 3 * len(SITES)  # every endpoint probed several times by now
    by_serve = lab.responder.requests[lab.requests_before_serve:]
    for name in ("ari-started", "ari-404"):
        cid = certificate_id(lab.leaves[name][0].cert)
        assert sum(1 for p in by_serve if p.endswith("/" + cid)) == 1, name  # until Retry-After, or 5 min after a failure
