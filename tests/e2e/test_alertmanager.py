"""The sample Alertmanager config (deploy/alertmanager/alertmanager.yml): routing and inhibition, for real.

Routing is checked with amtool against the shipped file as it is.  Inhibition
is checked on a running Alertmanager: alerts are posted to /api/v2/alerts
with the labels the shipped rules give them, and /api/v2/alerts must show
every lower expiry tier (and every outer-layer consequence) suppressed by
the higher one for the same hostname, and nothing else.  The copy it runs
differs from the shipped file only in where the webhooks point (a sink on
this session's loopback address) and in a one-second group_wait, so the
deliveries can be checked too: routed to the right team's receiver, and
never carrying a suppressed alert.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from edge import Edge
from harness import REPO, STARTED, free_port, need_file, run, stop_since, tool, wait_for
from rulecopies import alert_rules, load
from servers import Alertmanager, WebhookSink, now_iso, start_alertmanager

pytestmark = pytest.mark.e2e

CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
TEAM = "order-platform"
TIERS = ("Outage", "Incident", "Urgent", "High", "Warning")  # ProberCertificateExpiry<tier>, highest first

ROUTES: list[tuple[dict[str, str], str]] = [
    ({"owner_team": "order-platform", "severity": "outage"}, "order-platform-pager"),
    ({"owner_team": "order-platform", "severity": "incident"}, "order-platform-pager"),
    ({"owner_team": "order-platform", "severity": "urgent"}, "order-platform-ticket"),
    ({"owner_team": "order-platform", "severity": "high"}, "order-platform-ticket"),
    ({"owner_team": "order-platform", "severity": "warning"}, "order-platform-chat"),
    ({"owner_team": "platform-edge", "severity": "outage"}, "platform-edge-pager"),
    ({"owner_team": "platform-edge", "severity": "high"}, "platform-edge-ticket"),
    ({"owner_team": "platform-edge", "severity": "warning"}, "platform-edge-chat"),
    ({"owner_team": "prober", "severity": "urgent"}, "platform-edge-ticket"),  # the prober's own alerts
    ({"owner_team": "a-team-without-a-route", "severity": "outage"}, "default-pager"),
    ({"owner_team": "a-team-without-a-route", "severity": "high"}, "default-ticket"),
    ({"severity": "warning"}, "default-chat"),
]


@pytest.fixture(scope="module")
def config() -> Path:
    return need_file(CONFIG, "the sample Alertmanager config")


@pytest.mark.parametrize(("labels", "receiver"), ROUTES,
                         ids=[",".join(f"{k}={v}" for k, v in labels.items()) for labels, _ in ROUTES])
def test_amtool_routes_each_team_and_severity(config: Path, labels: dict[str, str], receiver: str) -> None:
    done = run([tool("amtool"), "config", "routes", "test", f"--config.file={config}",
                *(f"{k}={v}" for k, v in labels.items())])
    assert done.stdout.strip() == receiver


# --------------------------------------------------------------- inhibition
def _alert(name: str, hostname: str) -> dict[str, Any]:
    """An alert as Prometheus would send it: the shipped rule's labels, joined owner, this hostname."""
    labels = {"alertname": name, "hostname": hostname, "owner_team": TEAM, "app_owner": "checkout",
              **alert_rules(load())[name]["labels"]}
    # startsAt now, not in the past: an alert that starts in the past is flushed at once, racing the inhibitor
    return {"labels": labels, "startsAt": now_iso(0), "endsAt": now_iso(600)}


def _cases() -> list[tuple[str, str, bool]]:
    """(source, target, target suppressed?), each pair on a hostname of its own; the source must stay active."""
    expiry = [f"ProberCertificateExpiry{t}" for t in TIERS]
    cases = [(high, low, True) for high, low in combinations(expiry, 2)]  # and never upwards: high stays active
    cases += [("ProberEndpointDownDNS", "ProberTLSHostnameMismatch", True),
              ("ProberEndpointDownDNS", "ProberEndpointDownHTTP", True),
              ("ProberEndpointDownTLS", "ProberEndpointDownHTTP", True),
              ("ProberEndpointDownTLS", "ProberHTTPMissingHSTS", True),
              ("ProberEndpointDownHTTP", "ProberTLSHostnameMismatch", False),  # outside-in only
              ("ProberEndpointDownTLS", "ProberDNSResolversDisagree", False)]
    return cases


CASES = _cases()


