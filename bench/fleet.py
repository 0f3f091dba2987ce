"""Fleet benchmark: `prober serve` side by side with blackbox_exporter, scale, CLI start-up, profile.

    python bench/fleet.py --n 1000                 # the full run (about 10 minutes), prints Markdown
    python bench/fleet.py --n 50 --smoke           # seconds: proves the harness works (CI)

Everything runs on loopback: nginx (wildcard certificate from a test CA) serves
<i>.fleet.test on 127.0.1.1-4, three lab DNS servers in their own process answer
for the names.  The probers are pinned to CPU 0, the fleet and this driver to
CPU 1 (when the machine has two).  Results go to stdout and, with --json, to a file.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blackbox import drive, probes_for, start_blackbox  # noqa: E402
from common import (ROOT, BenchError, Fleet, Proc, _descendants, cpu_seconds, dns_servers, free_port, http_get,  # noqa: E402
                    lag_over_1s, lag_quantile, machine, self_metrics, start_serve, status_kb, tree_kb, wait_for,
                    write_probes)

PROBER_CPU, FLEET_CPU = ("0", "1") if (os.cpu_count() or 1) > 1 else (None, None)
# --workers runs may use every CPU.  Said explicitly: a child inherits this driver's own pinning
# to the fleet's CPU (round 4's two-worker runs ran on that one CPU, with nginx and knot).
ALL_CPUS = f"0-{(os.cpu_count() or 1) - 1}"


# --------------------------------------------------------------------------- 1. side by side
def prober_rep(fleet: Fleet, n: int, interval: float, warm: float, window: float, coverage: str) -> dict:
    config = write_probes(fleet.workdir / f"probes-{n}.yaml", fleet, n, interval, min(5.0, interval),
                          coverage=coverage)
    serve = start_serve(config, fleet.workdir, PROBER_CPU)
    try:
        time.sleep(warm)
        before = self_metrics(serve)
        dns0, cpu0, t0 = cpu_seconds(fleet.dns_proc.pid), cpu_seconds(serve.proc.pid), time.monotonic()
        time.sleep(window)
        cpu1, dns1, t1 = cpu_seconds(serve.proc.pid), cpu_seconds(fleet.dns_proc.pid), time.monotonic()
        after = self_metrics(serve)
        runs = after["prober_probe_runs_total"] - before["prober_probe_runs_total"]
        return {"probes": runs, "cpu_per_probe_ms": 1000 * (cpu1 - cpu0) / max(runs, 1),
                "probes_per_s": runs / (t1 - t0), "peak_rss_mb": status_kb(serve.proc.pid, "VmHWM") / 1024,
                "cpu_share": (cpu1 - cpu0) / (t1 - t0), "dns_cpu_share": (dns1 - dns0) / (t1 - t0),
                "skipped": after["prober_probe_runs_skipped_total"] - before["prober_probe_runs_skipped_total"],
                "load": os.getloadavg()[0]}
    finally:
        serve.proc.stop()


def blackbox_rep(fleet: Fleet, n: int, interval: float, warm: float, window: float, bb_coverage: str,
                 coverage: str) -> dict:
    """blackbox at the prober's endpoint rate; bb_coverage "get" (one GET) or "equal" (GET + 6 DNS probes)."""
    proc, url = start_blackbox(fleet, n, PROBER_CPU, coverage=bb_coverage)
    resolvers, authoritative = dns_servers(fleet, coverage)
    probes = probes_for(fleet, bb_coverage, resolvers + ([authoritative] if authoritative != "off" else []))
    try:
        samples: dict[str, float] = {}

        async def run() -> object:
            async def sample() -> None:
                await asyncio.sleep(warm)
                samples["cpu0"], samples["t0"] = cpu_seconds(proc.pid), time.monotonic()
                await asyncio.sleep(window)
                samples["cpu1"], samples["t1"] = cpu_seconds(proc.pid), time.monotonic()
            sampler = asyncio.ensure_future(sample())
            result = await drive(url, fleet, n, n / interval, warm + window + 1, (warm, warm + window),
                                 probes=probes)
            await sampler
            return result

        result = asyncio.run(run())
        done = result.endpoint_probes_in_window
        span = samples["t1"] - samples["t0"]
        return {"probes": done, "cpu_per_probe_ms": 1000 * (samples["cpu1"] - samples["cpu0"]) / max(done, 1),
                "probes_per_s": done / span, "peak_rss_mb": status_kb(proc.pid, "VmHWM") / 1024,
                "cpu_share": (samples["cpu1"] - samples["cpu0"]) / span, "requests_per_probe": result.per_endpoint,
                "success": result.succeeded / max(result.completed, 1), "abandoned": result.abandoned,
                "load": os.getloadavg()[0]}
    finally:
        proc.stop()


