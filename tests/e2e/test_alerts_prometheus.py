"""`prober serve` scraped by a real Prometheus that evaluates the project's real alert rules.

The broken nginx sites must raise exactly their alerts, the healthy one
none: this proves that the exporter's metric names and labels and the rules
in helm/prober/files/alerts.yaml agree.  The copy Prometheus loads differs
from the shipped file in `for:` only.

The mutation tests prove the tier would notice drift: next to each real
rule, a copy whose primary metric is renamed is evaluated by the same
Prometheus on the same data, and must stay silent while the real one fires.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge import SITES, Edge
from harness import REPO, STARTED, free_port, guard_violations, need_file, run, stop_since, tool, wait_for
from rulecopies import MUTANT_GROUP, RULES, alert_rules, fast_copy, load, mutant_copy
from servers import DnsLab, Prometheus, ProberServe, start_prober_serve, start_prometheus

pytestmark = pytest.mark.e2e

INTERVAL = 2.0  # prober serve: every endpoint every 2 s
TIMEOUT = 2.0  # per probe (must not exceed the interval)
WAIT = 60.0  # for the alerts to show up
EXPECTED: dict[str, set[str]] = {s.hostname: set(s.alerts) for s in SITES}
MUTATED: list[str] = sorted({a for s in SITES for a in s.alerts})
SELF_ALERTS = ("ProberAbsent", "ProberProbesNotRunning", "ProberConfigReloadFailed")


@dataclass
class Stack:
    serve: ProberServe
    prometheus: Prometheus
    broken: dict[str, str]  # alert -> the metric its mutant no longer finds
    rules_copy: Path
    mutants: Path


@pytest.fixture(scope="module")
def stack(edge: Edge, dns_lab: DnsLab, e2e_dir: Path) -> Iterator[Stack]:
    need_file(RULES, "the alert rules")
    need_file(REPO / "prober" / "service" / "app.py", "prober serve")
    tool("prometheus")
    workdir = e2e_dir / "prometheus"
    workdir.mkdir()
    config = edge.write_config(workdir / "serve.yaml", [edge.entry(s, TIMEOUT, dns_lab.contract()) for s in SITES],
                               interval=INTERVAL)
    rules_copy = fast_copy(workdir / "rules.yaml")
    mutants = workdir / "mutants.yaml"
    broken = mutant_copy(mutants, MUTATED)
    mark = len(STARTED)
    try:
        serve = start_prober_serve(workdir, config, edge.address, free_port(edge.address))
        prometheus = start_prometheus(workdir, edge.address, free_port(edge.address),
                                      serve.url.removeprefix("http://"), [rules_copy, mutants])
        yield Stack(serve, prometheus, broken, rules_copy, mutants)
    finally:
        stop_since(mark)


def _real(alert: dict[str, Any]) -> bool:
    return "e2e_mutant" not in alert["labels"]


def _by_host(alerts: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {host: set() for host in EXPECTED}
    for alert in alerts:
        host = alert["labels"].get("hostname")
        if host is not None and _real(alert):
            out.setdefault(host, set()).add(alert["labels"]["alertname"])
    return out


@pytest.fixture(scope="module")
def raised(stack: Stack) -> tuple[list[dict[str, Any]], float]:
    """Every expected alert pending or firing (bounded wait); returns the alerts and when that was."""
    def complete() -> list[dict[str, Any]] | None:
        alerts = stack.prometheus.alerts()
        by_host = _by_host(alerts)
        return alerts if all(want <= by_host[host] for host, want in EXPECTED.items()) else None

    wait_for("every broken site's alert to be pending or firing", complete, WAIT)
    at = datetime.now().timestamp()
    # A few more evaluations: whatever else would fire on this data has had the time to.
    wait_for("three more rule evaluations", lambda: _evaluated_since(stack.prometheus, at + 2.5), 20)
    return stack.prometheus.alerts(), at


def _timestamp(text: str) -> float:
    """Prometheus' RFC 3339 with nanoseconds -> unix seconds."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


def _rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [r for g in prometheus.rule_groups() for r in g["rules"] if r["type"] == "alerting"]


def _evaluated_since(prometheus: Prometheus, at: float) -> bool:
    return all(_timestamp(r["lastEvaluation"]) > at for r in _rules(prometheus))


def test_the_shipped_rules_raise_exactly_each_sites_alerts(raised: tuple[list[dict[str, Any]], float]) -> None:
    alerts, _ = raised
    got = _by_host(alerts)
    assert {h: got[h] for h in EXPECTED} == EXPECTED
    assert got["healthy.e2e.test"] == set()
    assert set(got) == set(EXPECTED), "an alert for a hostname nobody probes"


def test_alerts_carry_the_contracts_owner_and_severity(raised: tuple[list[dict[str, Any]], float]) -> None:
    alerts, _ = raised
    shipped = alert_rules(load())
    for alert in filter(_real, alerts):
        labels = alert["labels"]
        if "hostname" not in labels:
            continue
        name = labels["hostname"].split(".")[0]
        assert (labels["owner_team"], labels["app_owner"]) == (f"team-{name}", f"app-{name}"), labels
        assert labels["severity"] == shipped[labels["alertname"]]["labels"]["severity"]
        assert alert["state"] in ("pending", "firing")


def test_the_probers_own_alerts_stay_quiet(raised: tuple[list[dict[str, Any]], float], stack: Stack) -> None:
    alerts, _ = raised
    assert not [a for a in alerts if a["labels"]["alertname"] in SELF_ALERTS]
    configured = stack.prometheus.query("prober_endpoints_configured")
    assert [float(s["value"][1]) for s in configured] == [len(SITES)]


@pytest.mark.parametrize("alert", MUTATED)
def test_a_renamed_metric_silences_its_alert(alert: str, stack: Stack, raised: tuple[list[dict[str, Any]], float]
                                              ) -> None:
    alerts, fired_at = raised
    metric = stack.broken[alert]
    hosts = sorted(h for h, want in EXPECTED.items() if alert in want)
    rule = next(r for g in stack.prometheus.rule_groups() if g["name"] == MUTANT_GROUP
                for r in g["rules"] if r["name"] == alert)
    assert f"{metric}_renamed" in rule["query"]
    # Evaluated, without error, on the same data on which the real rule fired: the drift is silent.
    assert rule["health"] == "ok" and _timestamp(rule["lastEvaluation"]) > fired_at
    assert rule["state"] == "inactive" and rule["alerts"] == []
    assert not [a for a in stack.prometheus.alerts() if a["labels"].get("e2e_mutant") == metric
                and a["labels"]["alertname"] == alert]
    real_hosts = sorted(a["labels"]["hostname"] for a in alerts if _real(a) and a["labels"]["alertname"] == alert)
    assert real_hosts == hosts
    assert stack.prometheus.query(rule["query"]) == []


def test_static_checks_pass_the_copies_so_only_the_tier_sees_the_drift(stack: Stack) -> None:
    for path in (stack.rules_copy, stack.mutants):
        assert "SUCCESS" in run([tool("promtool"), "check", "rules", path]).stdout


def test_prober_serve_only_dialled_loopback(raised: tuple[list[dict[str, Any]], float], stack: Stack) -> None:
    assert stack.serve.service.running
    assert guard_violations(stack.serve.guard_log) == []
