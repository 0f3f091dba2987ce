"""The alert rules, their promtool unit tests, the runbook and the sample Alertmanager config.

promtool and amtool do the checking: the rules must load and pass
tests/rules/*.yaml, and the Alertmanager sample must route and inhibit the way
docs/alerts.md says.  Inhibition is proven against a real Alertmanager on
loopback.  Without the tools a test skips (fails when CI=true) and says which
Debian package to install.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from prober.model import CATALOGUE, EXPIRY_TIERS

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "helm" / "prober" / "files" / "alerts.yaml"
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.yaml"))
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTS_DOC = ROOT / "docs" / "alerts.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOK_URL = "https://github.com/prober-dev/prober/blob/main/docs/runbook.md#"

# docs/alerts.md: the certificate lifecycle tiers are the whole severity vocabulary.
SEVERITIES = EXPIRY_TIERS
PAGING = {"outage", "incident"}
JOIN = "* on (hostname) group_left (owner_team, app_owner)"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found on PATH: install the Debian package {package} (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: the rule checks must run)")
    pytest.skip(message)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def _alerts() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"]}


# --------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------
def test_promtool_accepts_the_rules_file() -> None:
    promtool = _tool("promtool", "prometheus")
    done = _run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = _tool("promtool", "prometheus")
    assert RULE_TESTS, "tests/rules/*.yaml is empty"
    done = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), done.stdout


def test_every_alert_is_seen_firing_by_a_unit_test() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            fired |= {t["alertname"] for t in group.get("alert_rule_test", ()) if t.get("exp_alerts")}
    assert fired == set(_alerts())


# --------------------------------------------------------------------------
# The rules file as an interface (the chart walks it by alert name)
# --------------------------------------------------------------------------
def test_every_alert_carries_the_labels_and_annotations_routing_needs() -> None:
    for name, rule in _alerts().items():
        labels, notes = rule["labels"], rule["annotations"]
        assert labels["severity"] in SEVERITIES, name
        assert re.fullmatch(r"\d+[mh]", rule["for"]), name
        # owner_team is joined from the contract, or fixed for the prober's own alerts
        assert (JOIN in rule["expr"]) != ("owner_team" in labels), name
        assert notes["runbook"] == RUNBOOK_URL + name.lower()
        assert notes["summary"] and notes["description"], name


def test_rules_read_only_documented_metrics_and_catalogued_codes() -> None:
    contract = set(re.findall(r"^\| `(prober_\w+)`", METRICS_DOC.read_text(), re.M))
    text = RULES.read_text()
    used = set(re.findall(r"\bprober_\w+", text))
    assert used <= contract, used - contract
    codes = {f"{layer}.{name}" for layer, name in re.findall(r"\b(dns|tls|http)\\*\.(\w+)", text)}
    assert codes and codes <= set(CATALOGUE), codes - set(CATALOGUE)


def test_expiry_bands_compare_against_the_contract_thresholds() -> None:
    alerts = _alerts()
    for i, tier in enumerate(EXPIRY_TIERS):
        rule = alerts[f"ProberCertificateExpiry{tier.capitalize()}"]
        assert rule["labels"]["severity"] == tier
        bounds = re.findall(r'prober_expiry_threshold_days\{tier="(\w+)"\}', rule["expr"])
        assert bounds == list(EXPIRY_TIERS[i:i + 2]), tier  # its own tier, then the next one down
        assert not re.search(r"[<>]=?\s*\d", rule["expr"]), f"{tier}: a threshold literal"


# Codes that can be critical but have an alert of their own, so they never
# make an endpoint "down".  A new critical code in the catalogue fails the test
# below until it is put here or in the down codes of the rules.
OWN_ALERT = {
    "dns.private_address": "ProberDNSPublicNameResolvesPrivate",
    "dns.publicly_resolvable": "ProberDNSInternalNamePubliclyResolvable",
    "tls.hostname_mismatch": "ProberTLSHostnameMismatch",
    "tls.untrusted": "ProberTLSChainNotVerified",
    "tls.incomplete_chain": "ProberTLSChainNotVerified",
    "tls.not_yet_valid": "ProberTLSChainNotVerified",
    "tls.expired": "ProberCertificateExpiryOutage",
    "tls.expiring": "ProberCertificateExpiryUrgent",
    "tls.renewal_overdue": "ProberCertificateRenewalWindowPassed",
    "dns.dnssec_bogus": "ProberDNSSECBogus",
    "dns.dangling_cname": "ProberDNSDanglingCNAME",
    "http.waf_blocked": "ProberHTTPWAFBlocked",
    "tls.revoked": "ProberTLSCertificateRevoked",
    "tls.weak_key": "ProberTLSWeakKeyOrSignature",
    "tls.weak_signature": "ProberTLSWeakKeyOrSignature",
    "tls.weak_cipher": "ProberTLSWeakCipherRefused",
    "tls.weak_dh": "ProberTLSWeakCipherRefused",
    "tls.client_cert_required": "ProberTLSClientCertificateRequired",
}


def _code_regexes(promql: str) -> list[str]:
    """The code=~"..." regexes in a PromQL text, as written."""
    return re.findall(r'code=~"([^"]+)"', promql)


def _codes_matching(promql_regex: str) -> set[str]:
    # A PromQL string doubles the backslash: "dns\\.x" is the regex dns\.x
    pattern = re.compile(promql_regex.replace("\\\\", "\\"))
    return {code for code in CATALOGUE if pattern.fullmatch(code)}


def test_every_critical_code_is_down_or_has_an_alert_of_its_own() -> None:
    alerts = _alerts()
    can_be_critical = {c for c, i in CATALOGUE.items() if i.severity == "critical" or "critical" in i.rule}
    assert set(OWN_ALERT) <= can_be_critical and set(OWN_ALERT.values()) <= set(alerts)
    partial = alerts["ProberEndpointFailingFromSomeLocations"]
    (everywhere,) = _code_regexes(partial["expr"])
    assert _code_regexes(partial["annotations"]["description"]) == [everywhere]
    down = _codes_matching(everywhere)
    assert down == can_be_critical - set(OWN_ALERT)
    for layer in ("dns", "tls", "http"):
        this_layer, any_layer = _code_regexes(alerts[f"ProberEndpointDown{layer.upper()}"]["expr"])
        assert any_layer == everywhere, layer
        assert _codes_matching(this_layer) == {c for c in down if CATALOGUE[c].layer == layer}


# --------------------------------------------------------------------------
# Docs: one runbook section per alert, the table in docs/alerts.md
# --------------------------------------------------------------------------
def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (\S+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_runbook_has_a_section_per_alert_starting_with_prober_check() -> None:
    sections = _sections(RUNBOOK.read_text())
    alerts = _alerts()
    assert {s for s in sections if s.startswith("Prober")} == set(alerts)
    for name in alerts:
        body = sections[name]
        first_command = re.search(r"```sh\n(.*)", body)
        assert first_command and first_command.group(1).startswith("prober check"), name
        assert "**Meaning**" in body and "**Impact**" in body, name


def test_alerts_doc_table_matches_the_rules() -> None:
    rows = {}
    for line in ALERTS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"\[`Prober\w+`\]\(.*\)", cells[0]):
            rows[cells[0].split("`")[1]] = (cells[1], cells[2])
    assert rows == {n: (r["labels"]["severity"], r["for"]) for n, r in _alerts().items()}


# --------------------------------------------------------------------------
# Alertmanager: config, routes, inhibition
# --------------------------------------------------------------------------
def test_amtool_accepts_the_sample_config() -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    done = _run(amtool, "check-config", str(AM_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr


ROUTES = [
    (["owner_team=platform-edge", "severity=outage"], "platform-edge-pager"),
    (["owner_team=platform-edge", "severity=incident"], "platform-edge-pager"),
    (["owner_team=platform-edge", "severity=urgent"], "platform-edge-ticket"),
    (["owner_team=platform-edge", "severity=warning"], "platform-edge-chat"),
    (["owner_team=order-platform", "severity=outage"], "order-platform-pager"),
    (["owner_team=order-platform", "severity=high"], "order-platform-ticket"),
    (["owner_team=order-platform", "severity=warning"], "order-platform-chat"),
    (["owner_team=prober", "severity=urgent", "alertname=ProberAbsent"], "platform-edge-ticket"),
    (["owner_team=someone-else", "severity=outage"], "default-pager"),
    (["severity=incident"], "default-pager"),
    (["severity=high"], "default-ticket"),
    (["severity=warning"], "default-chat"),
]


@pytest.mark.parametrize(("labels", "receiver"), ROUTES, ids=[" ".join(r[0]) for r in ROUTES])
def test_alertmanager_routes_by_owner_team_then_severity(labels: list[str], receiver: str) -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    done = _run(amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}",
                f"--verify.receivers={receiver}", *labels)
    assert done.returncode == 0, f"{labels} went to {done.stdout.strip()}, not {receiver}"


def test_every_severity_has_a_route_that_pages_only_outage_and_incident() -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    for severity in SEVERITIES:
        done = _run(amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}",
                    "owner_team=order-platform", f"severity={severity}")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("-pager") == (severity in PAGING), (severity, done.stdout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
        is_json = response.headers.get_content_type() == "application/json"
    return json.loads(raw) if raw and is_json else raw


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _tool("prometheus-alertmanager", "prometheus-alertmanager")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    storage = tmp_path_factory.mktemp("alertmanager")
    proc = subprocess.Popen(
        [binary, f"--config.file={AM_CONFIG}", f"--storage.path={storage}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _http(f"{base}/-/ready")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"alertmanager did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _states(base: str, alerts: list[dict[str, str]],
            expected: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """Post the alerts; return (alertname, hostname) -> state once it is as expected, or at the deadline."""
    _http(f"{base}/api/v2/alerts", [{"labels": a} for a in alerts])
    deadline = time.monotonic() + 10
    while True:
        # the inhibitor learns of new alerts asynchronously, so poll
        listed = _http(f"{base}/api/v2/alerts")
        got = {(a["labels"]["alertname"], a["labels"].get("hostname", "")): a["status"]["state"] for a in listed}
        got = {k: got.get(k) for k in expected}
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _alert(name: str, hostname: str, severity: str, layer: str | None = None) -> dict[str, str]:
    labels = {"alertname": name, "hostname": hostname, "severity": severity, "owner_team": "platform-edge"}
    return labels | ({"layer": layer} if layer else {})


def test_a_higher_expiry_tier_mutes_the_lower_ones_of_the_same_hostname(alertmanager: str) -> None:
    tiers = [_alert(f"ProberCertificateExpiry{t.capitalize()}", "tiers.example.com", t, "tls")
             for t in EXPIRY_TIERS[1:]]  # high .. outage, all at once (say, an HA pair out of step)
    other = _alert("ProberCertificateExpiryWarning", "other.example.com", "warning", "tls")
    expected = {(a["alertname"], a["hostname"]): "suppressed" for a in tiers}
    expected[("ProberCertificateExpiryOutage", "tiers.example.com")] = "active"
    expected[("ProberCertificateExpiryWarning", "other.example.com")] = "active"
    assert _states(alertmanager, [*tiers, other], expected) == expected


def test_dns_down_mutes_tls_and_http_alerts_of_the_same_hostname(alertmanager: str) -> None:
    host = "outside-in.example.com"
    alerts = [
        _alert("ProberEndpointDownDNS", host, "outage", "dns"),
        _alert("ProberDNSResolversDisagree", host, "warning", "dns"),
        _alert("ProberEndpointDownTLS", host, "outage", "tls"),
        _alert("ProberHTTPMissingHSTS", host, "warning", "http"),
        _alert("ProberEndpointDownTLS", "elsewhere.example.com", "outage", "tls"),
    ]
    expected = {
        ("ProberEndpointDownDNS", host): "active",
        ("ProberDNSResolversDisagree", host): "active",  # same layer: not a consequence
        ("ProberEndpointDownTLS", host): "suppressed",
        ("ProberHTTPMissingHSTS", host): "suppressed",
        ("ProberEndpointDownTLS", "elsewhere.example.com"): "active",
    }
    assert _states(alertmanager, alerts, expected) == expected