def median_of(reps: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in reps) for k in reps[0]}


def side_by_side(fleet: Fleet, n: int, interval: float, reps: int, warm: float, window: float,
                 coverage: str) -> dict:
    """Alternating repetitions of prober, blackbox one-GET and blackbox equal coverage."""
    prober, get, equal = [], [], []
    for r in range(reps):  # alternate, so drift in the machine hits every side alike
        prober.append(prober_rep(fleet, n, interval, warm, window, coverage))
        get.append(blackbox_rep(fleet, n, interval, warm, window, "get", coverage))
        equal.append(blackbox_rep(fleet, n, interval, warm, window, "equal", coverage))
        log(f"rep {r + 1}/{reps}: prober {prober[-1]['cpu_per_probe_ms']:.2f} ms/probe, blackbox one GET "
            f"{get[-1]['cpu_per_probe_ms']:.2f}, equal coverage {equal[-1]['cpu_per_probe_ms']:.2f} "
            f"(load {os.getloadavg()[0]:.2f})")
    p, b, e = median_of(prober), median_of(get), median_of(equal)
    return {"n": n, "interval": interval, "reps": reps, "window": window, "coverage": coverage,
            "prober": p, "blackbox": b, "blackbox_equal": e,
            "prober_reps": prober, "blackbox_reps": get, "blackbox_equal_reps": equal,
            "ratio_cpu": p["cpu_per_probe_ms"] / max(b["cpu_per_probe_ms"], 1e-9),
            "ratio_cpu_equal": p["cpu_per_probe_ms"] / max(e["cpu_per_probe_ms"], 1e-9),
            "ratio_rss": p["peak_rss_mb"] / max(b["peak_rss_mb"], 1e-9)}


# --------------------------------------------------------------------------- 2. scale
def scale(fleet: Fleet, n: int, interval: float, duration: float, warm: float = 0.0, workers: int = 1,
          coverage: str = "resolvers", scrape: float | None = None, profile_seconds: float = 0.0) -> dict:
    """n endpoints at `interval`; measured for `duration` after `warm` seconds past /-/ready.

    The first interval after start-up is the cold one: every name's first probe makes the
    weak-protocol handshake and fills the verdict cache.  With warm >= interval the window
    measures the steady state; the cold interval's own lag is reported as `cold_lag_p99`.
    One worker is pinned to the prober's CPU; `--workers N` may use every CPU.  With
    scrape set, /metrics is then measured (scrape_cost), and for `scrape` seconds by a real Prometheus.
    """
    config = write_probes(fleet.workdir / f"scale-{n}.yaml", fleet, n, interval, min(10.0, interval),
                          coverage=coverage)
    t_start = time.monotonic()
    serve = start_serve(config, fleet.workdir, PROBER_CPU if workers == 1 else ALL_CPUS, ready_timeout=300,
                        extra=("--workers", str(workers)) if workers > 1 else ())
    pid = serve.proc.pid
    try:
        startup = time.monotonic() - t_start
        cold = self_metrics(serve)
        time.sleep(warm)
        before = self_metrics(serve)
        cpu0, t0 = cpu_seconds(pid, tree=True), time.monotonic()
        time.sleep(duration)
        cpu1, t1 = cpu_seconds(pid, tree=True), time.monotonic()
        rss_now = tree_kb(pid, "VmRSS") / 1024
        after = self_metrics(serve)
        peak = tree_kb(pid, "VmHWM") / 1024
        runs = after["prober_probe_runs_total"] - before["prober_probe_runs_total"]
        out = {"n": n, "interval": interval, "workers": workers, "warm_s": warm, "duration": t1 - t0,
               "startup_s": startup, "runs": runs,
               "cold_lag_p99": lag_quantile(0.99, cold, before) if warm else None,
               "expected_runs": n * (t1 - t0) / interval,
               "lag_p50": lag_quantile(0.5, before, after), "lag_p99": lag_quantile(0.99, before, after),
               "lag_over_1s": lag_over_1s(before, after),
               "skipped": after["prober_probe_runs_skipped_total"] - before["prober_probe_runs_skipped_total"],
               "unknown": (after.get('prober_probe_runs_total{result="unknown"}', 0)
                           - before.get('prober_probe_runs_total{result="unknown"}', 0)),
               "concurrency_limit": after.get("prober_concurrency_limit"),
               "cpu_share": (cpu1 - cpu0) / (t1 - t0), "rss_mb": rss_now, "peak_rss_mb": peak,
               "rss_kb_per_endpoint": peak * 1024 / n, "load": os.getloadavg()[0]}
        if scrape is not None:
            try:
                out["scrape"] = scrape_cost(fleet, serve, scrape)
            except BenchError as err:  # keep the scale run's numbers; say what the scrape phase could not do
                out["scrape_error"] = str(err)
        if profile_seconds:  # after the window: py-spy takes some CPU of its own
            target = pid if workers == 1 else next(p for p in _children(pid))
            out["profile"] = record_profile(target, profile_seconds, ROOT / "bench" / "profiles",
                                            f"scale-{n}-workers-{workers}")
        return out
    finally:
        serve.proc.stop()


