"""The blackbox_exporter side: its config, its private /etc/hosts, and a paced /probe driver.

blackbox resolves names with the system resolver.  So that it probes the same
names as the prober (http://<i>.fleet.test:PORT/healthz, redirect to https://,
SNI and certificate check on the name), it runs in a private mount namespace
(`unshare -m`) where a hosts file listing the fleet names is bind-mounted over
/etc/hosts.  The host's own /etc/hosts is never touched.
"""
from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from common import BLACKBOX, Fleet, Proc, free_port, http_get, name, wait_for

CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: {timeout}s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      follow_redirects: true
      fail_if_not_ssl: true
      valid_status_codes: [200]
      fail_if_header_not_matches:
        - header: Strict-Transport-Security
          regexp: 'max-age=[0-9]+'
      tls_config:
        ca_file: {ca_file}
"""


def start_blackbox(fleet: Fleet, n: int, cpus: str | None = "0", timeout: float = 5.0) -> tuple[Proc, str]:
    if not shutil.which("unshare"):
        raise RuntimeError("unshare (util-linux) is needed to give blackbox a private /etc/hosts")
    config = fleet.workdir / "blackbox.yml"
    config.write_text(CONFIG.format(timeout=f"{timeout:g}", ca_file=fleet.ca_file))
    hosts = fleet.hosts_file(n)
    port = free_port(["127.0.0.1"])
    script = (f"mount --bind {hosts} /etc/hosts && exec {BLACKBOX} --config.file={config} "
              f"--web.listen-address=127.0.0.1:{port} --log.level=warn")
    # unshare and sh both exec: the pid we hold is blackbox's own.
    proc = Proc(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cpus=cpus,
                log=fleet.workdir / "blackbox.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_get(url + "/-/healthy", 2) is not None, 20, "blackbox_exporter", proc)
        wait_for(lambda: _is_blackbox(proc.pid), 5, "blackbox_exporter exec")
    except BaseException:
        proc.stop()
        raise
    return proc, url


def _is_blackbox(pid: int) -> bool:
    return "prometheus-bla" in Path(f"/proc/{pid}/comm").read_text()


def target(fleet: Fleet, i: int) -> str:
    return f"http://{name(i)}:{fleet.http_port}/healthz"


@dataclass
class DriveResult:
    sent: int = 0
    completed: int = 0
    succeeded: int = 0
    completed_in_window: int = 0


async def drive(url: str, fleet: Fleet, n: int, rate: float, duration: float, window: tuple[float, float],
                concurrency: int = 256, timeout: float = 10.0) -> DriveResult:
    """/probe?target=... at `rate` per second for `duration` seconds, cycling through n targets.

    Bounded: at most rate*duration requests, each with a timeout, and the whole drive
    stops at duration + timeout.  `window` (start, end) offsets count completions there.
    """
    result = DriveResult()
    limit = asyncio.Semaphore(concurrency)
    total = int(rate * duration)
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(i: int) -> None:
            async with limit:
                try:
                    r = await client.get(f"{url}/probe", params={"module": "http_2xx", "target": target(fleet, i % n)})
                except httpx.HTTPError:
                    return
            result.completed += 1
            if window[0] <= time.monotonic() - t0 < window[1]:
                result.completed_in_window += 1
            if b"\nprobe_success 1" in r.content:
                result.succeeded += 1

        tasks = []
        for k in range(total):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(k)))
            result.sent += 1
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout + 5)
    return result
