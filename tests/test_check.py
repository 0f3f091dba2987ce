"""`prober check` against the lab: every finding code made to happen for real.

Each scenario of prober/lab/scenarios.py is a real TLS/HTTP/DNS setup on
loopback; the assertions are what a user sees: codes, status, exit code,
JSON shape and the text report.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from prober.cli import main
from prober.lab.dnsserver import DnsServer
from prober.lab.scenarios import SCENARIOS, Lab
from prober.model import CATALOGUE, EXIT_CODES

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "report.schema.json").read_text())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(workdir=str(tmp_path_factory.mktemp("lab")), timeout=3.0) as lab:
        lab.config_path = lab.write_config()
        yield lab


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_json(capsys, *argv: str) -> tuple[int, dict | list]:
    code, out, err = run(capsys, "check", "--json", *argv)
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    return code, doc


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario_yields_exactly_its_findings(lab, capsys, scenario):
    code, doc = check_json(capsys, scenario.hostname, "--config", lab.config_path)
    codes = {f["code"] for f in doc["findings"]}
    assert codes == set(scenario.expect), doc["verdict"]["message"]
    assert doc["status"] == scenario.status
    assert code == EXIT_CODES[scenario.status] == doc["exit_code"]


def test_every_catalogue_code_has_a_scenario_or_a_dedicated_test():
    # DNSSEC and delegation codes need real signed zones and delegations: tests/e2e/test_dns_depth.py.
    # CAA and stale listeners need knot and several nginx addresses: tests/e2e/test_certificate_renewal.py
    dedicated = {"dns.resolver_error", "dns.dangling_cname", "dns.dnssec_bogus", "dns.rrsig_expiring",
                 "dns.dnssec_missing", "dns.delegation_mismatch", "dns.lame_delegation", "dns.serial_drift",
                 "dns.caa_forbids_issuer", "tls.mixed_certificates"}
    produced = {code for s in SCENARIOS for code in s.expect} | dedicated
    # Made to happen against real nginx in tests/e2e/test_tls_catalogue.py.
    nginx = {"tls.weak_key", "tls.weak_signature", "tls.profile_violation", "tls.revoked",
             "tls.revocation_unknown", "tls.weak_dh", "tls.client_cert_required"}
    produced |= nginx
    assert produced == set(CATALOGUE)


def test_healthy_report_contents(lab, capsys):
    code, doc = check_json(capsys, "healthy.lab.test", "--config", lab.config_path)
    assert code == 0 and doc["status"] == "ok" and doc["verdict"]["layer"] is None
    assert [l["name"] for l in doc["layers"]] == ["dns", "tls", "http"]
    assert all(l["status"] == "ok" for l in doc["layers"])
    assert {r["resolver"] for r in doc["dns"]["resolvers"]} == {"lab-internal", "lab-public"}
    assert all(r["agrees_with_authoritative"] is True for r in doc["dns"]["resolvers"])
    assert doc["tls"]["verified"] is True and doc["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert [c["position"] for c in doc["tls"]["chain"]] == ["leaf", "intermediate"]
    assert doc["tls"]["chain"][0]["sans"] == ["healthy.lab.test"]
    assert 89 < doc["tls"]["chain"][0]["days_left"] <= 90
    assert doc["http"]["redirect"]["ok"] and doc["http"]["redirect"]["status"] == 301
    assert doc["http"]["health"]["status"] == 200 and doc["http"]["hsts"].startswith("max-age=31536000")
    assert set(doc["phases"]) == {"dns", "connect", "tls", "first_byte"}


def test_expiry_tiers_grade_severity(lab, capsys):
    _, warn = check_json(capsys, "expiring-20d.lab.test", "--config", lab.config_path)
    _, crit = check_json(capsys, "expiring-5d.lab.test", "--config", lab.config_path)
    (w,), (c,) = ([f for f in doc["findings"] if f["code"] == "tls.expiring"] for doc in (warn, crit))
    assert (w["severity"], w["tier"]) == ("warning", "warning")
    assert (c["severity"], c["tier"]) == ("critical", "urgent")


def test_verdict_names_the_layer_and_the_served_certificate(lab, capsys):
    code, out, _ = run(capsys, "check", "wrong-host.lab.test", "--config", lab.config_path)
    assert code == 2
    status_line, first, verdict = out.splitlines()[:3]
    assert status_line.startswith("CRITICAL - TLS: the certificate served for wrong-host.lab.test covers only")
    assert first.startswith("CRITICAL wrong-host.lab.test")
    assert "TLS: the certificate served for wrong-host.lab.test covers only www.other.test, *.other.test" in verdict
    assert "(served by 127.0.0.1:" in verdict
    assert "\x1b[" not in out  # no colour when stdout is not a terminal


def test_outside_in_verdict_picks_dns_before_tls(lab, capsys):
    _, doc = check_json(capsys, "stale-dns.lab.test", "--config", lab.config_path)
    # the old load balancer refuses connections: the verdict is TLS's, and DNS's findings say why
    assert doc["verdict"]["code"] == "tls.connect_failed" and "127.0.0.3" in doc["verdict"]["message"]
    assert "only lab-public still answers 127.0.0.3" in doc["verdict"]["message"]
    public = next(r["server"] for r in doc["dns"]["resolvers"] if r["resolver"] == "lab-public")
    addr, port = public.rsplit(":", 1)
    assert doc["verdict"]["hint"].startswith(f"dig @{addr} -p {port} stale-dns.lab.test and compare with dig @")
    stale = next(f for f in doc["findings"] if f["code"] == "dns.stale_resolver")
    assert "lab-public" in stale["message"] and "127.0.0.3" in stale["message"]


def test_incomplete_chain_hint_points_at_fullchain(lab, capsys):
    _, doc = check_json(capsys, "missing-intermediate.lab.test", "--config", lab.config_path)
    assert "openssl s_client" in doc["verdict"]["hint"] and "fullchain" in doc["verdict"]["hint"]


def test_hint_tailored_by_certificate_source(lab, capsys, tmp_path):
    config = lab.config()
    entry = next(e for e in config["endpoints"] if e["hostname"] == "expired.lab.test")
    entry["certificate_source"] = "cert-manager"
    path = tmp_path / "probes.yaml"
    path.write_text(json.dumps(config))
    _, doc = check_json(capsys, "expired.lab.test", "--config", str(path))
    assert "kubectl get certificate -A" in doc["verdict"]["hint"]


def test_edge_signature_says_which_layer_answered(lab, capsys):
    _, doc = check_json(capsys, "health-503.lab.test", "--config", lab.config_path)
    assert doc["http"]["health"]["edge"].startswith("AWS ALB (no healthy targets)")
    assert "from AWS ALB" in doc["verdict"]["message"]


def test_several_hostnames_give_a_list_and_the_worst_exit(lab, capsys):
    code, doc = check_json(capsys, "healthy.lab.test", "no-hsts.lab.test", "expired.lab.test",
                           "--config", lab.config_path)
    assert [d["status"] for d in doc] == ["ok", "warning", "critical"]
    assert code == 2


# ----------------------------------------------------------- resolver errors
@pytest.fixture()
def blackhole(lab):
    server = lab.loop.start(DnsServer("127.0.0.1", 0))
    server.mode = "blackhole"
    return f"127.0.0.1:{server.port}"


def test_resolver_error_is_warning_while_another_answered(lab, capsys, blackhole):
    good = f"127.0.0.1:{lab.resolvers['internal'].port}"
    code, doc = check_json(capsys, "healthy.lab.test", "--config", lab.config_path, "--resolver", good,
                           "--resolver", blackhole, "--timeout", "2")
    (f,) = doc["findings"]
    assert (f["code"], f["severity"]) == ("dns.resolver_error", "warning")
    assert "TIMEOUT" in f["message"] and code == 1
    assert doc["layers"][1]["status"] == "ok"  # the probe went on with the resolver that answered


def test_resolver_error_is_critical_when_none_answered(lab, capsys, blackhole):
    code, doc = check_json(capsys, "healthy.lab.test", "--resolver", blackhole, "--authoritative", "off",
                           "--timeout", "1")
    assert [(f["code"], f["severity"]) for f in doc["findings"]] == [("dns.resolver_error", "critical")]
    assert [l["status"] for l in doc["layers"]] == ["critical", "skipped", "skipped"]
    assert code == 2


def test_servfail_and_refused_are_resolver_errors(lab, capsys):
    servers = []
    for mode in ("servfail", "refused"):
        s = lab.loop.start(DnsServer("127.0.0.1", 0))
        s.mode = mode
        servers.append(f"127.0.0.1:{s.port}")
    good = f"127.0.0.1:{lab.resolvers['internal'].port}"
    _, doc = check_json(capsys, "healthy.lab.test", "--config", lab.config_path, "--resolver", good,
                        "--resolver", servers[0], "--resolver", servers[1])
    rcodes = sorted(r["rcode"] for r in doc["dns"]["resolvers"])
    assert rcodes == ["NOERROR", "REFUSED", "SERVFAIL"]
    assert [f["code"] for f in doc["findings"]] == ["dns.resolver_error"] * 2


def test_noerror_without_aaaa_is_not_an_error(lab, capsys):
    _, doc = check_json(capsys, "healthy.lab.test", "--config", lab.config_path)
    assert all(r["rcode"] == "NOERROR" and r["answers"] == ["127.0.0.1"] for r in doc["dns"]["resolvers"])


# ------------------------------------------------------- authoritative: auto
def test_authoritative_auto_finds_the_zone_servers(lab, capsys, monkeypatch):
    import prober.layers.dns as dns_layer
    auth = lab.loop.start(DnsServer("127.0.0.1", 0))
    auth.add_zone("auto.test", {"ns1.auto.test": "127.0.0.1"})
    auth.set("www.auto.test", "A", ["127.0.0.1"], ttl=60)
    recursive = lab.loop.start(DnsServer("127.0.0.1", 0))
    recursive.add_zone("auto.test", {"ns1.auto.test": "127.0.0.1"})
    recursive.set("www.auto.test", "A", ["127.0.0.8"], ttl=3600)  # a stale cache
    monkeypatch.setattr(dns_layer, "AUTHORITATIVE_PORT", auth.port)
    _, doc = check_json(capsys, "www.auto.test", "--resolver", f"127.0.0.1:{recursive.port}",
                        "--authoritative", "auto", "--connect-to", "127.0.0.1", "--https-port", "1",
                        "--timeout", "2")
    assert doc["dns"]["zone"] == "auto.test"
    assert [a["answers"] for a in doc["dns"]["authoritative"]] == [["127.0.0.1"]]
    assert any(f["code"] == "dns.stale_resolver" for f in doc["findings"])
    asked = [q for q in auth.queries if q.qname.rstrip(".") == "www.auto.test"]
    assert asked and all(not q.rd for q in asked)  # the zone's servers are asked with RD=0


# ------------------------------------------------------------- usage / config
def test_bad_flags_are_unknown_with_one_line(capsys):
    code, out, err = run(capsys, "check", "x.lab.test", "--resolver", "nonsense=1.2.3.4")
    assert code == 3 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["check"])
    assert exc.value.code == 3


def test_bad_config_lists_each_problem_without_traceback(tmp_path):
    bad = tmp_path / "probes.yaml"
    bad.write_text("endpoints:\n  - hostname: a.lab.test\n    http:\n      health_path: healthz\n"
                   "  - hostname: a.lab.test\n    timeout: soon\n    colour: blue\n")
    for argv in (["validate", str(bad)], ["check", "a.lab.test", "--config", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "prober.cli", *argv], capture_output=True, text=True,
                              timeout=30)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 3 and "Traceback" not in text
        assert "health_path" in text and "duplicate" in text and "soon" in text and "colour" in text
        assert str(bad) in text and ":4:" in text


def test_validate_accepts_the_example_and_the_lab(lab, capsys):
    root = Path(__file__).parent.parent
    assert run(capsys, "validate", str(root / "probes.yaml")) == (0, "", "")
    assert run(capsys, "validate", lab.config_path) == (0, "", "")


def test_help_is_light():
    code = ("import sys, prober.cli\n"
            "try:\n    prober.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('httpx', 'dns', 'cryptography', 'yaml', 'prometheus_client') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
    assert out.strip().endswith("[]")


def test_ca_file_broken_after_load_is_unknown_not_a_traceback(lab, capsys, tmp_path):
    import asyncio
    import shutil

    from prober.config import build_endpoint, load_config
    from prober.engine import probe
    ca = tmp_path / "ca.pem"
    shutil.copy(lab.bundle, ca)
    contract = load_config(lab.config_path).by_hostname()["healthy.lab.test"]
    endpoint = build_endpoint("healthy.lab.test", {"ca_file": str(ca)}, base=contract)
    ca.write_text("rotated by hand, badly\n")  # the file breaks between config load and probe
    report = asyncio.run(probe(endpoint))
    assert report.status == "unknown"
    assert [l.status for l in report.layers] == ["ok", "unknown", "unknown"]
    assert "trust store" in report.layers[1].reason
    code, out, err = run(capsys, "check", "healthy.lab.test", "--config", lab.config_path, "--ca-file", str(ca))
    assert code == 3 and "holds no PEM certificate" in err and "Traceback" not in err


from prober.layers.tls import PERIODIC_KINDS

# The periodic handshakes a listener gets once per hour: weak protocol, RSA-only, weak suites, DHE.
PERIODIC = len(PERIODIC_KINDS)


def test_periodic_handshakes_are_made_hourly_not_every_probe(lab, monkeypatch):
    """In one long-running process the extra handshakes happen once per listener per hour."""
    import asyncio

    import prober.layers.tls as tls_layer
    from prober.config import load_config
    from prober.engine import probe
    monkeypatch.setattr(tls_layer, "_periodic_seen", {})
    contracts = load_config(lab.config_path).by_hostname()
    weak, strong = contracts["weak-tls.lab.test"], contracts["healthy.lab.test"]

    def probe_twice(endpoint):
        server = lab.tls[endpoint.hostname.split(".")[0]]
        before = server.connections
        reports = [asyncio.run(probe(endpoint)) for _ in range(2)]
        return reports, server.connections - before

    reports, connections = probe_twice(weak)
    assert [sorted(f.code for f in r.findings) for r in reports] == [["tls.weak_cipher", "tls.weak_protocol"]] * 2
    assert connections == 2 + PERIODIC  # two probes, one round of periodic handshakes
    reports, connections = probe_twice(strong)
    assert all(r.status == "ok" for r in reports) and connections == 2 + PERIODIC  # refusals are remembered too
    monkeypatch.setattr(tls_layer, "WEAK_RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(tls_layer, "_periodic_seen", {})
    assert probe_twice(weak)[1] == 2 * (1 + PERIODIC)  # without the cache: all of them on every probe


def test_probes_leave_no_file_descriptor_behind(lab):
    """Three resolvers, an authoritative server, TLS, redirect, health: 20 probes, then the same fds."""
    import asyncio
    import os

    from prober.config import load_config
    from prober.engine import probe
    endpoint = load_config(lab.config_path).by_hostname()["healthy.lab.test"]

    async def leftover() -> int:  # in one running loop, as in `prober serve`: nothing is collected for us
        await asyncio.gather(*(probe(endpoint) for _ in range(5)))  # warm: contexts, trust store
        await asyncio.sleep(0.2)
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(4):
            await asyncio.gather(*(probe(endpoint) for _ in range(5)))
        await asyncio.sleep(0.2)  # closed transports release their sockets on the next loop turns
        return len(os.listdir("/proc/self/fd")) - before

    assert asyncio.run(leftover()) <= 2  # the lab servers' own accept churn, not several per probe


def test_main_handshake_offer_does_not_depend_on_how_python_was_built():
    """Distribution builds of Python inherit OpenSSL's system defaults (TLS 1.0, static RSA, CBC-SHA1);
    the main handshake sets CPython's own floor and suites, so a verdict is the same on every build."""
    import ssl

    from prober.layers.tls import _error_text, probe_context

    ctx = probe_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    names = {c["name"] for c in ctx.get_ciphers()}
    assert "TLS_AES_128_GCM_SHA256" in names and "ECDHE-RSA-AES128-GCM-SHA256" in names
    assert not {n for n in names if n.endswith("-SHA") or n.startswith(("AES", "DES", "PSK", "RSA-PSK"))}
    # an ssl.SSLError without a reason code, as some OpenSSL paths raise it, still reads as words
    text = _error_text(ssl.SSLError(1, "[SSL] legacy sigalg disallowed or unsupported (_ssl.c:992)"))
    assert "[SSL" not in text and "_ssl.c" not in text
    assert "signature algorithm this client refuses" in text