def _children(pid: int) -> list[int]:
    """Direct children of pid, whichever of its threads started them."""
    return [p for p in _descendants(pid) if p != pid and _ppid(p) == pid]


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


PROMETHEUS = "/usr/bin/prometheus"


def scrape_cost(fleet: Fleet, serve, seconds: float, gets: int = 3) -> dict:
    """/metrics of a running service: wall time, the service's CPU, bytes and gzip, then a real Prometheus."""
    import gzip
    import urllib.request
    walls, cpus, sizes, zipped, zip_ms = [], [], [], [], []
    for _ in range(gets):
        cpu, t = cpu_seconds(serve.proc.pid, tree=True), time.monotonic()
        body = http_get(serve.url + "/metrics", 60)
        walls.append(time.monotonic() - t)
        cpus.append(cpu_seconds(serve.proc.pid, tree=True) - cpu)
        sizes.append(len(body))
        for level in (1, 6):
            z = time.process_time()
            zipped.append((level, len(gzip.compress(body, level))))
            zip_ms.append((level, 1000 * (time.process_time() - z)))
    cpu, t = cpu_seconds(serve.proc.pid, tree=True), time.monotonic()
    request = urllib.request.Request(serve.url + "/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=60) as r:
        served = r.read()
        encoding = r.headers.get("Content-Encoding")
    gzip_wall, gzip_cpu = time.monotonic() - t, cpu_seconds(serve.proc.pid, tree=True) - cpu
    out = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "bytes": statistics.median(sizes),
           "gzip_bytes": statistics.median(b for lv, b in zipped if lv == 1),
           "gzip1_ms": statistics.median(ms for lv, ms in zip_ms if lv == 1),
           "gzip6_bytes": statistics.median(b for lv, b in zipped if lv == 6),
           "gzip6_ms": statistics.median(ms for lv, ms in zip_ms if lv == 6),
           "served_gzip": {"encoding": encoding, "bytes": len(served), "wall_s": gzip_wall, "cpu_s": gzip_cpu},
           "lines": body.count(b"\n"), "samples": sum(1 for line in body.splitlines() if not line.startswith(b"#")),
           "per_family": family_sizes(body)}
    if seconds and os.access(PROMETHEUS, os.X_OK):
        try:
            out["prometheus"] = prometheus_scrape(fleet, serve, seconds)
        except BenchError as err:
            out["prometheus"] = {"error": str(err)}
    return out


def family_sizes(body: bytes) -> dict[str, list[int]]:
    """family -> [samples, bytes] in one exposition (the cardinality budget of docs/metrics.md)."""
    out: dict[str, list[int]] = {}
    for line in body.splitlines():
        if line.startswith(b"#"):
            continue
        metric = line.split(b"{", 1)[0].split(b" ", 1)[0].decode()
        row = out.setdefault(metric, [0, 0])
        row[0] += 1
        row[1] += len(line) + 1
    return out


