"""`prober serve --discover PATH`: manifests re-read on every reload, hand-written keys win.

The real service as a subprocess, probing the lab servers of tests/test_service.py.
"""
from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from prober.lab.runner import LabLoop
from test_service import API, NEW, RENEW, WWW, Lab, Serve, hostnames, until


def ingress(name: str, hosts: list[str], team: str, scheme: str) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "shop", "labels": {"team": team},
                         "annotations": {"alb.ingress.kubernetes.io/scheme": scheme}},
            "spec": {"ingressClassName": "alb", "rules": [{"host": h} for h in hosts]}}


def info(service: Serve, hostname: str) -> dict[str, str]:
    rows = [labels for labels, _ in service.metrics().get("prober_endpoint_info", [])
            if labels["hostname"] == hostname]
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with LabLoop() as loop:
        yield Lab(tmp_path_factory.mktemp("lab"), loop)


def test_serve_merges_discovered_endpoints_on_reload(lab: Lab, tmp_path: Path) -> None:
    config = lab.config(tmp_path / "probes.yaml", [WWW])  # WWW: owner_team web, no visibility
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "shop.yaml").write_text(yaml.safe_dump(ingress("shop", [WWW, NEW], "shop-team", "internal")))
    service = Serve(config, "--discover", str(manifests))
    try:
        service.wait_ready()
        until(lambda: hostnames(service.metrics()) == {WWW, NEW}, 10, "the discovered endpoint probed")
        assert service.stderr.count("loaded ") == 1 and "2 endpoints" in service.stderr
        www, new = info(service, WWW), info(service, NEW)
        assert (www["owner_team"], www["visibility"]) == ("web", "private")  # hand-written key wins
        assert (new["owner_team"], new["visibility"], new["tls_termination"]) == ("shop-team", "private", "aws-alb")

        # The manifests change: re-read on reload, not before
        (manifests / "shop.yaml").write_text(yaml.safe_dump(ingress("shop", [WWW, RENEW], "shop-team", "internet-facing")))
        (manifests / "api.json").write_text(json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [ingress("api", [API], "api-team", "internal")]}))
        service.signal(signal.SIGHUP)
        until(lambda: hostnames(service.metrics()) == {WWW, RENEW, API}, 10, "SIGHUP to re-read the manifests")
        until(lambda: info(service, WWW)["visibility"] == "public", 10, "the changed contract probed")

        # A broken manifest fails the reload and keeps the running config
        (manifests / "broken.yaml").write_text("kind: Ingress\napiVersion: networking.k8s.io/v1\nspec: [\n")
        status, body, _ = service.request("POST", "/-/reload")
        assert status == 500 and "previous config" in body and "broken.yaml: document 1" in body
        assert hostnames(service.metrics()) == {WWW, RENEW, API}
    finally:
        assert service.stop() == 0
