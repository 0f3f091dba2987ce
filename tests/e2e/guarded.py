"""`python tests/e2e/guarded.py ARGS` = `python -m prober.cli ARGS`, allowed to reach loopback only.

The in-process network guard of tests/conftest.py cannot see into a child
process, so the e2e tier runs the prober through this wrapper: it patches the
socket calls that open or address traffic (as the guard fixture does),
refuses any destination outside 127.0.0.0/8 and ::1 before a packet leaves,
and appends each attempt to the file named by PROBER_E2E_GUARD_LOG, which the
harness reads after every run.
"""
from __future__ import annotations

import ipaddress
import os
import runpy
import socket
import sys


def loopback(host: object) -> bool:
    if host in (None, "", b"", "localhost"):
        return True  # unspecified source, or the one name that is always loopback
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return False  # a name: resolving it would already be traffic
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check(address: object, what: str) -> None:
    """Raise (and log) unless `address` is an AF_UNIX path or a loopback (host, port, ...) tuple."""
    if isinstance(address, tuple) and address and not loopback(address[0]):
        log = os.environ.get("PROBER_E2E_GUARD_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{what} to {address!r}\n")
        raise ConnectionRefusedError(f"network guard: {what} to {address!r} is outside 127.0.0.0/8 and ::1")


def install() -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_getaddrinfo = socket.socket.sendto, socket.getaddrinfo

    def connect(self, address):
        check(address, "connect")
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address, "connect")
        return real_connect_ex(self, address)

    def sendto(self, data, *rest):  # (data, address) or (data, flags, address)
        check(rest[-1], "sendto")
        return real_sendto(self, data, *rest)

    def getaddrinfo(host, *args, **kwargs):
        check((host,), "getaddrinfo")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    socket.getaddrinfo = getaddrinfo


if __name__ == "__main__":
    install()
    sys.argv[0] = "prober"
    runpy.run_module("prober.cli", run_name="__main__", alter_sys=True)
