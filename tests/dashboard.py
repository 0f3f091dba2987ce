"""The Grafana dashboard's queries, as the unit tests and the e2e tier read them.

helm/prober/files/grafana-dashboard.json is the one copy.  Grafana replaces
its variables before a query reaches Prometheus; the tests do the same with
fixed values, so the expression Prometheus sees is the panel's own.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DASHBOARD = Path(__file__).resolve().parents[1] / "helm" / "prober" / "files" / "grafana-dashboard.json"
# What Grafana would put in for each variable a query may use.
VARIABLES = {"$__rate_interval": "1m"}
_NAME = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str  # with the variables replaced
    instant: bool

    @property
    def record(self) -> str:
        """A recording-rule name for this query: dashboard:<panel>:<ref>."""
        return f"dashboard:{_NAME.sub('_', self.panel.lower()).strip('_')}:{self.ref.lower()}"


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel that queries (rows left out)."""
    return [p for p in (doc or load())["panels"] if p["type"] != "row"]


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def queries(doc: dict[str, Any] | None = None) -> list[Query]:
    return [Query(p["title"], t["refId"], substitute(t["expr"]), bool(t.get("instant")))
            for p in panels(doc) for t in p["targets"]]


def write_recording_rules(dest: Path) -> Path:
    """Every panel query wrapped as a recording rule, for `promtool check rules`."""
    rules = [{"record": q.record, "expr": q.expr} for q in queries()]
    dest.write_text(yaml.safe_dump({"groups": [{"name": "grafana-dashboard", "rules": rules}]},
                                   sort_keys=False, width=1000))
    return dest
