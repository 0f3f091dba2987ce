"""CPU per probe, in one process, without the service around it: where a change to the hot path shows first.

    python bench/perprobe.py --n 200 --rounds 5            # asyncio's own event loop
    python bench/perprobe.py --n 200 --rounds 5 --rate 50 # started at 50/s, as the service spreads them
    python bench/perprobe.py --n 200 --rounds 5 --rate 50 --tick 50   # ... in batches on a 50 ms grid
    python bench/perprobe.py --n 3000 --gc default          # Python's own GC thresholds, no freeze
    python bench/perprobe.py --n 200 --rounds 5 --loop uvloop   # if uvloop is installed

Starts the bench fleet (nginx + knotd on loopback, as bench/fleet.py does), then probes
the N names round after round at a fixed concurrency, each probe followed by the
service's own bookkeeping (run metrics and the snapshot).  The first round fills the
verdict cache and the weak-protocol memo and is not counted.  Prints CPU ms per probe
(process_time) per round and the median.  The fleet runs on CPU 1, this process on CPU 0.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Fleet, status_kb, write_probes  # noqa: E402


async def _round(endpoints: list, concurrency: int, rate: float, keep, tick: float = 0.0) -> int:
    """Probe every endpoint once: all at once under the limit, or started at `rate` per second
    (with `tick`, the starts of each `tick` seconds together, as the service's scheduler batches them)."""
    from prober.engine import probe
    limit = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    start = loop.time()
    bad = 0

    async def one(i: int, endpoint) -> None:
        nonlocal bad
        if rate:
            offset = i / rate
            if tick:
                offset = (offset // tick) * tick
            await asyncio.sleep(max(0.0, start + offset - loop.time()))
        async with limit:
            report = await probe(endpoint)
        keep(report)
        bad += report.status != "ok"

    await asyncio.gather(*(one(i, e) for i, e in enumerate(endpoints)))
    return bad


class _CollectorClock:
    """CPU seconds spent in the cyclic garbage collector (gc.callbacks)."""

    def __init__(self) -> None:
        import gc
        self.seconds, self._started = 0.0, 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started


async def _main(config_path: Path, rounds: int, concurrency: int, rate: float, settle: bool,
                tick: float = 0.0) -> list[float]:
    from prometheus_client import CollectorRegistry

    from prober.config import load_config
    from prober.service.metrics import SelfMetrics, build_snapshot
    endpoints = list(load_config(str(config_path)).endpoints)
    if settle:
        from prober.service.app import settle_heap
        settle_heap()  # as `prober serve` does once its config is in force
    metrics = SelfMetrics(CollectorRegistry(), None)
    store = {}

    def keep(report) -> None:
        metrics.observe_run(report)
        store[report.hostname] = build_snapshot(report)

    collecting = _CollectorClock()
    per_probe = []
    for r in range(rounds + 1):
        cpu, wall, times, in_gc = time.process_time(), time.monotonic(), os.times(), collecting.seconds
        bad = await _round(endpoints, concurrency, rate, keep, tick)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        system = (os.times().system - times.system) / len(endpoints) * 1000
        in_gc = (collecting.seconds - in_gc) / len(endpoints) * 1000
        ms = cpu / len(endpoints) * 1000
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: {ms:.2f} ms CPU per probe, "
              f"({system:.2f} in the kernel, {in_gc:.2f} in the cyclic GC), {len(endpoints) / wall:.0f} probes/s, {bad} not ok", flush=True)
        if r:
            per_probe.append(ms)
    kept = sum(len(b) for snap in store.values() for b in snap.lines)
    rss = status_kb(os.getpid(), "VmRSS")
    print(f"{len(store)} snapshots keep {kept / len(store):.0f} bytes of exposition each; RSS {rss / 1024:.0f} MB",
          flush=True)
    return per_probe


def _contract(config: Path, fleet: Fleet, authoritative: str, dnssec: str) -> None:
    """The DNS-depth switches: authoritative auto asks knot (the zone's NS) on the fleet's DNS port."""
    import yaml
    doc = yaml.safe_load(config.read_text())
    doc["defaults"]["authoritative"] = authoritative
    doc["defaults"]["dns"] = {"dnssec": dnssec}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    if authoritative == "auto":
        from prober.layers import dns as dns_layer
        dns_layer.AUTHORITATIVE_PORT = int(fleet.resolvers[0].rsplit(":", 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="start probes at this many per second, as the service does (default: all at once)")
    parser.add_argument("--tick", type=float, default=0.0, metavar="MS",
                        help="with --rate: start the probes of each MS milliseconds together (the service: 100)")
    parser.add_argument("--coverage", choices=("resolvers", "authoritative"), default="resolvers",
                        help="the DNS servers each probe asks (bench/common.py dns_servers)")
    parser.add_argument("--gc", choices=("service", "default"), default="service",
                        help="the collector as `prober serve` sets it up (default), or Python's defaults")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--authoritative", choices=("off", "auto"), default="off",
                        help="auto: find the zone's servers and check its delegation (cached per zone)")
    parser.add_argument("--dnssec", choices=("auto", "off"), default="auto",
                        help="off: queries without the DO bit (EDNS is still sent)")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    with Fleet(args.n) as fleet:
        config = write_probes(fleet.workdir / "probes.yaml", fleet, args.n, 60, 5, coverage=args.coverage)
        _contract(config, fleet, args.authoritative, args.dnssec)
        if args.loop == "uvloop":
            import uvloop
            runner = uvloop.run
        else:
            runner = asyncio.run
        per_probe = runner(_main(config, args.rounds, args.concurrency, args.rate, args.gc == "service",
                                 args.tick / 1000))
    how = f"rate {args.rate:g}/s" + (f" on {args.tick:g} ms ticks" if args.tick else "") if args.rate else "all at once"
    print(f"median {statistics.median(per_probe):.2f} ms CPU per probe ({args.loop}, n={args.n}, {how}, "
          f"load {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
