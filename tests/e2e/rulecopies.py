"""Test copies of the shipped alert rules, written to a tmp dir (the shipped file is never touched).

* fast_copy: the shipped rules with only `for:` lowered, so a test Prometheus
  raises in seconds what production raises in minutes.  Names, labels and
  expressions stay byte-for-byte the shipped ones (checked on every copy).
* mutant_copy: for each named alert, a copy whose primary metric is renamed,
  as when an exporter renames a metric and nobody updates the rules.  It is
  labelled `e2e_mutant` so it can sit next to the real rules in one
  Prometheus: the real alert fires, its mutant must stay silent.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from harness import REPO

RULES = REPO / "helm" / "prober" / "files" / "alerts.yaml"
MUTANT_GROUP = "e2e-mutants"
_METRIC = re.compile(r"\bprober_[a-z_]+\b")


def load(path: Path = RULES) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def alert_rules(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def _without_for(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    return doc


def fast_copy(dest: Path, hold: str = "0s", source: Path = RULES) -> Path:
    shipped = load(source)
    fast = copy.deepcopy(shipped)
    for rule in alert_rules(fast).values():
        rule["for"] = hold
    assert _without_for(fast) == _without_for(shipped), "the test copy may differ from the shipped rules in `for` only"
    dest.write_text(f"# {source.name} with every `for:` set to {hold}; written by tests/e2e/rulecopies.py\n"
                    + yaml.safe_dump(fast, sort_keys=False, width=1000))
    return dest


def primary_metric(expr: str) -> str:
    """The first metric an expression selects: the one whose series make the alert."""
    found = _METRIC.search(expr)
    if found is None:
        raise ValueError(f"no prober_ metric in {expr!r}")
    return found.group(0)


def mutant_copy(dest: Path, alerts: list[str], hold: str = "0s", source: Path = RULES) -> dict[str, str]:
    """Write one mutant per alert into dest; return alert -> the metric name that was broken."""
    rules = alert_rules(load(source))
    mutants, broken = [], {}
    for name in alerts:
        rule = copy.deepcopy(rules[name])
        metric = primary_metric(rule["expr"])
        rule["expr"] = re.sub(rf"\b{metric}\b", f"{metric}_renamed", rule["expr"])
        rule["for"] = hold
        rule["labels"] = {**rule.get("labels", {}), "e2e_mutant": metric}
        mutants.append(rule)
        broken[name] = metric
    dest.write_text(yaml.safe_dump({"groups": [{"name": MUTANT_GROUP, "rules": mutants}]}, sort_keys=False,
                                   width=1000))
    return broken
