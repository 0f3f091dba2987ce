"""`prober demo`: a self-contained lab on loopback, probed by `prober serve`.

For a newcomer on a fresh machine: no root, no internet, ten seconds.  It
starts the lab scenarios (a DNS server per view, a demo CA, one TLS/HTTP
endpoint per failure mode), prints one round of verdicts, then serves them.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from ..engine import probe
from ..render import to_dict
from .scenarios import DEMO, SCENARIOS, Lab

_WIDTH = 120


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    number = int(port) if port.isdigit() else -1
    if not 0 <= number <= 65535:
        raise ValueError(f"--listen {text!r}: want ADDR:PORT on loopback, e.g. 127.0.0.1:9716")
    if not (host.startswith("127.") or host in ("::1", "localhost")):
        raise ValueError(f"--listen {text!r}: the demo serves on loopback only")
    return host, number or _free_port(host)


def verdict_table(reports) -> str:
    lines = [f"{'STATUS':<9} {'ENDPOINT':<34} VERDICT"]
    for r in sorted(reports, key=lambda r: (r.hostname != "healthy.lab.test", r.hostname)):
        doc = to_dict(r)
        message = doc["verdict"]["message"].replace(" (served by", " (by").split(" (+")[0]
        message = message if len(message) <= _WIDTH else message[: _WIDTH - 3] + "..."
        lines.append(f"{r.status.upper():<9} {r.hostname:<34} {message}")
    return "\n".join(lines)


async def _round(lab: Lab, path: str) -> list:
    from ..config import load_config
    return list(await asyncio.gather(*(probe(e) for e in load_config(path).endpoints)))


def demo_main(args: argparse.Namespace) -> int:
    try:
        host, port = _listen(args.listen)
    except ValueError as err:
        print(f"prober: {err}", file=sys.stderr)
        return 3
    scenarios = tuple(s for s in SCENARIOS if s.name in DEMO)
    with Lab(scenarios, timeout=3.0, interval=15.0) as lab:
        path = lab.write_config()
        print(f"prober demo: {len(scenarios)} endpoints on loopback, DNS at "
              f"127.0.0.1:{lab.resolvers['internal'].port} (internal), "
              f":{lab.resolvers['public'].port} (public), :{lab.resolvers['authoritative'].port} (authoritative)")
        print(f"config: {path}\n")
        print(verdict_table(asyncio.run(_round(lab, path))))
        base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        print(f"\nmetrics:  {base}/metrics")
        print(f"report:   {base}/report?hostname=expired.lab.test")
        print(f"one-shot: prober check wrong-host.lab.test --config {path}")
        if args.once:
            return 0
        print("serving every 15s; stop with Ctrl-C\n", flush=True)
        from ..service.app import serve_main
        serve_args = argparse.Namespace(config=path, listen=f"{host}:{port}", shard=None, location=None,
                                        concurrency=64, log_level="warning")
        code = serve_main(serve_args)
    return code
