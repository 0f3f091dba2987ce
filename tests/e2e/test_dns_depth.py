"""What sits behind the answers: dangling CNAMEs, DNSSEC, delegation, serial drift, names as people type them.

Real knot servers hold a parent zone with real delegations and signed
children (dnssec-signzone, explicit times); two real unbound resolvers
validate with trust anchors for the signed zones (tests/e2e/dnsdepth.py).
The prober runs in this process with AUTHORITATIVE_PORT pointed at the lab's
one authoritative port, under the loopback guard, and in a child process for
the CLI cases.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.rdatatype
import pytest

import dnsdepth
from dnsdepth import DepthLab
from harness import free_port, guard_violations, prober_argv, prober_env

from prober import delegation
from prober.config import build_endpoint
from prober.engine import probe
from prober.lab.dnsserver import DnsServer
from prober.lab.pki import CA
from prober.lab.runner import LabLoop
from prober.lab.webserver import PlainHttpServer, TlsHttpServer
from prober.layers import dns as dns_layer
from prober.model import Report
from prober.render import to_dict

pytestmark = pytest.mark.e2e

TIMEOUT = 8.0
SIGNED_NAMES = ("good", "soon", "expired", "big", "rollover", "drift", "lame", "mismatch", "many", "cnamens")


@dataclass
class Site:
    """The lab's DNS plus the web servers every name points at, and the contract that asks them."""
    dns: DepthLab
    tls_port: int
    http_port: int
    bundle: str
    public: DnsServer  # a public-view resolver that knows none of the lab's private names

    def contract(self, **extra: Any) -> dict[str, Any]:
        return {"resolvers": self.dns.resolver_contract(), "authoritative": "auto", "timeout": f"{TIMEOUT}s",
                "ca_file": self.bundle, "tls": {"port": self.tls_port},
                "http": {"port": self.http_port, "health_path": "/healthz"}, **extra}


@pytest.fixture(scope="module")
def site(e2e_dir: Path, subnet: str) -> Iterator[Site]:
    lab = dnsdepth.start(e2e_dir / "depth", subnet)
    ca = CA.root("depth lab root")
    names = [f"*.{z}.lab.test" for z in SIGNED_NAMES] + ["*.kid.quiet.test"]
    certfile, keyfile = ca.issue(names).write(e2e_dir / "depth", "web")
    bundle = ca.write_bundle(e2e_dir / "depth" / "ca.pem")
    web_hosts = (lab.web, lab.old_web)
    tls_port, http_port = free_port(*web_hosts), free_port(*web_hosts)
    loop = LabLoop()
    try:
        for host in web_hosts:
            web = TlsHttpServer(certfile, keyfile, host, tls_port, hsts="max-age=31536000")
            web.route("/healthz", 200, b"ok")
            loop.start(web)
            loop.start(PlainHttpServer(host, http_port, https_port=tls_port))
        public = loop.start(DnsServer(f"{subnet}.93", 0))
        public.mode = "nxdomain"
        yield Site(lab, tls_port, http_port, bundle, public)
    finally:
        loop.stop()
        dnsdepth.stop(lab)


