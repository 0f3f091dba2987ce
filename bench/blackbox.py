"""The blackbox_exporter side: its config, its private /etc/hosts, and a paced /probe driver.

Two ways to cover an endpoint (``coverage``):
- "get": one `http` probe of http://<i>.fleet.test:PORT/healthz, following the redirect to
  https://, verifying the certificate and requiring an HSTS header (rounds 1-3);
- "equal": that, plus a `dns` probe for A and one for AAAA of the name against each DNS
  server the prober asks (its resolvers and the authoritative server): what a blackbox
  user configures to watch what one prober probe watches.  blackbox takes the query name
  from the module, so there is one A and one AAAA module per name.  Each is a separate
  /probe request, as Prometheus would scrape it, all at the same per-endpoint rate.

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
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


DNS_MODULE = """\
  dns_{qtype}_{i}:
    prober: dns
    timeout: {timeout}s
    dns:
      query_name: "{name}"
      query_type: "{qtype_upper}"
      transport_protocol: udp
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      valid_rcodes: [NOERROR]
"""
A_CHECK = """\
      validate_answer_rrs:
        fail_if_none_matches_regexp: ['\\sIN\\sA\\s127\\.']
"""


def blackbox_config(fleet: Fleet, n: int, coverage: str, timeout: float) -> str:
    text = CONFIG.format(timeout=f"{timeout:g}", ca_file=fleet.ca_file)
    if coverage == "equal":
        for i in range(n):
            for qtype in ("a", "aaaa"):
                text += DNS_MODULE.format(qtype=qtype, qtype_upper=qtype.upper(), i=i, name=name(i),
                                          timeout=f"{timeout:g}") + (A_CHECK if qtype == "a" else "")
    return text


def start_blackbox(fleet: Fleet, n: int, cpus: str | None = "0", timeout: float = 5.0,
                   coverage: str = "get") -> tuple[Proc, str]:
    if not shutil.which("unshare"):
        raise RuntimeError("unshare (util-linux) is needed to give blackbox a private /etc/hosts")
    config = fleet.workdir / "blackbox.yml"
    config.write_text(blackbox_config(fleet, n, coverage, timeout))
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


def probes_for(fleet: Fleet, coverage: str, dns_servers: list[str]) -> Callable[[int], list[tuple[str, str]]]:
    """endpoint index -> the (module, target) /probe requests that cover it once."""
    def get(i: int) -> list[tuple[str, str]]:
        return [("http_2xx", target(fleet, i))]

    def equal(i: int) -> list[tuple[str, str]]:
        return get(i) + [(f"dns_{q}_{i}", server) for server in dns_servers for q in ("a", "aaaa")]

    return equal if coverage == "equal" else get


@dataclass
class DriveResult:
    sent: int = 0
    completed: int = 0
    succeeded: int = 0
    completed_in_window: int = 0
    per_endpoint: int = 1  # /probe requests per endpoint-probe
    abandoned: int = 0  # requests cancelled at the end of the drive

    @property
    def endpoint_probes_in_window(self) -> float:
        return self.completed_in_window / self.per_endpoint


async def drive(url: str, fleet: Fleet, n: int, rate: float, duration: float, window: tuple[float, float],
                concurrency: int = 64, timeout: float = 10.0,
                probes: Callable[[int], list[tuple[str, str]]] | None = None) -> DriveResult:
    """The /probe requests of `rate` endpoint-probes per second for `duration` seconds, cycling through n targets.

    Each endpoint-probe's requests are spread evenly over its share of the second, and sent
    over `concurrency` kept-alive HTTP/1.1 connections with a few lines of asyncio (httpx cost
    the driver ~1 ms of CPU a request, too much for 350 a second on a shared core).  Bounded:
    at most rate*duration endpoint-probes, each request with a timeout, and the whole drive
    stops at duration + timeout.  `window` (start, end) offsets count completions there.
    """
    probes = probes or probes_for(fleet, "get", [])
    per = len(probes(0))
    result = DriveResult(per_endpoint=per)
    total = int(rate * duration) * per
    host, port = url.removeprefix("http://").rsplit(":", 1)
    queue: asyncio.Queue = asyncio.Queue()
    t0 = time.monotonic()

    async def connection() -> None:
        reader = writer = None
        while True:
            item = await queue.get()
            if item is None:
                break
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                async with asyncio.timeout(timeout):
                    body = await _get(reader, writer, item)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            result.completed += 1
            if window[0] <= time.monotonic() - t0 < window[1]:
                result.completed_in_window += 1
            if b"\nprobe_success 1" in body:
                result.succeeded += 1
        if writer is not None:
            writer.close()

    workers = [asyncio.ensure_future(connection()) for _ in range(concurrency)]
    for k in range(total):
        delay = t0 + k / (rate * per) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        module, probe_target = probes((k // per) % n)[k % per]
        queue.put_nowait(urllib.parse.urlencode({"module": module, "target": probe_target}))
        result.sent += 1
    for _ in workers:
        queue.put_nowait(None)
    _, late = await asyncio.wait(workers, timeout=timeout + 5)
    for task in late:  # still busy at the bound: cancelled, their queued requests counted as abandoned
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    result.abandoned = result.sent - result.completed
    return result


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, query: str) -> bytes:
    writer.write(f"GET /probe?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.startswith(b"content-length:")), None)
    if length is not None:
        return await reader.readexactly(length)
    if b"transfer-encoding: chunked" not in head:
        raise ValueError("blackbox's answer has neither Content-Length nor chunks")
    chunks = []
    while True:  # Go sends a larger /probe answer chunked
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        chunks.append(await reader.readexactly(size + 2))
        if size == 0:
            return b"".join(chunks)
