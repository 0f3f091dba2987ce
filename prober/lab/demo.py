"""`prober demo`: a self-contained lab on loopback, probed by `prober serve`.

For a newcomer on a fresh machine: no root, no internet, ten seconds.  It
starts the lab scenarios (a DNS server per view, a demo CA, one TLS/HTTP
endpoint per failure mode), prints one round of verdicts, then serves them.
Nothing outlives it: the lab's directory (its private keys too) is removed on
exit, on Ctrl-C and on SIGTERM, and `--once` prints no address that is dead
once it has returned.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import socket
import sys
import textwrap

from ..engine import probe
from ..render import use_colour
from .scenarios import DEMO, SCENARIOS, Lab

_COLOURS = {"OK": "32", "WARNING": "33", "CRITICAL": "31", "UNKNOWN": "35"}
_MIN_VERDICT = 30  # below this, wrapping is worse than running past the edge


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
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
    host = "127.0.0.1" if host == "localhost" else host
    return host, number or _free_port(host)


def _check_free(host: str, port: int) -> None:
    """Bind the listen address once, as the service will, before anything is printed."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the service's own socket
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ValueError(f"--listen {host}:{port}: {err.strerror or err} (is another prober running "
                             "there? pick another port, or leave --listen out for a free one)") from None


def verdict_table(reports, width: int | None = None, colour: bool = False) -> str:
    """STATUS, ENDPOINT, VERDICT: the verdict wraps at the terminal's width instead of being cut."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    rows = sorted(reports, key=lambda r: (r.hostname != "healthy.lab.test", r.hostname))
    name_width = max([len("ENDPOINT")] + [len(r.hostname) for r in rows])
    indent = 11 + name_width  # status, space, name, space
    room = max(width - indent, _MIN_VERDICT)
    lines = [f"{'STATUS':<9} {'ENDPOINT':<{name_width}} VERDICT"]
    for r in rows:
        message = r.verdict.message.replace(" (served by", " (by").split(" (+")[0]
        status = r.status.upper()
        cell = f"\x1b[{_COLOURS.get(status, '0')}m{status:<9}\x1b[0m" if colour else f"{status:<9}"
        wrapped = textwrap.wrap(message, room, break_on_hyphens=False) or [""]
        lines.append(f"{cell} {r.hostname:<{name_width}} {wrapped[0]}")
        lines += [" " * indent + more for more in wrapped[1:]]
    return "\n".join(lines)


async def _round(path: str) -> list:
    from ..config import load_config
    return list(await asyncio.gather(*(probe(e) for e in load_config(path).endpoints)))


def _first_round(path: str) -> list:
    """One round of probes, where Ctrl-C or SIGTERM cancels the round instead of striking inside asyncio.

    While it runs, the two signals only note themselves and cancel the round: raised as
    KeyboardInterrupt at an arbitrary point, they could leave a half-built event loop for the
    garbage collector (and a traceback on exit).
    """
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = []
    stopped: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopped.append(signum)
        for loop, task in running:
            loop.call_soon_threadsafe(task.cancel)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    loop = None
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(_round(path))
        running.append((loop, task))
        if stopped:
            task.cancel()
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            if not task.done():
                task.cancel()
                loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if loop is not None:
            loop.close()


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the lab's cleanup, as Ctrl-C does


def demo_main(args: argparse.Namespace) -> int:
    try:
        host, port = _listen(args.listen)
        if not args.once:
            _check_free(host, port)
    except ValueError as err:
        print(f"prober: {err}", file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, _terminate)
    scenarios = tuple(s for s in SCENARIOS if s.name in DEMO)
    lab: Lab | None = None
    try:
        lab = Lab(scenarios, timeout=3.0, interval=15.0)
        with lab:
            return _run(args, lab, host, port, len(scenarios))
    except KeyboardInterrupt:  # before the service took over Ctrl-C: stopped, like the service's 0
        print("prober demo: stopped", file=sys.stderr)
        return 0
    finally:
        if lab is not None:
            shutil.rmtree(lab.dir, ignore_errors=True)


def _run(args: argparse.Namespace, lab: Lab, host: str, port: int, count: int) -> int:
    path = lab.write_config()
    dns = lab.resolvers
    print(f"prober demo: {count} endpoints on loopback\nDNS at 127.0.0.1:{dns['internal'].port} (internal), "
          f":{dns['public'].port} (public), :{dns['authoritative'].port} (authoritative)\n", flush=True)
    print(verdict_table(_first_round(path), colour=use_colour(getattr(args, "color", "never"))))
    if args.once:
        print("\nthe lab is gone now; `prober demo` without --once keeps it serving:\n"
              "a status page, /metrics, and a config for `prober check`", flush=True)
        return 0
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    print(f"\nstatus:   {base}/")
    print(f"metrics:  {base}/metrics")
    print(f"report:   {base}/report?hostname=expired.lab.test")
    print(f"one-shot: prober check wrong-host.lab.test --config {path}")
    print("serving every 15s until Ctrl-C; then the lab and its keys are removed\n", flush=True)
    from ..service.app import serve_main
    serve_args = argparse.Namespace(config=path, listen=f"{f'[{host}]' if ':' in host else host}:{port}",
                                    shard=None, location=None, concurrency=64, log_level="warning",
                                    first_round=True)
    return serve_main(serve_args)