def prometheus_scrape(fleet: Fleet, serve, seconds: float) -> dict:
    """A real Prometheus scraping the service every 15 s with a 10 s timeout, on the fleet's CPU."""
    import urllib.parse
    import yaml
    workdir = fleet.workdir / "prometheus"
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh TSDB: replaying an earlier run's WAL takes minutes
    workdir.mkdir()
    conf = workdir / "prometheus.yml"
    conf.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "15s", "scrape_timeout": "10s"},
        "scrape_configs": [{"job_name": "prober", "static_configs": [{"targets": [f"127.0.0.1:{serve.port}"]}]}]}))
    port = free_port(["127.0.0.1"])
    url = f"http://127.0.0.1:{port}"
    proc = Proc([PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], cpus=FLEET_CPU,
                log=workdir / "prometheus.log")
    try:
        wait_for(lambda: http_get(url + "/-/ready", 2) is not None, 120, "prometheus", proc)
        time.sleep(seconds)

        def query(q: str) -> list:
            doc = json.loads(http_get(f"{url}/api/v1/query?query={urllib.parse.quote(q)}", 30))
            return [float(r["value"][1]) for r in doc["data"]["result"]]

        return {"scrape_duration_seconds_max": max(query('max_over_time(scrape_duration_seconds{job="prober"}'
                                                         f'[{int(seconds)}s])') or [float("nan")]),
                "scrape_duration_seconds_last": (query('scrape_duration_seconds{job="prober"}') or [None])[0],
                "up_min": min(query(f'min_over_time(up{{job="prober"}}[{int(seconds)}s])') or [float("nan")]),
                "samples_scraped": (query('scrape_samples_scraped{job="prober"}') or [None])[0],
                "scrapes": (query(f'count_over_time(up{{job="prober"}}[{int(seconds)}s])') or [0])[0]}
    finally:
        proc.stop()


# --------------------------------------------------------------------------- 3. CLI
def cli(fleet: Fleet, runs: int, warmup: int = 2) -> dict:
    config = write_probes(fleet.workdir / "one.yaml", fleet, 1, 60, 5)
    manual = fleet.workdir / "manual.sh"
    host, port, http_port = "0.fleet.test", fleet.tls_port, fleet.http_port
    digs = " ; ".join(f"dig +short +time=2 +tries=1 @{r.split(':')[0]} -p {r.split(':')[1]} {host} A >/dev/null"
                      for r in fleet.resolvers)
    manual.write_text(
        "#!/bin/sh\nset -e\n" + digs + "\n"
        f"echo | openssl s_client -connect 127.0.1.1:{port} -servername {host} -CAfile {fleet.ca_file} "
        f"-verify_return_error >/dev/null 2>&1\n"
        f"curl -sS -o /dev/null --resolve {host}:{http_port}:127.0.1.1 http://{host}:{http_port}/\n"
        f"curl -sS -o /dev/null -D - --cacert {fleet.ca_file} --resolve {host}:{port}:127.0.1.1 "
        f"https://{host}:{port}/healthz | grep -qi strict-transport\n")
    manual.chmod(0o755)
    py = sys.executable
    commands = {"prober --help": f"{py} -m prober --help",
                "prober check (1 endpoint, 3 resolvers)": f"{py} -m prober check {host} --config {config}",
                "dig x3 + openssl s_client + curl x2 (by hand)": f"sh {manual}"}
    # As installed (pip compiles bytecode): a .pyc cache outside the tree, even where the environment
    # sets PYTHONDONTWRITEBYTECODE.  The first, untimed run of each command fills it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(fleet.workdir / "pycache")
    for label, cmd in commands.items():  # each must work before it is timed
        rc = subprocess.run(cmd, shell=True, capture_output=True, timeout=30, cwd=ROOT, env=env).returncode
        if rc != 0:
            raise BenchError(f"{label}: exit {rc} ({cmd})")
    out = {}
    hyperfine = shutil.which("hyperfine")
    for label, cmd in commands.items():
        if hyperfine:
            export = fleet.workdir / "hyperfine.json"
            subprocess.run([hyperfine, "-N", "--warmup", str(warmup), "--runs", str(runs),
                            "--export-json", str(export), cmd],
                           capture_output=True, timeout=300, check=True, cwd=ROOT, env=env)
            times = json.loads(export.read_text())["results"][0]["times"]
        else:
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                subprocess.run(cmd, shell=True, capture_output=True, timeout=30, cwd=ROOT, env=env)
                times.append(time.perf_counter() - t)
        out[label] = {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times), "runs": len(times)}
    out["tool"] = "hyperfine" if hyperfine else "perf_counter loop"
    return out


