"""Soak: `prober serve` for a long while against a fleet where 10% of endpoints misbehave, in rotating ways.

    python bench/soak.py                       # 30 minutes, 500 endpoints at a 30s interval
    python bench/soak.py --minutes 4 --n 300   # a short run

Healthy endpoints are nginx (as in fleet.py).  Every --rotate seconds a fresh 10%
of the names is pointed (by DNS) at lab servers in a hostile mode (silent, garbage,
reset, slowloris, huge_body) or made to fail at DNS (blackhole, servfail), and the
previous 10% is healed.  Every 10s: RSS, open fds, and the scheduler lag histogram.
Verdict: RSS and fds flat (< 5% growth from the end of warm-up to the end), no
scheduler lag above 1s after warm-up.  Not a CI test; see tests/test_bench_smoke.py.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DNS_ADDRESSES, NGINX_ADDRESSES, BenchError, Discard, Fleet, fd_count, free_port,  # noqa: E402
                    lag_over_1s, lag_quantile, machine, name, self_metrics, start_serve, status_kb, write_probes)
from prober.lab.dnsserver import DnsServer  # noqa: E402
from prober.lab.runner import LabLoop  # noqa: E402
from prober.lab.webserver import PlainHttpServer, TlsHttpServer  # noqa: E402

TLS_FAULTS = ("silent", "garbage", "reset", "slowloris", "huge_body")
DNS_FAULTS = ("blackhole", "servfail")
FAULTS = TLS_FAULTS + DNS_FAULTS
SAMPLE_EVERY = 10.0
GROWTH_LIMIT = 0.05
LAG_LIMIT = 1.0


class FaultyFleet:
    """nginx for the healthy names; DNS and hostile servers in this process, on a lab loop."""

    def __init__(self, fleet: Fleet, n: int, seed: int) -> None:
        self.fleet, self.n = fleet, n
        self.random = random.Random(seed)
        self.lab = LabLoop()
        self.faulty: dict[int, str] = {}
        port = free_port(DNS_ADDRESSES)
        self.dns = [self.lab.start(DnsServer(a, port)) for a in DNS_ADDRESSES]
        self.hostile: dict[str, str] = {}  # fault -> the address its servers listen on
        for k, mode in enumerate(TLS_FAULTS):
            address = f"127.0.2.{k + 1}"
            tls = TlsHttpServer(fleet.cert, fleet.key, address, fleet.tls_port, mode=mode, hsts="max-age=31536000")
            tls.huge_body_bytes = 8 * 2**20  # enough to hit the prober's body cap, not to burn the fleet's core
            tls.route("/healthz")
            self.lab.start(tls)
            self.lab.start(PlainHttpServer(address, fleet.http_port, https_port=fleet.tls_port))
            self.hostile[mode] = address
        self.lab.run(self._publish())

    @property
    def resolvers(self) -> list[str]:
        return [s.address for s in self.dns]

    async def _publish(self) -> None:
        for server in self.dns:
            server.queries = Discard()
            server.add_zone("fleet.test")
            for i in range(self.n):
                server.set(name(i), "A", [NGINX_ADDRESSES[i % len(NGINX_ADDRESSES)]], ttl=60)

    def rotate(self, share: float = 0.10) -> dict[str, int]:
        """Heal the faulty names, then break a fresh `share` of them; returns faults by kind."""
        chosen = self.random.sample(range(self.n), max(1, int(self.n * share)))
        new = {i: FAULTS[k % len(FAULTS)] for k, i in enumerate(chosen)}
        self.lab.run(self._apply(self.faulty, new))
        self.faulty = new
        return {f: sum(1 for v in new.values() if v == f) for f in FAULTS}

    async def _apply(self, old: dict[int, str], new: dict[int, str]) -> None:
        for server in self.dns:
            for i in old:
                server.set_mode(name(i), None)
                server.set(name(i), "A", [NGINX_ADDRESSES[i % len(NGINX_ADDRESSES)]], ttl=60)
            for i, fault in new.items():
                if fault in DNS_FAULTS:
                    server.set_mode(name(i), fault)
                else:
                    server.set(name(i), "A", [self.hostile[fault]], ttl=60)

    def stop(self) -> None:
        self.lab.stop()


def sample(serve, started: float, previous: dict | None) -> dict:
    metrics = self_metrics(serve)
    pid = serve.proc.pid
    row = {"t": round(time.monotonic() - started, 1), "rss_mb": status_kb(pid, "VmRSS") / 1024,
           "fds": fd_count(pid), "runs": metrics["prober_probe_runs_total"],
           "skipped": metrics["prober_probe_runs_skipped_total"], "metrics": metrics,
           # the faults bite: runs that ended critical or unknown
           "failed": (metrics.get('prober_probe_runs_total{result="critical"}', 0)
                      + metrics.get('prober_probe_runs_total{result="unknown"}', 0))}
    if previous is not None:
        before = previous["metrics"]
        row["lag_p99"] = lag_quantile(0.99, before, metrics)
        row["lag_over_1s"] = lag_over_1s(before, metrics)
    return row


def verdict(rows: list[dict], warmup: float) -> dict:
    steady = [r for r in rows if r["t"] >= warmup]
    if len(steady) < 4:
        return {"ok": False, "why": f"too few samples after the {warmup:g}s warm-up ({len(steady)}); run longer"}
    k = max(2, len(steady) // 5)  # median of the first and last fifth: one busy sample is not a trend
    out: dict = {"samples": len(steady)}
    for key in ("rss_mb", "fds"):
        first = statistics.median(r[key] for r in steady[:k])
        last = statistics.median(r[key] for r in steady[-k:])
        out[f"{key}_growth"] = (last - first) / max(first, 1e-9)
    out["lag_over_1s"] = sum(r.get("lag_over_1s", 0) for r in steady)
    out["max_interval_lag_p99"] = max((r.get("lag_p99") or 0.0) for r in steady)
    out["skipped"] = steady[-1]["skipped"] - steady[0]["skipped"]
    out["ok"] = (out["rss_mb_growth"] < GROWTH_LIMIT and out["fds_growth"] < GROWTH_LIMIT
                 and out["lag_over_1s"] == 0)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--interval", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--rotate", type=float, default=60.0, help="seconds between fault rotations (60)")
    p.add_argument("--warmup", type=float, help="seconds ignored by the verdict (default: 2 intervals, at most "
                                                "a quarter of the run)")
    p.add_argument("--sample-every", type=float, default=SAMPLE_EVERY)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the fleet's work dir (configs, logs)")
    args = p.parse_args()
    duration = max(args.minutes * 60, 3 * args.sample_every)
    warmup = args.warmup if args.warmup is not None else min(2 * args.interval, duration / 4)
    two_cpus = (os.cpu_count() or 1) > 1
    if two_cpus:
        os.sched_setaffinity(0, {1})  # the faulty fleet and this sampler sit off the prober's core
    rows: list[dict] = []
    try:
        with Fleet(n=args.n, cpus="1" if two_cpus else None, dns=None, keep=args.keep) as fleet:
            faulty = FaultyFleet(fleet, args.n, args.seed)
            try:
                config = write_probes(fleet.workdir / "soak.yaml", fleet, args.n, args.interval, args.timeout,
                                      faulty.resolvers)
                print(f"soak: {args.n} endpoints every {args.interval:g}s for {duration:.0f}s, 10% faulty "
                      f"(rotating every {args.rotate:g}s: {', '.join(FAULTS)}); warm-up {warmup:g}s", flush=True)
                serve = start_serve(config, fleet.workdir, "0" if two_cpus else None)
                try:
                    rows = run(serve, faulty, duration, args.rotate, args.sample_every)
                finally:
                    serve.proc.stop()
            finally:
                faulty.stop()
    except BenchError as err:
        print(f"soak: {err}", file=sys.stderr)
        return 2
    result = verdict(rows, warmup)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": [{k: v for k, v in r.items() if k != "metrics"} for r in rows],
                                         "verdict": result}, indent=2))
    print(json.dumps({"verdict": result}))
    return 0 if result.get("ok") else 1


def run(serve, faulty: FaultyFleet, duration: float, rotate_every: float, every: float) -> list[dict]:
    """Sample every `every` seconds and rotate the faults every `rotate_every`, until `duration` (bounded)."""
    started = time.monotonic()
    rows: list[dict] = []
    next_rotate = started
    for _ in range(int(duration / every) + 2):
        now = time.monotonic()
        if now - started > duration:
            break
        if now >= next_rotate:
            faulty.rotate()
            next_rotate = now + rotate_every
        row = sample(serve, started, rows[-1] if rows else None)
        rows.append(row)
        print(f"  t={row['t']:>6.0f}s rss={row['rss_mb']:.1f}MB fds={row['fds']} runs={row['runs']:.0f} "
              f"failed={row['failed']:.0f} skipped={row['skipped']:.0f} lag_p99={row.get('lag_p99') or 0:.3f}s "
              f"lag>1s={row.get('lag_over_1s', 0):.0f}", flush=True)
        time.sleep(max(0.0, started + len(rows) * every - time.monotonic()))
    return rows


if __name__ == "__main__":
    sys.exit(main())
