"""Shared fixtures.  The network guard is autouse and absolute.

Tests may only talk to 127.0.0.0/8 and ::1.  The guard patches the socket
calls that open or address traffic, refuses anything else, and records the
attempt so the test fails even when the prober swallowed the error and
turned it into a finding.
"""
from __future__ import annotations

import ipaddress
import socket

import pytest

_ALLOWED_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def _is_loopback_host(host) -> bool:
    if host is None or host == "":
        return True  # bind-any / unspecified source
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]")
    if host in _ALLOWED_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _check_address(address, violations: list[str], what: str) -> None:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return
    if isinstance(address, tuple) and address and not _is_loopback_host(address[0]):
        violations.append(f"{what} to {address!r}")
        raise ConnectionRefusedError(f"network guard: {what} to {address!r} is outside 127.0.0.0/8 and ::1")


@pytest.fixture(autouse=True)
def network_guard(monkeypatch):
    violations: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        _check_address(address, violations, "connect")
        return real_connect(self, address)

    def connect_ex(self, address):
        _check_address(address, violations, "connect")
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        _check_address(args[-1], violations, "sendto")
        return real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback_host(host):
            violations.append(f"getaddrinfo({host!r})")
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield violations
    if violations:
        pytest.fail("network guard: this test tried to reach outside loopback: " + "; ".join(violations))