# --------------------------------------------------------------------------- 4. profile
def profile(fleet: Fleet, n: int, interval: float, seconds: float, out: Path, coverage: str,
            name: str = "serve") -> dict:
    if not shutil.which("py-spy"):
        return {"skipped": "py-spy not installed (pip install py-spy)"}
    config = write_probes(fleet.workdir / f"profile-{n}.yaml", fleet, n, interval, min(5.0, interval),
                          coverage=coverage)
    serve = start_serve(config, fleet.workdir, PROBER_CPU)
    try:
        time.sleep(interval + 2)  # past every name's first probe: the steady state, verdict cache warm
        return record_profile(serve.proc.pid, seconds, out, name)
    finally:
        serve.proc.stop()


def record_profile(pid: int, seconds: float, out: Path, name: str) -> dict:
    """py-spy (on the fleet's CPU) on a running process: a speedscope file, a flame graph and the top frames."""
    pyspy = shutil.which("py-spy")
    if not pyspy:
        return {"skipped": "py-spy not installed (pip install py-spy)"}
    out.mkdir(parents=True, exist_ok=True)
    pin = ["taskset", "-c", FLEET_CPU] if FLEET_CPU and shutil.which("taskset") else []
    for fmt, path in (("speedscope", out / f"{name}.speedscope.json"), ("flamegraph", out / f"{name}.svg")):
        subprocess.run([*pin, pyspy, "record", "--nonblocking", "--pid", str(pid), "--duration",
                        str(int(seconds)), "--rate", "200", "--format", fmt, "--output", str(path)],
                       capture_output=True, timeout=seconds + 60, check=True)
    return {"top_self": top_frames(out / f"{name}.speedscope.json", inclusive=False),
            "top_inclusive": top_frames(out / f"{name}.speedscope.json", inclusive=True, k=40),
            "files": [f"{name}.speedscope.json", f"{name}.svg"]}


