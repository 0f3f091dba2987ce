"""`prober discover` at cluster scale: wall time and peak RSS for N hostnames.

Writes what `kubectl get ingress,gateway,httproute,certificate -A -o yaml` (and `-o json`)
prints for a cluster of N hostnames (half Ingresses with ALB annotations and a status, a
quarter HTTPRoutes through one Gateway, a quarter cert-manager Certificates), then runs

    prober discover - < cluster.yaml > probes.yaml
    prober discover - < cluster.json > probes.yaml
    prober discover - --coverage probes.yaml --json < cluster.json

as subprocesses and reports the CPU seconds of each (user + system: wall time on a shared
machine says more about the neighbours).  Nothing leaves the machine: no probe runs.

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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], stdin: Path, stdout: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run that must exit 0."""
    cpu, wall = _cpu(), time.perf_counter()
    with stdin.open("rb") as src, stdout.open("wb") as dst:
        code = subprocess.run(argv, stdin=src, stdout=dst, stderr=subprocess.DEVNULL, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}).returncode
    assert code == 0, f"{argv} exited {code}"  # coverage of its own output is complete
    return round(_cpu() - cpu, 3), round(time.perf_counter() - wall, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="hostnames in the cluster (10000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prober-bench-discover-"))
    objects = cluster(args.n)
    as_yaml, as_json = work / "cluster.yaml", work / "cluster.json"
    as_yaml.write_text(yaml.safe_dump(objects, sort_keys=False))
    as_json.write_text(json.dumps(objects, indent=4))
    probes = work / "probes.yaml"
    prober = [sys.executable, "-m", "prober", "discover", "-"]
    runs = {"discover_yaml": (prober, as_yaml, probes), "discover_json": (prober, as_json, probes),
            "coverage_json": ([*prober, "--coverage", str(probes), "--json"], as_json, work / "coverage.json")}
    results: dict = {"n": args.n, "yaml_bytes": as_yaml.stat().st_size, "json_bytes": as_json.stat().st_size}
    for _ in range(args.runs):
        for name, (argv, stdin, stdout) in runs.items():
            cpu, wall = timed(argv, stdin, stdout)
            results.setdefault(f"{name}_cpu_s", []).append(cpu)
            results.setdefault(f"{name}_wall_s", []).append(wall)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    results["endpoints"] = sum(1 for line in probes.read_text().splitlines() if line.startswith("  - hostname:"))
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
