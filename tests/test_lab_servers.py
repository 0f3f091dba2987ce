"""The lab servers misbehave for real: every mode is proved with a real client.

DNS is checked with dnspython's own query functions, TLS with ``ssl`` and
httpx trusting the test root, HTTP with httpx and h11.  Everything listens
on 127.0.0.0/8.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import h11
import httpx
import pytest

from prober.lab.dnsserver import DnsServer, Query
from prober.lab.pki import CA, self_signed
from prober.lab.runner import LabLoop
from prober.lab.webserver import PlainHttpServer, TlsHttpServer

WWW, API, DEFAULT = "www.example.test", "api.example.test", "default.example.test"


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lab() -> Iterator[LabLoop]:
    with LabLoop() as loop:
        yield loop


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str] | str]:
    directory = tmp_path_factory.mktemp("pki")
    root = CA.root()
    inter = root.intermediate()
    files: dict[str, tuple[str, str] | str] = {
        name: inter.issue([name]).write(directory, name) for name in (WWW, API, DEFAULT)}
    files["bundle"] = root.write_bundle(directory / "root.pem")
    return files


@pytest.fixture(scope="module")
def trust(certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs["bundle"])


@pytest.fixture
def dns_server(lab: LabLoop) -> Iterator[DnsServer]:
    server = lab.start(DnsServer())
    server.add_zone("example.test")
    server.set(WWW, "CNAME", ["lb.example.test"])
    server.set("lb.example.test", "A", ["192.0.2.10", "192.0.2.11"], ttl=60)
    yield server
    lab.run(server.stop())


@pytest.fixture
def web(lab: LabLoop, certs) -> Iterator[TlsHttpServer]:
    server = lab.start(TlsHttpServer(*certs[DEFAULT], sni={WWW: certs[WWW], API: certs[API]}))
    yield server
    lab.run(server.stop())


@pytest.fixture
def plain(lab: LabLoop) -> Iterator[PlainHttpServer]:
    server = lab.start(PlainHttpServer())
    yield server
    lab.run(server.stop())


def ask(server: DnsServer, name: str, rtype: str = "A", rd: bool = True, tcp: bool = False,
        timeout: float = 2.0) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    if not rd:
        query.flags &= ~dns.flags.RD
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=server.port, timeout=timeout)


def addresses(response: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


def handshake(port: int, ctx: ssl.SSLContext, sni: str | None, timeout: float = 2.0,
              host: str = "127.0.0.1") -> ssl.SSLSocket:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(sock, server_hostname=sni)
    except BaseException:
        sock.close()
        raise


def assert_closed(sock: socket.socket) -> None:
    """The server has closed this connection: EOF, or RST when it was aborted."""
    try:
        assert sock.recv(10) == b""
    except ConnectionResetError:
        pass


def san_of(tls: ssl.SSLSocket) -> str:
    return dict(tls.getpeercert()["subjectAltName"])["DNS"]


def unverified_names() -> ssl.SSLContext:
    """Verifies the chain but not the name: to see which certificate a server picked."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    return ctx


def https(web: TlsHttpServer, trust: ssl.SSLContext, path: str = "/", host: str = WWW,
          headers: dict[str, str] | None = None, timeout: float = 2.0) -> httpx.Response:
    """GET over TLS to the lab server, as a client that resolved `host` to it."""
    with httpx.Client(verify=trust, timeout=timeout) as client:
        return client.get(f"https://127.0.0.1:{web.port}{path}", headers={"host": host, **(headers or {})},
                          extensions={"sni_hostname": host})


# ------------------------------------------------------------------- DNS
def test_recursive_answer_follows_the_cname_chain(dns_server: DnsServer) -> None:
    response = ask(dns_server, WWW)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.RA and not response.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addresses(response) == {"192.0.2.10", "192.0.2.11"}
    assert response.answer[1].ttl == 60
    assert dns_server.queries == [Query(WWW, "A", True, "udp")]


def test_rd0_query_is_answered_as_authoritative(dns_server: DnsServer) -> None:
    response = ask(dns_server, "lb.example.test", rd=False)
    assert response.flags & dns.flags.AA and not response.flags & dns.flags.RA
    assert addresses(response) == {"192.0.2.10", "192.0.2.11"}
    assert dns_server.queries[-1].rd is False


