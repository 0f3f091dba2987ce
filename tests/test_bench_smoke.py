"""Smoke runs of the benchmark and the soak: the harness works end to end and produces numbers.

Nothing here asserts speed (that is what bench/RESULTS.md is for).  They need
nginx (Debian package nginx-light) and blackbox_exporter (prometheus-blackbox-exporter):
missing binaries fail the test under CI=true and skip it elsewhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import BLACKBOX, KNOTD, NGINX, missing_binaries  # noqa: E402


def _need(*binaries: str) -> None:
    missing = missing_binaries(binaries)
    if not missing:
        return
    message = "the bench needs " + ", ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must install it)")
    pytest.skip(message)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.timeout(240)
def test_fleet_smoke_measures_both_sides(tmp_path: Path) -> None:
    _need(NGINX, BLACKBOX)
    out = tmp_path / "fleet.json"
    run = _run(["bench/fleet.py", "--n", "50", "--smoke", "--json", str(out)], timeout=220)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    sbs = results["side_by_side"]
    for side in ("prober", "blackbox", "blackbox_equal"):
        assert sbs[side]["probes"] > 0, side
        assert sbs[side]["cpu_per_probe_ms"] > 0, side
        assert sbs[side]["peak_rss_mb"] > 0, side
    for side in ("blackbox", "blackbox_equal"):  # blackbox really reached the fleet (hosts file, DNS servers)
        assert sbs[side]["success"] == 1.0, side
    assert sbs["blackbox_equal"]["requests_per_probe"] == 7  # the GET, and A and AAAA of three DNS servers
    assert sbs["ratio_cpu"] > 0 and sbs["ratio_cpu_equal"] > 0
    one, two = results["scale"]
    assert (one["workers"], two["workers"]) == (1, 2)
    for scale in (one, two):
        assert scale["runs"] > 0 and scale["skipped"] >= 0 and scale["rss_mb"] > 0
        assert scale["scrape"]["bytes"] > 0 and scale["scrape"]["gzip_bytes"] > 0 and scale["scrape"]["samples"] > 0
    for label in ("prober --help", "prober check (1 endpoint, 3 resolvers)"):
        assert results["cli"][label]["median_ms"] > 0
    assert "| CPU per endpoint-probe |" in run.stdout


@pytest.mark.timeout(120)
def test_perprobe_smoke_probes_the_fleet_healthy() -> None:
    _need(NGINX, KNOTD)
    run = _run(["bench/perprobe.py", "--n", "10", "--rounds", "1"], timeout=100)
    assert run.returncode == 0, run.stderr[-2000:]
    rounds = [line for line in run.stdout.splitlines() if line.startswith("round ")]
    assert len(rounds) == 2 and all(line.endswith(", 0 not ok") for line in rounds), run.stdout
    assert "in the cyclic GC" in rounds[1] and "median" in run.stdout


@pytest.mark.timeout(120)
def test_soak_smoke_samples_and_judges(tmp_path: Path) -> None:
    """About 20 seconds of soak with faults rotating every 5s (the real soak runs 30 minutes)."""
    _need(NGINX)
    out = tmp_path / "soak.json"
    run = _run(["bench/soak.py", "--minutes", "0.35", "--n", "40", "--interval", "4", "--timeout", "2",
                "--rotate", "5", "--sample-every", "2", "--warmup", "4", "--json", str(out)], timeout=100)
    assert run.returncode in (0, 1), run.stderr[-2000:]  # 1 is a failed verdict: still a working harness
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert len(rows) >= 5
    assert all(r["rss_mb"] > 0 and r["fds"] > 0 for r in rows)
    assert rows[-1]["runs"] > rows[0]["runs"]
    assert rows[-1]["failed"] > 0  # the rotating faults reached the prober
    assert {"rss_mb_growth", "fds_growth", "lag_over_1s", "ok"} <= set(report["verdict"])


@pytest.mark.timeout(120)
def test_scrape_smoke_serves_healthy_copies(tmp_path: Path) -> None:
    _need(NGINX, KNOTD)
    out = tmp_path / "scrape.json"
    run = _run(["bench/scrape.py", "--n", "50", "--prometheus", "0", "--json", str(out)], timeout=100)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["samples"] > 50 * 20 and result["bytes"] > 0 and result["render_s"] > 0
    assert result["gzip1"][0] < result["bytes"]
