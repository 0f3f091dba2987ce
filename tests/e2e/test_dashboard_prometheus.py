"""Every panel of the Grafana dashboard returns data from a real Prometheus scraping `prober serve`.

The same nginx sites, knot and unbound as the alert tier; Prometheus scrapes
every second and is asked each panel's query (with Grafana's variables put
in, tests/dashboard.py), as Grafana would.  Beyond "not empty", the panels
that count must count what the sites are.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboard import DASHBOARD, Query, queries
from edge import SITES, Edge
from harness import STARTED, free_port, guard_violations, need_file, stop_since, tool, wait_for
from servers import DnsLab, Prometheus, ProberServe, start_prober_serve, start_prometheus

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
TIMEOUT = 2.0
WAIT = 60.0
QUERIES = queries()


@dataclass
class Stack:
    serve: ProberServe
    prometheus: Prometheus


@pytest.fixture(scope="module")
def stack(edge: Edge, dns_lab: DnsLab, e2e_dir: Path) -> Iterator[Stack]:
    need_file(DASHBOARD, "the Grafana dashboard")
    tool("prometheus")
    workdir = e2e_dir / "dashboard"
    workdir.mkdir()
    config = edge.write_config(workdir / "serve.yaml", [edge.entry(s, TIMEOUT, dns_lab.contract()) for s in SITES],
                               interval=INTERVAL)
    mark = len(STARTED)
    try:
        serve = start_prober_serve(workdir, config, edge.address, free_port(edge.address))
        prometheus = start_prometheus(workdir, edge.address, free_port(edge.address),
                                      serve.url.removeprefix("http://"), [])
        yield Stack(serve, prometheus)
        assert not guard_violations(serve.guard_log)
    finally:
        stop_since(mark)


def _finite(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in result if math.isfinite(float(s["value"][1]))]


@pytest.fixture(scope="module")
def answers(stack: Stack) -> dict[Query, list[dict[str, Any]]]:
    """Each panel query's instant result, once every one has data (probes of every site, two scrapes)."""
    def every_panel() -> dict[Query, list[dict[str, Any]]] | None:
        got = {q: _finite(stack.prometheus.query(q.expr)) for q in QUERIES}
        return got if all(got.values()) and _counts(got) == _expected_status_counts() else None

    return wait_for("every dashboard query to return data", every_panel, WAIT, 1.0)


def _by(answers: dict[Query, list[dict[str, Any]]], panel: str, ref: str = "A") -> list[dict[str, Any]]:
    return next(v for q, v in answers.items() if q.panel == panel and q.ref == ref)


def _counts(answers: dict[Query, list[dict[str, Any]]]) -> dict[str, int]:
    return {s["metric"]["status"]: int(float(s["value"][1])) for s in _by(answers, "Endpoints by status")}


def _expected_status_counts() -> dict[str, int]:
    return dict(Counter(s.status for s in SITES))


@pytest.mark.parametrize("query", QUERIES, ids=[q.record for q in QUERIES])
def test_every_panel_returns_data(answers: dict[Query, list[dict[str, Any]]], query: Query) -> None:
    assert answers[query], f"{query.panel} ({query.ref}) returned nothing: {query.expr}"


def test_the_counting_panels_count_the_sites(answers: dict[Query, list[dict[str, Any]]]) -> None:
    assert _counts(answers) == _expected_status_counts()
    teams = {s["metric"]["owner_team"]: float(s["value"][1]) for s in _by(answers, "Endpoints by owner team")}
    assert teams == {f"team-{s.name}": 1.0 for s in SITES}
    failing = {s["metric"]["owner_team"] for s in _by(answers, "Endpoints by owner team", "B")}
    assert failing == {f"team-{s.name}" for s in SITES if s.status == "critical"}
    codes = {s["metric"]["code"] for s in _by(answers, "Findings over time by code")}
    assert codes == {code for s in SITES for code in s.expect}


def test_the_certificate_and_resolver_panels_say_what_the_sites_are(
        answers: dict[Query, list[dict[str, Any]]]) -> None:
    days = {s["metric"]["hostname"]: float(s["value"][1]) for s in _by(answers, "Certificates by days left")}
    assert days["expired.e2e.test"] < 0 and 9 < days["expiring.e2e.test"] <= 10
    tiers = {s["metric"]["tier"]: int(float(s["value"][1]))
             for s in _by(answers, "Endpoints within each expiry tier")}
    assert tiers["outage"] == 1 and tiers["warning"] >= 2 and tiers["high"] >= 2  # expired; expired + expiring
    agree = {s["metric"]["resolver"]: float(s["value"][1])
             for s in _by(answers, "Resolver agreement with the authoritative servers")}
    assert agree == {"unbound-1": 1.0, "unbound-2": 1.0}
    lag = _by(answers, "Scheduler lag")
    assert len(lag) == 1 and 0 <= float(lag[0]["value"][1]) < 1.0