@pytest.fixture
def fresh(site: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """Every test starts as a one-shot `prober check` would: no cached zone or delegation."""
    monkeypatch.setattr(dns_layer, "AUTHORITATIVE_PORT", site.dns.port)
    monkeypatch.setattr(dns_layer, "_zone_cache", {})
    monkeypatch.setattr(delegation, "_checked", {})
    return site


def run_probe(site: Site, hostname: str, **extra: Any) -> Report:
    endpoint = build_endpoint(hostname, site.contract(**extra), source="test")
    report = asyncio.run(probe(endpoint))
    assert report.duration_seconds < TIMEOUT, "the new checks must run within the endpoint's deadline"
    return report


def codes(report: Report) -> list[str]:
    return sorted(f.code for f in report.findings)


def finding(report: Report, code: str):
    return next(f for f in report.findings if f.code == code)


# ------------------------------------------------------------------ controls
def test_a_correctly_signed_zone_with_a_consistent_delegation_is_ok(fresh: Site) -> None:
    report = run_probe(fresh, "www.good.lab.test")
    assert (report.status, codes(report)) == ("ok", []), report.verdict.message
    assert all(a.dnssec.validated and a.dnssec.signed for a in report.dns.resolvers)
    checked = report.dns.delegation
    assert checked.parent == "lab.test" and checked.parent_ns == checked.child_ns == ("ns.good.lab.test",)
    assert [(s.rcode, s.authoritative, s.serial) for s in checked.servers] == [("NOERROR", True, 1)]
    doc = to_dict(report)
    assert doc["dns"]["resolvers"][0]["dnssec"]["validated"] is True
    assert doc["dns"]["delegation"]["child_ns"] == ["ns.good.lab.test"]


def test_a_cname_into_a_provider_zone_whose_target_exists_is_ok(fresh: Site) -> None:
    report = run_probe(fresh, "live.good.lab.test")
    assert (report.status, codes(report)) == ("ok", []), report.verdict.message
    assert {a.cnames for a in report.dns.resolvers} == {("live-app.azurewebsites.net",)}


def test_a_private_split_horizon_name_is_ok(fresh: Site) -> None:
    resolvers = [*fresh.dns.resolver_contract(), {"address": f"{fresh.public.host}:{fresh.public.port}",
                                                  "name": "public", "view": "public"}]
    report = run_probe(fresh, "intranet.good.lab.test", visibility="private", resolvers=resolvers)
    assert (report.status, codes(report)) == ("ok", []), report.verdict.message
    assert {a.resolver: a.rcode for a in report.dns.resolvers}["public"] == "NXDOMAIN"


# --------------------------------------------------------- dangling CNAMEs
def test_a_cname_to_a_deprovisioned_provider_name_is_dangling_not_nxdomain(fresh: Site) -> None:
    report = run_probe(fresh, "app.good.lab.test")
    assert codes(report) == ["dns.dangling_cname"] and report.status == "critical"
    message = finding(report, "dns.dangling_cname").message
    assert "gone-app.azurewebsites.net" in message and "Azure App Service" in message and "takeover" in message
    # the JSON keeps the chain at NXDOMAIN, per resolver
    for answer in to_dict(report)["dns"]["resolvers"]:
        assert (answer["rcode"], answer["cnames"]) == ("NXDOMAIN", ["gone-app.azurewebsites.net"])


# ------------------------------------------------------------------ DNSSEC
def test_expired_signatures_are_bogus_and_say_why(fresh: Site) -> None:
    report = run_probe(fresh, "www.expired.lab.test")
    assert codes(report) == ["dns.dnssec_bogus"] and report.status == "critical", report.verdict.message
    message = finding(report, "dns.dnssec_bogus").message
    assert "validating-1" in message and "validating-2" in message
    assert "Signature Expired" in message  # unbound's Extended DNS Error, shown as is
    assert "expired at" in message and "key " in message  # our own validation names the signature
    assert "certificates" in message
    assert all(a.dnssec.checking_disabled_rcode == "NOERROR" for a in report.dns.resolvers)


def test_signatures_about_to_expire_warn(fresh: Site) -> None:
    report = run_probe(fresh, "www.soon.lab.test")
    assert codes(report) == ["dns.rrsig_expiring"] and report.status == "warning", report.verdict.message
    assert "soon.lab.test" in finding(report, "dns.rrsig_expiring").message
    # a day-long validity on a zone signed on the fly: the tenth (2.4 h) is under 10 h, so no warning
    relaxed = run_probe(fresh, "www.soon.lab.test", dns={"rrsig_min_hours": 5})
    assert codes(relaxed) == []


def test_a_dnskey_rrset_too_large_for_udp_comes_over_tcp(fresh: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    real_tcp = dns.asyncquery.tcp

    async def counting_tcp(query, *args, **kwargs):
        asked.append(dns.rdatatype.to_text(query.question[0].rdtype))
        return await real_tcp(query, *args, **kwargs)
    monkeypatch.setattr(dns_layer.dns.asyncquery, "tcp", counting_tcp)
    report = run_probe(fresh, "www.big.lab.test")
    assert codes(report) == ["dns.dnssec_bogus"]
    assert "DNSKEY" in asked  # TC=1 over UDP, then TCP
    assert "expired at" in finding(report, "dns.dnssec_bogus").message  # the big DNSKEY RRset was read


def test_a_ds_for_a_key_the_zone_no_longer_has_is_bogus_and_names_the_ds(fresh: Site) -> None:
    report = run_probe(fresh, "www.rollover.lab.test")
    assert codes(report) == ["dns.dnssec_bogus"], report.verdict.message
    message = finding(report, "dns.dnssec_bogus").message
    assert "the DS for rollover.lab.test at its parent" in message and "matches no key" in message


def test_required_dnssec_on_an_unsigned_zone_warns(fresh: Site) -> None:
    report = run_probe(fresh, "www.mismatch.lab.test", dns={"dnssec": "required"})
    assert "dns.dnssec_missing" in codes(report)


# -------------------------------------------------------------- delegation
def test_a_name_server_answering_refused_is_lame(fresh: Site) -> None:
    report = run_probe(fresh, "www.lame.lab.test")
    assert codes(report) == ["dns.lame_delegation"] and report.status == "warning", report.verdict.message
    lame = finding(report, "dns.lame_delegation")
    assert lame.address == "x.lame.lab.test" and "REFUSED" in lame.message


def test_a_parent_ns_set_that_differs_from_the_zones_own(fresh: Site) -> None:
    report = run_probe(fresh, "www.mismatch.lab.test")
    assert codes(report) == ["dns.delegation_mismatch"], report.verdict.message
    assert "only the zone lists b.mismatch.lab.test" in finding(report, "dns.delegation_mismatch").message


def test_a_secondary_with_an_older_serial_is_drift_and_names_the_cause(fresh: Site) -> None:
    report = run_probe(fresh, "www.drift.lab.test")
    assert codes(report) == ["dns.inconsistent", "dns.serial_drift", "dns.stale_resolver"], report.verdict.message
    drift = finding(report, "dns.serial_drift").message
    assert "a.drift.lab.test 10" in drift and "b.drift.lab.test 9" in drift and "b.drift.lab.test is behind" in drift
    assert "stale secondary" in finding(report, "dns.inconsistent").message
    # judged against the newest serial's answer: the resolver behind the stale secondary is the stale one
    assert finding(report, "dns.stale_resolver").address == "validating-2"
    assert {a.resolver: a.agrees_with_authoritative for a in report.dns.resolvers} == {
        "validating-1": True, "validating-2": False}


# ------------------------------------------------------------------ faults
def test_a_parent_that_never_answers_costs_a_bounded_wait_and_no_false_finding(fresh: Site) -> None:
    report = run_probe(fresh, "www.kid.quiet.test")
    assert (report.status, codes(report)) == ("ok", []), report.verdict.message
    assert report.dns.delegation.parent_ns is None
    assert "no server of the parent zone quiet.test answered" in report.dns.delegation.parent_error


def test_a_hundred_ns_records_are_bounded(fresh: Site) -> None:
    report = run_probe(fresh, "www.many.lab.test")
    assert (report.status, codes(report)) == ("ok", []), report.verdict.message
    checked = report.dns.delegation
    assert checked.ns_total == dnsdepth.MANY_NS and len(checked.child_ns) == dnsdepth.MANY_NS
    asked = [s for s in checked.servers if s.rcode != "NOTASKED"]
    assert len(checked.servers) == dns_layer.MAX_AUTHORITATIVE and 0 < len(asked) <= dns_layer.MAX_AUTHORITATIVE


def test_an_ns_pointing_at_a_cname_is_lame(fresh: Site) -> None:
    report = run_probe(fresh, "www.cnamens.lab.test")
    assert codes(report) == ["dns.lame_delegation"], report.verdict.message
    lame = finding(report, "dns.lame_delegation")
    assert lame.address == "alias.cnamens.lab.test" and "CNAME" in lame.message


# ---------------------------------------------------- names as people type them
def _cli(site: Site, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    guard_log = workdir / "depth-guard.log"
    resolver = site.dns.resolvers[0].target
    done = subprocess.run(prober_argv("check", *args, "--resolver", resolver, "--authoritative", "off",
                                      "--ca-file", site.bundle, "--http-port", str(site.http_port), "--json"),
                          capture_output=True, text=True, timeout=60, env=prober_env(guard_log), cwd=workdir)
    assert not guard_violations(guard_log)
    return done


def test_prober_check_takes_a_unicode_name(site: Site, e2e_dir: Path) -> None:
    done = _cli(site, e2e_dir, "bücher.good.lab.test", "--https-port", str(site.tls_port), "--health-path",
                "/healthz")
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    doc = json.loads(done.stdout)
    assert (doc["hostname"], doc["hostname_unicode"], doc["status"]) == (
        "xn--bcher-kva.good.lab.test", "bücher.good.lab.test", "ok")


def test_prober_check_takes_a_pasted_url(site: Site, e2e_dir: Path) -> None:
    done = _cli(site, e2e_dir, f"https://bücher.good.lab.test:{site.tls_port}/healthz")
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    doc = json.loads(done.stdout)
    assert doc["status"] == "ok" and doc["http"]["health"]["url"].endswith(f":{site.tls_port}/healthz")


@pytest.mark.parametrize("arg, words", [
    ("ftp://www.good.lab.test/", "is not a hostname or an https:// URL"),
    ("https://user@www.good.lab.test/", "user info"),
    ("☃.good.lab.test", "is not a valid internationalised name under IDNA 2008"),
])
def test_names_that_cannot_be_probed_get_one_line(site: Site, e2e_dir: Path, arg: str, words: str) -> None:
    done = _cli(site, e2e_dir, arg)
    assert done.returncode == 3 and done.stdout == ""
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
