"""The guard itself: traffic outside loopback is refused and recorded."""
import socket

import pytest


def test_guard_refuses_non_loopback_tcp(network_guard):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never reached, refused before the syscall
    s.close()
    assert network_guard == ["connect to ('192.0.2.1', 443)"]
    network_guard.clear()  # the refusal was the point of this test


def test_guard_refuses_non_loopback_udp_and_lookups(network_guard):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(ConnectionRefusedError):
        s.sendto(b"x", ("198.51.100.7", 53))
    s.close()
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.com", 443)
    assert len(network_guard) == 2
    network_guard.clear()


def test_guard_allows_loopback():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=2)
    c.close()
    srv.close()