def _test_copy(config: Path, dest: Path, sink: WebhookSink) -> Path:
    """The shipped config with webhooks pointed at the sink and a one-second group_wait; all else verbatim."""
    shipped = yaml.safe_load(config.read_text())
    doc = copy.deepcopy(shipped)
    for receiver in doc["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = sink.url + urlsplit(hook["url"]).path
    doc["route"]["group_wait"] = "1s"
    assert doc["inhibit_rules"] == shipped["inhibit_rules"]
    assert doc["route"]["routes"] == shipped["route"]["routes"]
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


@pytest.fixture(scope="module")
def alertmanager(config: Path, edge: Edge, e2e_dir: Path) -> Iterator[tuple[Alertmanager, WebhookSink]]:
    tool("alertmanager")
    workdir = e2e_dir / "alertmanager"
    workdir.mkdir()
    sink = WebhookSink(edge.address)
    mark = len(STARTED)
    try:
        copy_path = _test_copy(config, workdir / "alertmanager.yml", sink)
        run([tool("amtool"), "check-config", copy_path])
        yield start_alertmanager(workdir, copy_path, edge.address, free_port(edge.address)), sink
    finally:
        stop_since(mark)
        sink.stop()


@pytest.fixture(scope="module")
def posted(alertmanager: tuple[Alertmanager, WebhookSink]) -> dict[tuple[str, str], dict[str, Any]]:
    """Post every case's pair; return /api/v2/alerts by (alertname, hostname) once all are processed.

    Sources go first and targets only once every source has been notified.  Alertmanager's inhibitor
    and dispatcher read the same alert stream on separate goroutines, so a target posted in the same
    batch as its source can be flushed (group_wait is 1 s here) before the inhibitor has seen the
    source.  With the shipped 30 s group_wait that window does not matter; in a test it is a race.
    """
    am, sink = alertmanager
    sources, targets = [], []
    for n, (source, target, _) in enumerate(CASES):
        host = f"case{n}.e2e.test"
        sources.append(_alert(source, host))
        targets.append(_alert(target, host))
    # The control: an outage on one hostname mutes nothing on another.
    sources += [_alert("ProberCertificateExpiryOutage", "control-a.e2e.test"),
                _alert("ProberCertificateExpiryHigh", "control-b.e2e.test")]

    def processed(count: int) -> dict[tuple[str, str], dict[str, Any]] | None:
        got = {(a["labels"]["alertname"], a["labels"]["hostname"]): a for a in am.alerts()}
        done = len(got) == count and all(a["status"]["state"] != "unprocessed" for a in got.values())
        return got if done else None

    def notified() -> bool:
        got = {(a["labels"]["alertname"], a["labels"]["hostname"])
               for _, body in list(sink.received) for a in body["alerts"]}
        return all((a["labels"]["alertname"], a["labels"]["hostname"]) in got for a in sources)

    am.post(sources)
    wait_for("Alertmanager to list every source alert", lambda: processed(len(sources)), 15, 0.2)
    wait_for("a notification for every source alert", notified, 20, 0.2)
    am.post([{**alert, "startsAt": now_iso(0)} for alert in targets])
    return wait_for("Alertmanager to process every posted alert",
                    lambda: processed(len(sources) + len(targets)), 15, 0.2)


@pytest.mark.parametrize(("n", "case"), list(enumerate(CASES)), ids=[f"{s}>{t}" for s, t, _ in CASES])
def test_inhibition(posted: dict[tuple[str, str], dict[str, Any]], n: int, case: tuple[str, str, bool]) -> None:
    source, target, suppressed = case
    host = f"case{n}.e2e.test"
    src, tgt = posted[(source, host)], posted[(target, host)]
    assert src["status"]["state"] == "active", src["status"]
    if suppressed:
        assert tgt["status"]["state"] == "suppressed" and tgt["status"]["inhibitedBy"], tgt["status"]
    else:
        assert tgt["status"] == {**tgt["status"], "state": "active", "inhibitedBy": []}


def test_inhibition_needs_the_same_hostname(posted: dict[tuple[str, str], dict[str, Any]]) -> None:
    for key in (("ProberCertificateExpiryOutage", "control-a.e2e.test"),
                ("ProberCertificateExpiryHigh", "control-b.e2e.test")):
        assert posted[key]["status"]["state"] == "active", (key, posted[key]["status"])


def test_notifications_go_to_the_teams_receivers_and_never_carry_a_suppressed_alert(
        posted: dict[tuple[str, str], dict[str, Any]], alertmanager: tuple[Alertmanager, WebhookSink]) -> None:
    _, sink = alertmanager
    active = {k for k, a in posted.items() if a["status"]["state"] == "active"}

    def delivered() -> dict[tuple[str, str], set[str]] | None:
        got: dict[tuple[str, str], set[str]] = {}
        for path, body in list(sink.received):
            for alert in body["alerts"]:
                got.setdefault((alert["labels"]["alertname"], alert["labels"]["hostname"]), set()).add(path)
        return got if active <= set(got) else None

    got = wait_for("a notification for every active alert", delivered, 20)
    assert set(got) == active, "a suppressed alert was delivered"
    pager = {"outage": "pager", "incident": "pager", "urgent": "ticket", "high": "ticket", "warning": "chat"}
    for key, paths in got.items():
        severity = posted[key]["labels"]["severity"]
        assert paths == {f"/{TEAM}/{pager[severity]}"}, (key, paths)
