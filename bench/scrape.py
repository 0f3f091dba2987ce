"""/metrics at N healthy endpoints, without probing them: render time, bytes, gzip, and a real Prometheus.

    python bench/scrape.py --n 10000               # about a minute
    python bench/scrape.py --n 10000 --drop-optional

One real probe of a healthy fleet endpoint (nginx + knotd, as bench/fleet.py) gives a
report; N copies of it under N hostnames give N snapshots, built as `prober serve` builds
them.  The service's own HTTP server then answers /metrics from them exactly as the
service does (the self-metrics, then every endpoint family joined), and Prometheus 2
scrapes it every 15 s with a 10 s timeout.  This isolates the scrape from the probing,
so a loaded machine cannot turn the endpoints into failures with fewer series.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import json
import os
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Fleet, Proc, free_port, http_get, machine, name, wait_for, write_probes  # noqa: E402

PROMETHEUS = "/usr/bin/prometheus"


class _Api:
    """What the HTTP server needs from the service, over fixed snapshots (the service's own join)."""
    ready = True

    def __init__(self, snapshots: list, registry) -> None:
        self.snapshots, self.registry = snapshots, registry

    def metrics(self) -> bytes:
        from prometheus_client import generate_latest
        from prober.service.metrics import endpoint_exposition
        return generate_latest(self.registry) + endpoint_exposition(self.snapshots)


def snapshots(n: int, drop: frozenset[str]) -> list:
    from prober.config import load_config
    from prober.engine import probe
    from prober.service.metrics import build_snapshot
    with Fleet(n=1, cpus="1" if (os.cpu_count() or 1) > 1 else None) as fleet:
        config = write_probes(fleet.workdir / "one.yaml", fleet, 1, 60, 5, coverage="authoritative")
        report = asyncio.run(probe(load_config(str(config)).endpoints[0]))
    if report.status != "ok":
        raise SystemExit(f"bench: the fleet endpoint is {report.status}: {report.verdict.message}")
    return [build_snapshot(dataclasses.replace(report, hostname=name(i)), None, drop) for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--prometheus", type=float, default=45.0, help="seconds of Prometheus scraping (0: none)")
    parser.add_argument("--drop-optional", action="store_true", help="leave every optional family out")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    from prometheus_client import CollectorRegistry
    from prober.service.metrics import OPTIONAL_FAMILIES, SelfMetrics
    from prober.service.web import WebServer
    drop = frozenset(OPTIONAL_FAMILIES) if args.drop_optional else frozenset()
    t = time.process_time()
    snaps = snapshots(args.n, drop)
    build_ms = 1000 * (time.process_time() - t) / args.n
    registry = CollectorRegistry(auto_describe=False)
    SelfMetrics(registry, None)
    api = _Api(snaps, registry)
    renders, bodies = [], b""
    for _ in range(3):
        t = time.process_time()
        bodies = api.metrics()
        renders.append(time.process_time() - t)
    zips = {}
    for level in (1, 6):
        t = time.process_time()
        zips[level] = (len(gzip.compress(bodies, level)), 1000 * (time.process_time() - t))
    out = {"machine": machine(), "n": args.n, "drop_optional": args.drop_optional, "load": os.getloadavg()[0],
           "snapshot_build_ms": build_ms, "render_s": statistics.median(renders), "bytes": len(bodies),
           "samples": sum(1 for line in bodies.splitlines() if not line.startswith(b"#")),
           "gzip1": zips[1], "gzip6": zips[6]}
    web = WebServer("127.0.0.1", 0, api)  # type: ignore[arg-type]
    web.start()
    try:
        t = time.monotonic()
        http_get(f"http://127.0.0.1:{web.server_address[1]}/metrics", 60)
        out["http_get_s"] = time.monotonic() - t
        if args.prometheus and os.access(PROMETHEUS, os.X_OK):
            out["prometheus"] = _prometheus(web.server_address[1], args.prometheus)
    finally:
        web.stop()
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _prometheus(port: int, seconds: float) -> dict:
    import tempfile
    import yaml
    workdir = Path(tempfile.mkdtemp(prefix="prober-scrape-"))
    conf = workdir / "prometheus.yml"
    conf.write_text(yaml.safe_dump({"global": {"scrape_interval": "15s", "scrape_timeout": "10s"},
                                    "scrape_configs": [{"job_name": "prober",
                                                        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
    web = free_port(["127.0.0.1"])
    url = f"http://127.0.0.1:{web}"
    proc = Proc([PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
                cpus="1" if (os.cpu_count() or 1) > 1 else None, log=workdir / "prometheus.log")
    try:
        wait_for(lambda: http_get(url + "/-/ready", 2) is not None, 30, "prometheus", proc)
        time.sleep(seconds)

        def query(q: str) -> list[float]:
            doc = json.loads(http_get(f"{url}/api/v1/query?query={urllib.parse.quote(q)}", 30))
            return [float(r["value"][1]) for r in doc["data"]["result"]]

        window = f"[{int(seconds)}s]"
        return {"scrape_duration_seconds_max": (query(f'max_over_time(scrape_duration_seconds{window})') or [None])[0],
                "scrape_duration_seconds_min": (query(f'min_over_time(scrape_duration_seconds{window})') or [None])[0],
                "up_min": (query(f"min_over_time(up{window})") or [None])[0],
                "scrapes": (query(f"count_over_time(up{window})") or [0])[0],
                "samples_scraped": (query("scrape_samples_scraped") or [None])[0]}
    finally:
        proc.stop()


if __name__ == "__main__":
    raise SystemExit(main())