def test_names_are_case_insensitive_and_removable(dns_server: DnsServer) -> None:
    dns_server.set("Mixed.Example.TEST.", "A", ["198.51.100.1"])
    assert addresses(ask(dns_server, "mixed.example.test")) == {"198.51.100.1"}
    dns_server.remove("mixed.example.test", "A")
    assert ask(dns_server, "MIXED.example.test").rcode() == dns.rcode.NXDOMAIN


def test_negative_answers_carry_the_zone_soa(dns_server: DnsServer) -> None:
    missing = ask(dns_server, "nope.example.test")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    nodata = ask(dns_server, "lb.example.test", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_name_outside_every_zone_is_nxdomain_without_soa(lab: LabLoop) -> None:
    server = lab.start(DnsServer())
    try:
        response = ask(server, "anything.invalid")
        assert response.rcode() == dns.rcode.NXDOMAIN and response.authority == []
    finally:
        lab.run(server.stop())


@pytest.mark.parametrize("mode, rcode", [("servfail", dns.rcode.SERVFAIL), ("refused", dns.rcode.REFUSED),
                                         ("nxdomain", dns.rcode.NXDOMAIN)])
def test_rcode_modes_server_wide_and_per_name(dns_server: DnsServer, mode: str, rcode: int) -> None:
    dns_server.mode = mode
    assert ask(dns_server, WWW).rcode() == rcode
    dns_server.mode = "normal"
    dns_server.set_mode(WWW, mode)
    assert ask(dns_server, WWW).rcode() == rcode
    assert ask(dns_server, "lb.example.test").rcode() == dns.rcode.NOERROR
    dns_server.set_mode(WWW, None)
    assert ask(dns_server, WWW).rcode() == dns.rcode.NOERROR


def test_truncate_sets_tc_over_udp_and_tcp_answers_fully(dns_server: DnsServer) -> None:
    dns_server.mode = "truncate"
    assert ask(dns_server, WWW).flags & dns.flags.TC
    response, used_tcp = dns.query.udp_with_fallback(dns.message.make_query(WWW, "A"), "127.0.0.1",
                                                     port=dns_server.port, timeout=2.0)
    assert used_tcp and addresses(response) == {"192.0.2.10", "192.0.2.11"}
    assert [q.transport for q in dns_server.queries] == ["udp", "udp", "tcp"]


def test_bulk_answer_forces_a_real_client_to_tcp(dns_server: DnsServer) -> None:
    dns_server.bulk("big.example.test", 1000)
    response, used_tcp = dns.query.udp_with_fallback(dns.message.make_query("big.example.test", "A"),
                                                     "127.0.0.1", port=dns_server.port, timeout=2.0)
    assert used_tcp and len(addresses(response)) == 1000
    assert [q.transport for q in dns_server.queries] == ["udp", "tcp"]


@pytest.mark.parametrize("tcp", [False, True])
def test_blackhole_never_answers(dns_server: DnsServer, tcp: bool) -> None:
    dns_server.set_mode(WWW, "blackhole")
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, WWW, tcp=tcp, timeout=0.3)
    assert dns_server.queries == [Query(WWW, "A", True, "tcp" if tcp else "udp")]


def test_delay_answers_late(dns_server: DnsServer) -> None:
    dns_server.mode = "delay:0.5"
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, WWW, timeout=0.1)
    assert addresses(ask(dns_server, WWW, timeout=5.0)) == {"192.0.2.10", "192.0.2.11"}


@pytest.mark.parametrize("tcp", [False, True])
def test_malformed_reply_fails_to_parse(dns_server: DnsServer, tcp: bool) -> None:
    dns_server.mode = "malformed"
    with pytest.raises(dns.exception.FormError):
        ask(dns_server, WWW, tcp=tcp)


@pytest.mark.parametrize("mode", ["wrong_id", "wrong_question"])
def test_mismatched_reply_is_rejected_by_the_client(dns_server: DnsServer, mode: str) -> None:
    dns_server.mode = mode
    with pytest.raises(dns.query.BadResponse):
        ask(dns_server, WWW)


def test_cname_loop_serves_a_chain_back_to_the_name(dns_server: DnsServer) -> None:
    dns_server.set_mode("a.example.test", "cname_loop")
    response = ask(dns_server, "a.example.test")
    chain = [(rrset.name.to_text(), rrset[0].target.to_text()) for rrset in response.answer]
    assert chain == [("a.example.test.", "loop.a.example.test."), ("loop.a.example.test.", "a.example.test.")]


