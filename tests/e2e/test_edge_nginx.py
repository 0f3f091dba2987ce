"""`prober check` against a real nginx: SNI-selected server blocks, a test PKI, port-80 and health behaviour.

One `prober check` run probes every site at once (as an on-call would during
an incident); each site's exact finding codes and status are asserted from
its JSON report, then a few details a person reads in that report.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from edge import BY_NAME, HSTS, SITES, Edge, Site
from harness import CheckRun, prober_check
from prober.model import EXIT_CODES
from servers import DnsLab

pytestmark = pytest.mark.e2e

TIMEOUT = 5.0  # per probe; nginx on loopback answers in milliseconds
SLOW_TIMEOUT = 2.0  # the slow site's probe gives up long before its upstream answers


def _timeout(site: Site) -> float:
    return SLOW_TIMEOUT if site.health == "slow" else TIMEOUT


@pytest.fixture(scope="module")
def run(edge: Edge, dns_lab: DnsLab, e2e_dir: Path) -> CheckRun:
    entries = [edge.entry(s, _timeout(s), dns_lab.contract()) for s in SITES]
    config = edge.write_config(e2e_dir / "edge-check.yaml", entries, interval=60)
    return prober_check(config, [s.hostname for s in SITES], e2e_dir)


@pytest.mark.parametrize("site", SITES, ids=lambda s: s.name)
def test_each_site_gets_exactly_its_findings(run: CheckRun, site: Site) -> None:
    report = run.assert_exactly(site.hostname, site.description, site.expect, site.status)
    assert report["layers"][0] == {**report["layers"][0], "name": "dns", "status": "ok"}


def test_the_exit_code_of_a_multi_host_run_is_the_worst_status(run: CheckRun) -> None:
    assert run.exit_code == EXIT_CODES["critical"]


def _alone(edge: Edge, dns_lab: DnsLab, e2e_dir: Path, name: str) -> CheckRun:
    site = BY_NAME[name]
    config = edge.write_config(e2e_dir / f"{name}.yaml", [edge.entry(site, TIMEOUT, dns_lab.contract())], 60)
    return prober_check(config, [site.hostname], e2e_dir)


def test_a_healthy_site_alone_exits_0_with_a_verified_chain(edge: Edge, dns_lab: DnsLab, e2e_dir: Path) -> None:
    site = BY_NAME["healthy"]
    alone = _alone(edge, dns_lab, e2e_dir, "healthy")
    report = alone.reports[site.hostname]
    assert alone.exit_code == 0 and report["findings"] == []
    assert report["tls"]["verified"] is True
    assert [c["position"] for c in report["tls"]["chain"]] == ["leaf", "intermediate"]
    assert report["tls"]["chain"][0]["sans"] == [site.hostname]
    assert report["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert report["http"]["redirect"]["status"] == 301
    assert report["http"]["redirect"]["location"] == f"https://{site.hostname}:{edge.tls_port}/"
    assert report["http"]["health"]["status"] == 200
    assert report["http"]["hsts"] == HSTS


def test_a_warning_alone_exits_1(edge: Edge, dns_lab: DnsLab, e2e_dir: Path) -> None:
    alone = _alone(edge, dns_lab, e2e_dir, "expiring")
    assert alone.exit_code == EXIT_CODES["warning"], alone.stdout


def test_an_unknown_sni_name_gets_the_default_servers_certificate(run: CheckRun) -> None:
    host = "unknown-sni.e2e.test"
    leaf = run.reports[host]["tls"]["chain"][0]
    assert leaf["sans"] == ["default.other.test"]
    assert run.reports[host]["tls"]["targets"][0]["hostname_match"] is False
    assert "default.other.test" in run.finding(host, "tls.hostname_mismatch")["message"]


def test_a_leaf_only_chain_is_served_as_one_certificate(run: CheckRun) -> None:
    report = run.reports["leaf-only.e2e.test"]
    assert [c["position"] for c in report["tls"]["chain"]] == ["leaf"]
    assert "e2e intermediate" in run.finding("leaf-only.e2e.test", "tls.incomplete_chain")["message"]


def test_expiry_is_graded_by_tier(run: CheckRun) -> None:
    expired = run.finding("expired.e2e.test", "tls.expired")
    assert expired["severity"] == "critical"
    assert run.reports["expired.e2e.test"]["tls"]["chain"][0]["days_left"] < 0
    expiring = run.finding("expiring.e2e.test", "tls.expiring")
    assert (expiring["tier"], expiring["severity"]) == ("high", "warning")
    assert 9 < run.reports["expiring.e2e.test"]["tls"]["chain"][0]["days_left"] <= 10


def test_port_80_behaviour(run: CheckRun, edge: Edge) -> None:
    no_redirect = run.reports["no-redirect.e2e.test"]["http"]["redirect"]
    assert (no_redirect["status"], no_redirect["location"]) == (200, None)
    wrong = run.reports["wrong-redirect.e2e.test"]["http"]["redirect"]
    assert wrong["location"] == f"https://elsewhere.e2e.test:{edge.tls_port}/"
    assert "leaves wrong-redirect.e2e.test" in run.finding("wrong-redirect.e2e.test", "http.redirect_mismatch")[
        "message"]


def test_health_failures_say_why(run: CheckRun) -> None:
    down = run.reports["down.e2e.test"]["http"]["health"]
    assert down["status"] == 503
    slow = run.reports["slow.e2e.test"]
    assert slow["http"]["health"]["status"] is None
    assert slow["http"]["health"]["error"] == "timed out"
    assert slow["duration_seconds"] < SLOW_TIMEOUT + 1.0  # the probe's deadline held, the upstream did not


def test_hsts_only_where_nginx_adds_it(run: CheckRun) -> None:
    assert run.reports["no-hsts.e2e.test"]["http"]["hsts"] is None
    assert run.reports["down.e2e.test"]["http"]["hsts"] == HSTS  # `always`: on a 503 too