def top_frames(path: Path, inclusive: bool, k: int = 15) -> list[tuple[str, float]]:
    """Share of samples per frame (self time, or inclusive), from a py-spy speedscope file; idle excluded."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    counts: dict[str, float] = {}
    total = 0.0
    for prof in doc["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"]):
            if not stack:
                continue
            leaf = frames[stack[-1]]
            if _idle(leaf):
                continue
            total += weight
            keys = {_label(frames[i]) for i in stack} if inclusive else {_label(leaf)}
            for key in keys:
                counts[key] = counts.get(key, 0.0) + weight
    return [(key, round(100 * c / total, 1)) for key, c in sorted(counts.items(), key=lambda kv: -kv[1])[:k]]


def _idle(frame: dict) -> bool:
    """The loop waiting for I/O, or a thread parked: not work."""
    file = frame.get("file", "")
    return (frame["name"].rsplit(".", 1)[-1] in ("select", "poll", "epoll_wait") and "selectors" in file
            or frame["name"] == "wait" and "threading" in file)


def _label(frame: dict) -> str:
    file = frame.get("file", "")
    short = "/".join(file.split("/")[-2:])
    return f"{frame['name']} ({short}:{frame.get('line', '?')})"


# --------------------------------------------------------------------------- report
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}, Python {m['python']}; {m['date']}", ""]
    sbs = results.get("side_by_side")
    if sbs:
        p, b, e = sbs["prober"], sbs["blackbox"], sbs["blackbox_equal"]
        lines += [f"### Side by side: {sbs['n']} endpoints, one probe each per {sbs['interval']:g}s "
                  f"(medians of {sbs['reps']} alternating reps, {sbs['window']:g}s windows, DNS: {sbs['coverage']})",
                  "",
                  "| | prober serve (full layered probe) | blackbox, one GET | ratio | "
                  f"blackbox, equal coverage ({e['requests_per_probe']:.0f} /probe) | ratio |",
                  "|---|---|---|---|---|---|",
                  f"| CPU per endpoint-probe | {p['cpu_per_probe_ms']:.2f} ms | {b['cpu_per_probe_ms']:.2f} ms | "
                  f"**{sbs['ratio_cpu']:.2f}x** | {e['cpu_per_probe_ms']:.2f} ms | **{sbs['ratio_cpu_equal']:.2f}x** |",
                  "| the repetitions | " + ", ".join(f"{r['cpu_per_probe_ms']:.2f}" for r in sbs["prober_reps"])
                  + " | " + ", ".join(f"{r['cpu_per_probe_ms']:.2f}" for r in sbs["blackbox_reps"]) + " | | "
                  + ", ".join(f"{r['cpu_per_probe_ms']:.2f}" for r in sbs["blackbox_equal_reps"]) + " | |",
                  f"| peak RSS (VmHWM) | {p['peak_rss_mb']:.1f} MB | {b['peak_rss_mb']:.1f} MB | | "
                  f"{e['peak_rss_mb']:.1f} MB | |",
                  f"| endpoint-probes / s | {p['probes_per_s']:.1f} | {b['probes_per_s']:.1f} | | "
                  f"{e['probes_per_s']:.1f} | |",
                  f"| CPU share of its core | {100 * p['cpu_share']:.0f}% | {100 * b['cpu_share']:.0f}% | | "
                  f"{100 * e['cpu_share']:.0f}% | |",
                  f"| blackbox probe_success | | {100 * b['success']:.0f}% | | {100 * e['success']:.0f}% | |",
                  f"| load average (1 min) | {p['load']:.2f} | {b['load']:.2f} | | {e['load']:.2f} | |", ""]
    for s in results.get("scale", []):
        lines.append(f"- scale {s['n']} endpoints @ {s['interval']:g}s, {s['workers']} worker(s), for "
                     f"{s['duration']:.0f}s: runs {s['runs']:.0f} "
                     f"(expected {s['expected_runs']:.0f}), lag p50 {_f(s['lag_p50'])} s, p99 {_f(s['lag_p99'])} s, "
                     f"lag > 1s: {s['lag_over_1s']:.0f}, skipped {s['skipped']:.0f}, unknown {s.get('unknown', 0):.0f}, "
                     f"concurrency limit {_f(s.get('concurrency_limit'))}, CPU {100 * s['cpu_share']:.0f}%, "
                     f"RSS {s['rss_mb']:.0f} MB (peak {s['peak_rss_mb']:.0f} MB, "
                     f"{s['rss_kb_per_endpoint']:.1f} kB/endpoint), "
                     f"start-up {s['startup_s']:.1f}s, load {s['load']:.2f}"
                     + (f", measured from {s['warm_s']:g}s after ready (the cold first interval's lag p99: "
                        f"{_f(s['cold_lag_p99'])} s)" if s.get("warm_s") else ""))
        c = s.get("scrape")
        if c:
            lines.append(f"  - /metrics: {c['wall_s']:.3f} s wall, {c['cpu_s']:.3f} s CPU, {c['bytes'] / 1e6:.1f} MB "
                         f"({c['samples']} samples); gzip -1 {c['gzip_bytes'] / 1e6:.2f} MB in {c['gzip1_ms']:.0f} ms, "
                         f"-6 {c['gzip6_bytes'] / 1e6:.2f} MB in {c['gzip6_ms']:.0f} ms; served gzipped "
                         f"({c['served_gzip']['encoding']}): {c['served_gzip']['wall_s']:.3f} s wall, "
                         f"{c['served_gzip']['cpu_s']:.3f} s CPU"
                         + (f"; Prometheus scrape_duration_seconds max {c['prometheus']['scrape_duration_seconds_max']:.2f}"
                            f" s over {c['prometheus']['scrapes']:.0f} scrapes, up min {c['prometheus']['up_min']:.0f}"
                            if "scrapes" in c.get("prometheus", {}) else "")
                         + (f"; Prometheus: {c['prometheus']['error']}" if "error" in c.get("prometheus", {}) else ""))
        if s.get("scrape_error"):
            lines.append(f"  - /metrics not measured: {s['scrape_error']}")
    for label, c in results.get("cli", {}).items():
        if isinstance(c, dict):
            lines.append(f"- CLI {label}: median {c['median_ms']:.0f} ms (min {c['min_ms']:.0f}, {c['runs']} runs)")
    profiles = [("side by side", results.get("profile", {}))]
    profiles += [(f"scale {s['n']} on {s['workers']} worker(s)", s["profile"]) for s in results.get("scale", [])
                 if s.get("profile")]
    for what, prof in profiles:
        for kind in ("top_self", "top_inclusive"):
            if kind in prof:
                lines += ["", f"Profile ({what}) {kind}:"] + [f"- {pct}% {frame}" for frame, pct in prof[kind]]
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="endpoints in the side-by-side run (1000)")
    p.add_argument("--interval", type=float, default=20.0, help="side-by-side probe interval, seconds (20)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--window", type=float, default=20.0, help="measured seconds per repetition (20)")
    p.add_argument("--warm", type=float, help="seconds after start-up before a window opens (default: one interval "
                                              "and 2s, so that no first-ever probe of a name is measured)")
    p.add_argument("--scale", default="1000,10000", help="endpoint counts for the 60s-interval scale runs; "
                                                         "NxW runs N endpoints on W workers (20000x2)")
    p.add_argument("--coverage", choices=("resolvers", "authoritative"), default="authoritative",
                   help="the prober's DNS servers: 3 resolvers (rounds 1-3) or 2 resolvers + the authoritative "
                        "server (default); blackbox's equal coverage asks the same servers")
    p.add_argument("--scrape", type=float, default=45.0,
                   help="after each scale run of 10,000 or more: measure /metrics, then this many seconds "
                        "of a real Prometheus (0: no Prometheus)")
    p.add_argument("--scale-duration", type=float, default=130.0, help="measured seconds per scale run (130)")
    p.add_argument("--scale-warm", type=float, default=65.0,
                   help="seconds after /-/ready before a scale window opens (65: past the cold first interval)")
    p.add_argument("--cli-runs", type=int, default=10)
    p.add_argument("--profile-seconds", type=float, default=30.0,
                   help="py-spy seconds of each profile")
    p.add_argument("--profile-name", default="serve", help="file name of the side-by-side profile in bench/profiles")
    p.add_argument("--only", default="sbs,scale,cli,profile",
                   help="phases to run, comma-separated: sbs, scale, cli, profile (of the side-by-side load), "
                        "scale-profile (of each scale run of 10,000 or more, after its window)")
    p.add_argument("--dns", choices=("knot", "lab"), default="knot",
                   help="the fleet DNS: knotd (default) or the lab's DnsServer in its own process")
    p.add_argument("--smoke", action="store_true", help="tiny and fast: proves the harness works, measures nothing")
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--keep", action="store_true", help="keep the fleet's work dir (configs, logs)")
    args = p.parse_args()
    if args.smoke:
        args.interval, args.reps, args.window, args.warm, args.cli_runs = 5.0, 1, 2.0, 1.0, 2
        args.scale, args.scale_duration, args.scale_warm, args.profile_seconds = f"{args.n},{args.n}x2", 3.0, 0.0, 0
        args.scrape = 0.0
        args.only = args.only.replace(",profile", "")
    phases = set(args.only.split(","))
    scales = [(int(n), int(w or 1)) for n, _, w in (x.partition("x") for x in args.scale.split(",") if x)] \
        if "scale" in phases else []
    if FLEET_CPU:
        os.sched_setaffinity(0, {int(FLEET_CPU)})  # this driver sits with the fleet, off the probers' core
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        with Fleet(n=max([args.n, *(n for n, _ in scales)]), cpus=FLEET_CPU, dns=args.dns, keep=args.keep) as fleet:
            log(f"fleet up in {fleet.workdir}: nginx :{fleet.tls_port}/:{fleet.http_port}, DNS {fleet.resolvers}")
            if "sbs" in phases:
                results["side_by_side"] = side_by_side(fleet, args.n, args.interval, args.reps,
                                                       args.warm if args.warm is not None else args.interval + 2,
                                                       args.window, args.coverage)
            if "cli" in phases:
                results["cli"] = cli(fleet, args.cli_runs, warmup=0 if args.smoke else 2)
            for n, workers in scales:
                log(f"scale: {n} endpoints at 60s on {workers} worker(s) for {args.scale_duration:g}s "
                    f"(load {os.getloadavg()[0]:.2f})")
                results.setdefault("scale", []).append(
                    scale(fleet, n, 5.0 if args.smoke else 60.0, args.scale_duration, args.scale_warm, workers,
                          args.coverage, scrape=args.scrape if n >= 10_000 else (0.0 if args.smoke else None),
                          profile_seconds=args.profile_seconds if n >= 10_000 and "scale-profile" in phases else 0.0))
                if args.json:  # each run is minutes: what is done is kept even if a later phase fails
                    args.json.write_text(json.dumps(results, indent=2))
            if "profile" in phases:
                results["profile"] = profile(fleet, args.n, args.interval, args.profile_seconds,
                                             ROOT / "bench" / "profiles", args.coverage, args.profile_name)
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
