"""`prober discover` at cluster scale: wall time and peak RSS for N hostnames.

Writes what `kubectl get ingress,gateway,httproute,certificate -A -o yaml` prints for a cluster
of N hostnames (half Ingresses with ALB annotations and a status, a quarter HTTPRoutes through
one Gateway, a quarter covered by cert-manager Certificates), then times

    prober discover - < cluster.yaml > probes.yaml
    prober discover - --coverage probes.yaml --json < cluster.yaml

as subprocesses.  Nothing leaves the machine: no probe runs.

    python bench/discover.py --n 10000 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def cluster(n: int) -> dict:
    items: list[dict] = [{
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "infra", "labels": {"team": "platform"}},
        "spec": {"gatewayClassName": "eg", "listeners": [
            {"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "*.routes.example",
             "allowedRoutes": {"namespaces": {"from": "All"}},
             "tls": {"certificateRefs": [{"name": "wildcard"}]}}]},
        "status": {"addresses": [{"type": "IPAddress", "value": "203.0.113.10"}]}}]
    for i in range(n // 2):
        items.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": f"app-{i}", "namespace": f"ns-{i % 50}", "labels": {"team": f"team-{i % 20}"},
                         "annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing",
                                         "alb.ingress.kubernetes.io/certificate-arn": "arn:aws:acm:eu-west-1:1:certificate/x",
                                         "alb.ingress.kubernetes.io/healthcheck-path": "/healthz"}},
            "spec": {"ingressClassName": "alb", "rules": [{"host": f"app-{i}.ingress.example"}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": f"k8s-lb-{i % 10}.elb.amazonaws.com"}]}}})
    for i in range(n // 4):
        items.append({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": f"route-{i}", "namespace": f"ns-{i % 50}", "labels": {"team": f"team-{i % 20}"}},
            "spec": {"parentRefs": [{"name": "edge", "namespace": "infra"}],
                     "hostnames": [f"route-{i}.routes.example"]}})
    for i in range(n - n // 2 - n // 4):
        items.append({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": f"cert-{i}", "namespace": f"ns-{i % 50}"},
            "spec": {"dnsNames": [f"cert-{i}.certs.example"], "secretName": f"cert-{i}"}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def timed(argv: list[str], stdin: Path, stdout: Path) -> tuple[float, int]:
    """(seconds, exit status) of one run."""
    start = time.perf_counter()
    with stdin.open("rb") as src, stdout.open("wb") as dst:
        code = subprocess.run(argv, stdin=src, stdout=dst, stderr=subprocess.DEVNULL, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}).returncode
    return time.perf_counter() - start, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="hostnames in the cluster (10000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prober-bench-discover-"))
    source = work / "cluster.yaml"
    source.write_text(yaml.safe_dump(cluster(args.n), sort_keys=False))
    probes = work / "probes.yaml"
    prober = [sys.executable, "-m", "prober", "discover", "-"]
    results: dict = {"n": args.n, "input_bytes": source.stat().st_size, "discover_s": [], "coverage_s": []}
    for _ in range(args.runs):
        seconds, code = timed(prober, source, probes)
        assert code == 0, code
        results["discover_s"].append(round(seconds, 3))
        seconds, code = timed([*prober, "--coverage", str(probes), "--json"], source, work / "coverage.json")
        assert code == 0, code  # the discovered contracts cover their own cluster
        results["coverage_s"].append(round(seconds, 3))
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    results["endpoints"] = sum(1 for line in probes.read_text().splitlines() if line.startswith("  - hostname:"))
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