def test_resolvers_on_other_addresses_disagree(lab: LabLoop, dns_server: DnsServer) -> None:
    # Same port, another loopback address: all of 127/8 is ours.
    other = lab.start(DnsServer("127.0.0.2", dns_server.port))
    try:
        other.set("lb.example.test", "A", ["203.0.113.5"])
        query = dns.message.make_query("lb.example.test", "A")
        theirs = dns.query.udp(query, "127.0.0.2", port=other.port, timeout=2.0)
        assert addresses(theirs) == {"203.0.113.5"} != addresses(ask(dns_server, "lb.example.test"))
    finally:
        lab.run(other.stop())


def test_stop_ends_a_hung_tcp_connection(lab: LabLoop) -> None:
    server = lab.start(DnsServer())
    server.mode = "blackhole"
    with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock:
        sock.sendall(len(wire := dns.message.make_query(WWW, "A").to_wire()).to_bytes(2, "big") + wire)
        lab.run(server.stop())
        lab.run(server.stop())  # idempotent
        assert_closed(sock)


def test_unknown_dns_mode_or_bad_record_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown DNS server mode 'sometimes'"):
        DnsServer().mode = "sometimes"
    with pytest.raises(ValueError):
        DnsServer().set_mode(WWW, "delay:soon")
    with pytest.raises(ValueError, match="bad A record for www.example.test"):
        DnsServer().set(WWW, "A", ["not-an-address"])


async def test_dns_server_runs_on_the_callers_loop() -> None:
    server = DnsServer()
    await server.start()
    try:
        server.set(WWW, "AAAA", ["2001:db8::1"])
        response = await dns.asyncquery.udp(dns.message.make_query(WWW, "AAAA"), "127.0.0.1",
                                            port=server.port, timeout=2.0)
        assert [rd.to_text() for rd in response.answer[0]] == ["2001:db8::1"]
    finally:
        await server.stop()
        await server.stop()


