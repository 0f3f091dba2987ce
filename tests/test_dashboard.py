"""The Grafana dashboard: well-formed, every panel's PromQL accepted by promtool, only documented metrics.

That every panel returns data from a real Prometheus scraping `prober serve`
is tests/e2e/test_dashboard_prometheus.py; that the chart ships it is
tests/test_chart.py.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dashboard import DASHBOARD, load, panels, queries, write_recording_rules

ROOT = Path(__file__).resolve().parents[1]
METRICS_DOC = ROOT / "docs" / "metrics.md"
_METRIC = re.compile(r"\bprober_[a-z_]+\b")
_SUFFIXES = ("_bucket", "_count", "_sum")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    message = "promtool not found on PATH: install the Debian package prometheus (apt-get install prometheus)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: the dashboard checks must run)")
    pytest.skip(message)


def test_every_panel_query_parses_as_a_recording_rule(tmp_path: Path) -> None:
    rules = write_recording_rules(tmp_path / "dashboard-rules.yaml")
    done = subprocess.run([_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries())} rules found" in done.stdout


def test_a_broken_query_is_caught(tmp_path: Path) -> None:
    """The check above would notice: promtool refuses what Prometheus could not parse."""
    bad = tmp_path / "bad.yaml"
    bad.write_text('groups: [{name: g, rules: [{record: "dashboard:x:a", expr: "sum by (code (prober_finding)"}]}]\n')
    done = subprocess.run([_promtool(), "check", "rules", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def test_panels_cover_the_incident_questions() -> None:
    titles = {p["title"] for p in panels()}
    assert {"Endpoints by status", "Endpoints by owner team", "Certificates by days left",
            "Findings over time by code", "Resolver latency", "Resolver agreement with the authoritative servers",
            "Scheduler lag"} <= titles


def test_the_dashboard_is_well_formed() -> None:
    doc = load()
    assert doc["uid"] == "prober-overview" and doc["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    names = [v["name"] for v in doc["templating"]["list"]]
    assert names == ["datasource"]
    occupied: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"{p['title']} overlaps another panel"
        occupied |= cells
    for p in panels(doc):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), (p["title"], t["refId"])


def test_only_documented_metrics_are_read() -> None:
    documented = set(_METRIC.findall(METRICS_DOC.read_text()))
    used = set()
    for q in queries():
        for name in _METRIC.findall(q.expr):
            used.add(next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name))
    assert used and used <= documented, f"not in docs/metrics.md: {sorted(used - documented)}"


def test_the_json_is_the_one_copy() -> None:
    copies = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.json")
              if p != DASHBOARD and ".git" not in p.parts and '"prober-overview"' in p.read_text(errors="replace")]
    assert copies == []
