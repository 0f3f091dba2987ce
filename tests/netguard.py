"""The network guard: tests, benchmarks and demos reach 127.0.0.0/8 and ::1 only.

One implementation for both places it is needed:
- tests/conftest.py's autouse fixture patches this process with `patches()`;
- a child process (`prober serve`, `prober check` in the e2e tier) runs as
  `python tests/netguard.py ARGS`, which is `python -m prober.cli ARGS` with the
  same patches installed.  Each refused attempt is printed on stderr after
  MARK and appended to the file named by $PROBER_GUARD_LOG, so the parent test
  can fail on it even when the prober turned the refusal into a finding.
"""
from __future__ import annotations

import ipaddress
import os
import runpy
import socket
import sys
from collections.abc import Callable
from typing import Any

MARK = "NETWORK GUARD:"
Report = Callable[[str], None]


def loopback(host: object) -> bool:
    if host in (None, "", b"", "localhost", "localhost."):
        return True  # unspecified source, or the one name that is always loopback
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return False  # a name: resolving it would already be traffic
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check(address: object, what: str, report: Report) -> None:
    """Refuse (and report) unless `address` is an AF_UNIX path or a loopback (host, port, ...) tuple."""
    if isinstance(address, tuple) and address and not loopback(address[0]):
        report(f"{what} to {address!r}")
        raise ConnectionRefusedError(f"network guard: {what} to {address!r} is outside 127.0.0.0/8 and ::1")


def patches(report: Report) -> list[tuple[Any, str, Any]]:
    """(owner, attribute, replacement) for every socket call that opens or addresses traffic."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_getaddrinfo = socket.socket.sendto, socket.getaddrinfo

    def connect(self, address):
        check(address, "connect", report)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address, "connect", report)
        return real_connect_ex(self, address)

    def sendto(self, data, *rest):  # (data, address) or (data, flags, address)
        check(rest[-1], "sendto", report)
        return real_sendto(self, data, *rest)

    def getaddrinfo(host, *args, **kwargs):
        if not loopback(host):
            report(f"getaddrinfo({host!r})")
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    return [(socket.socket, "connect", connect), (socket.socket, "connect_ex", connect_ex),
            (socket.socket, "sendto", sendto), (socket, "getaddrinfo", getaddrinfo)]


def _report_outward(text: str) -> None:
    print(f"{MARK} {text}", file=sys.stderr, flush=True)
    log = os.environ.get("PROBER_GUARD_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    for owner, name, replacement in patches(_report_outward):
        setattr(owner, name, replacement)
    sys.argv[0] = "prober"
    runpy.run_module("prober.cli", run_name="__main__", alter_sys=True)