# ------------------------------------------------------------------- TLS
def test_sni_selects_the_certificate(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    for name in (WWW, API):
        with handshake(web.port, trust, name) as tls:  # verified, hostname checked
            assert san_of(tls) == name


def test_unknown_or_missing_sni_gets_the_default_certificate(web: TlsHttpServer, certs) -> None:
    ctx = unverified_names()
    ctx.load_verify_locations(certs["bundle"])
    for sni in ("other.example.test", None):
        with handshake(web.port, ctx, sni) as tls:
            assert san_of(tls) == DEFAULT


def test_routes_statuses_and_edge_headers(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.hsts = "max-age=31536000"
    web.server_header = "envoy"
    web.headers = {"x-amz-cf-id": "abc=="}
    web.route("/healthz", status=503, body=b"upstream connect error or disconnect/reset before headers",
              headers={"content-type": "text/plain", "server": "awselb/2.0"})
    sick = https(web, trust, "/healthz?full=1", headers={"authorization": "Bearer t"})
    assert sick.status_code == 503 and sick.text.startswith("upstream connect error")
    assert sick.headers["server"] == "awselb/2.0"  # the route's header wins over the server's
    assert sick.headers["strict-transport-security"] == "max-age=31536000"
    assert sick.headers["x-amz-cf-id"] == "abc=="
    assert https(web, trust, "/").text == "ok"
    assert https(web, trust, "/missing").status_code == 404
    seen = web.requests[0]
    assert (seen.target, seen.host, seen.sni) == ("/healthz?full=1", WWW, WWW)
    assert ("authorization", "Bearer t") in seen.headers


def test_keep_alive_serves_many_requests_on_one_connection(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    with httpx.Client(verify=trust, timeout=2.0) as client:
        for _ in range(3):
            client.get(f"https://127.0.0.1:{web.port}/", headers={"host": WWW}, extensions={"sni_hostname": WWW})
    assert web.connections == 1 and len(web.requests) == 3


def test_route_delay_holds_the_response(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.route("/slow", delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        https(web, trust, "/slow", timeout=0.1)


def test_session_tickets_are_off(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    with handshake(web.port, trust, WWW) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
        while tls.recv(4096):  # TLS 1.3 tickets would arrive after the handshake
            pass
        assert tls.version() == "TLSv1.3" and not tls.session.has_ticket


def test_silent_server_hangs_the_handshake(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode = "silent"
    with pytest.raises(TimeoutError):
        handshake(web.port, trust, WWW, timeout=0.3)


def test_garbage_instead_of_server_hello(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode = "garbage"
    with pytest.raises(ssl.SSLError):
        handshake(web.port, trust, WWW)


def test_reset_mid_handshake(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode = "reset"
    with pytest.raises(ConnectionResetError):
        handshake(web.port, trust, WWW)


def weak_client(trust_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=trust_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def test_weak_protocol_server_negotiates_tls_1_1(lab: LabLoop, certs, trust: ssl.SSLContext) -> None:
    server = lab.start(TlsHttpServer(*certs[WWW], min_version="1.1", max_version="1.1"))
    try:
        with handshake(server.port, weak_client(certs["bundle"]), WWW) as tls:
            assert tls.version() == "TLSv1.1"
        with pytest.raises(ssl.SSLError):  # a default client refuses it
            handshake(server.port, trust, WWW)
    finally:
        lab.run(server.stop())


def test_tls13_only_server_refuses_a_tls12_client(lab: LabLoop, certs) -> None:
    server = lab.start(TlsHttpServer(*certs[WWW], min_version="1.3"))
    try:
        ctx = ssl.create_default_context(cafile=certs["bundle"])
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            handshake(server.port, ctx, WWW)
    finally:
        lab.run(server.stop())


def test_self_signed_server_fails_verification(lab: LabLoop, tmp_path: Path, trust: ssl.SSLContext) -> None:
    server = lab.start(TlsHttpServer(*self_signed([WWW]).write(tmp_path, "self")))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(server.port, trust, WWW)
    finally:
        lab.run(server.stop())


def test_bad_certificate_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load certificate"):
        TlsHttpServer(str(tmp_path / "none.crt"), str(tmp_path / "none.key"))
    with pytest.raises(ValueError, match="unknown TLS version"):
        TlsHttpServer("x", "y", min_version="1.4")


def test_unknown_web_mode_or_route_is_refused(web: TlsHttpServer, plain: PlainHttpServer) -> None:
    with pytest.raises(ValueError, match="use one of normal"):
        web.mode = "redirect"
    with pytest.raises(ValueError):
        plain.mode = "normal"
    with pytest.raises(ValueError, match="not a final HTTP status"):
        web.route("/", status=103)


def test_no_content_route_and_head_request(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.route("/empty", status=204)
    assert https(web, trust, "/empty").status_code == 204
    with httpx.Client(verify=trust, timeout=2.0) as client:
        head = client.head(f"https://127.0.0.1:{web.port}/", headers={"host": WWW},
                           extensions={"sni_hostname": WWW})
    assert head.status_code == 200 and head.headers["content-length"] == "2" and head.content == b""


async def test_stop_ends_a_request_held_by_a_route_delay(certs) -> None:
    server = TlsHttpServer(*certs[WWW])
    server.route("/held", delay=60)
    await server.start()
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=certs["bundle"]),
                                 timeout=30.0) as client:
        request = asyncio.create_task(client.get(f"https://127.0.0.1:{server.port}/held", headers={"host": WWW},
                                                 extensions={"sni_hostname": WWW}))
        while not server.requests:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(server.stop(), 5.0)  # a deadlock guard, not a speed check
        with pytest.raises(httpx.TransportError):
            await request


# ------------------------------------------------------- hostile HTTP modes
def test_slowloris_sends_one_byte_at_a_time(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode, web.slow_interval = "slowloris", 0.05
    with handshake(web.port, trust, WWW) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
        assert [tls.recv(100) for _ in range(5)] == [b"H", b"T", b"T", b"P", b"/"]


def test_huge_body_streams_more_than_a_client_should_read(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode = "huge_body"
    with httpx.Client(verify=trust, timeout=2.0) as client:
        with client.stream("GET", f"https://127.0.0.1:{web.port}/", headers={"host": WWW},
                           extensions={"sni_hostname": WWW}) as response:
            got = 0
            for chunk in response.iter_raw():
                got += len(chunk)
                if got >= 2**20:
                    break
    assert int(response.headers["content-length"]) == web.huge_body_bytes and got >= 2**20


def test_endless_headers_overflow_the_client_limit(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode = "endless_headers"
    with pytest.raises(httpx.RemoteProtocolError):
        https(web, trust)


def test_endless_chunked_body_never_ends(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode = "endless_chunked"
    with httpx.Client(verify=trust, timeout=2.0) as client:
        with client.stream("GET", f"https://127.0.0.1:{web.port}/", headers={"host": WWW},
                           extensions={"sni_hostname": WWW}) as response:
            assert response.headers["transfer-encoding"] == "chunked"
            got = 0
            for chunk in response.iter_raw():
                got += len(chunk)
                if got > 2**20:
                    break
    assert got > 2**20


def test_flood_1xx_never_sends_a_final_response(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode = "flood_1xx"
    client = h11.Connection(h11.CLIENT)
    with handshake(web.port, trust, WWW) as tls:
        tls.sendall(client.send(h11.Request(method="GET", target="/", headers=[("host", WWW)]))
                    + client.send(h11.EndOfMessage()))
        informational = 0
        while informational < 200:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(tls.recv(65536))
                continue
            assert isinstance(event, h11.InformationalResponse)
            informational += 1


def test_redirect_loop_exhausts_the_client(web: TlsHttpServer, trust: ssl.SSLContext) -> None:
    web.mode = "redirect_loop"
    with httpx.Client(verify=trust, timeout=2.0, follow_redirects=True, max_redirects=5) as client:
        with pytest.raises(httpx.TooManyRedirects):
            client.get(f"https://127.0.0.1:{web.port}/health", headers={"host": WWW},
                       extensions={"sni_hostname": WWW})


def test_stop_closes_a_hung_connection_at_once(lab: LabLoop, certs) -> None:
    server = lab.start(TlsHttpServer(*certs[WWW], mode="silent"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        lab.run(server.stop(), timeout=2.0)
        lab.run(server.stop())  # idempotent
        assert_closed(sock)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2.0)


# ------------------------------------------------------------- plain HTTP
def http_get(server: PlainHttpServer, path: str = "/", host: str = WWW) -> httpx.Response:
    return httpx.get(f"http://{server.host}:{server.port}{path}", headers={"host": host}, timeout=2.0)


def test_plain_redirects_to_https_on_the_same_host(plain: PlainHttpServer) -> None:
    response = http_get(plain, "/a/b?c=1", host=f"{WWW}:8080")
    assert response.status_code == 301
    assert response.headers["location"] == f"https://{WWW}/a/b?c=1"
    plain.https_port = 8443
    assert http_get(plain, "/x").headers["location"] == f"https://{WWW}:8443/x"


@pytest.mark.parametrize("mode, status, location", [
    ("no_redirect", 200, None),
    ("wrong_host", 301, "https://elsewhere.example.net/"),
    ("http_redirect", 301, f"http://{WWW}/p"),
])
def test_plain_redirect_modes(plain: PlainHttpServer, mode: str, status: int, location: str | None) -> None:
    plain.mode = mode
    response = http_get(plain, "/p" if mode == "http_redirect" else "/")
    assert response.status_code == status
    assert response.headers.get("location") == location


def test_plain_routed_path_is_served_despite_redirect(plain: PlainHttpServer) -> None:
    plain.route("/.well-known/acme-challenge/t", body=b"token")
    assert http_get(plain, "/.well-known/acme-challenge/t").text == "token"
    assert http_get(plain, "/other").status_code == 301


def test_plain_servers_share_a_port_on_other_loopback_addresses(lab: LabLoop) -> None:
    first = lab.start(PlainHttpServer("127.0.0.2", mode="no_redirect"))
    second = lab.start(PlainHttpServer("127.0.0.3", first.port, mode="wrong_host"))
    try:
        assert (http_get(first).status_code, http_get(second).status_code) == (200, 301)
    finally:
        lab.run(first.stop())
        lab.run(second.stop())


def test_plain_server_hostile_tcp_mode(plain: PlainHttpServer) -> None:
    plain.mode = "reset"
    with pytest.raises(httpx.ReadError):
        http_get(plain)


# ----------------------------------------------------------------- runner
def test_lab_loop_stops_every_server_on_exit() -> None:
    with LabLoop() as loop:
        server = loop.start(PlainHttpServer())
        assert http_get(server).status_code == 301
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2.0)
    loop.stop()  # idempotent
    with pytest.raises(RuntimeError, match="stopped"):
        loop.start(PlainHttpServer())
