"""TLS and plain-HTTP lab endpoints on loopback, with hostile modes.

``TlsHttpServer`` imitates a web server or edge on port 443: a default
certificate plus an SNI map (unknown names get the default, like nginx's
default_server), HTTP/1.1 over the TLS stream via h11, per-path routes,
HSTS, a Server header and any extra headers an edge would add::

    web = TlsHttpServer(certfile, keyfile, sni={"api.example.test": (c2, k2)},
                        hsts="max-age=31536000", server_header="awselb/2.0")
    web.route("/healthz", status=503, body=b"upstream connect error", delay=0.5)
    await web.start()                       # 127.0.0.1, ephemeral port: web.port
    web.mode = "silent"                     # from now on: accept and never speak

``PlainHttpServer`` imitates port 80: it redirects to https:// (or does not,
or redirects to the wrong place).

Both bind any 127.x.y.z (all of 127/8 routes to lo on Linux) so several
endpoints can share a port number on different addresses.  Modes and routes
may be changed while the server runs; the next connection or request sees
them.
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import h11

from prober.lab.catalogue import MODERN_CIPHERS
from prober.lab.runner import TcpService, hostport

# Modes that act before TLS (or before HTTP, on the plain server).
TCP_MODES: tuple[str, ...] = ("silent", "garbage", "reset")
# Modes that misbehave at the HTTP level, on every path.
HTTP_MODES: tuple[str, ...] = ("slowloris", "huge_body", "endless_headers", "endless_chunked",
                               "flood_1xx", "redirect_loop")
TLS_MODES: tuple[str, ...] = ("normal", *TCP_MODES, *HTTP_MODES)
PLAIN_MODES: tuple[str, ...] = ("redirect", "no_redirect", "wrong_host", "http_redirect",
                                *TCP_MODES, *HTTP_MODES)

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3,
}
HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]]
Headers = tuple[tuple[str, str], ...]

_READ = 65536
_CHUNK = b"x" * 65536
_FILLER_HEADERS = b"".join(b"x-filler-%d: %s\r\n" % (i, b"y" * 64) for i in range(64))
_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Route:
    status: int = 200
    body: bytes = b"ok"
    headers: Headers = ()
    delay: float = 0.0  # seconds before the response head is sent


@dataclass(frozen=True)
class SeenRequest:
    method: str
    target: str  # the request target as sent, query string included
    host: str | None
    sni: str | None  # the TLS server name the client sent, if any
    headers: Headers  # names in lower case


_NOT_FOUND = Route(404, b"not found")
_ROOT = Route()


def _headers(headers: HeaderInput | None) -> Headers:
    if headers is None:
        return ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(k), str(v)) for k, v in pairs)


def _strip_port(host: str) -> str:
    """'example.test:8080' -> 'example.test'; '[::1]:80' -> '[::1]'."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def tls_version(value: str | ssl.TLSVersion | None) -> ssl.TLSVersion | None:
    """'1.0'..'1.3' (or a TLSVersion) -> TLSVersion; raises ValueError naming the choices."""
    if value is None or isinstance(value, ssl.TLSVersion):
        return value
    try:
        return TLS_VERSIONS[value]
    except KeyError:
        raise ValueError(f"unknown TLS version {value!r}; use one of {', '.join(TLS_VERSIONS)}") from None


class _HttpServer:
    """What both servers share: the listener, routes, modes and the h11 loop."""

    MODES: tuple[str, ...] = ()

    def __init__(self, host: str, port: int, mode: str, hsts: str | None, server_header: str | None,
                 headers: HeaderInput | None) -> None:
        self.host = host
        self.port = port
        self.mode = mode
        self.hsts = hsts
        self.server_header = server_header
        self._headers = _headers(headers)
        self.slow_interval = 1.0  # slowloris: seconds between bytes
        self.huge_body_bytes = 256 * 2**20  # huge_body: bytes streamed
        self.endless_interval = 0.005  # endless_*, flood_1xx: seconds between blocks written
        self.requests: list[SeenRequest] = []
        self.connections = 0
        self._routes: dict[str, Route] = {}
        self._tcp: TcpService | None = None

    # ------------------------------------------------------------ configuration
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown {type(self).__name__} mode {mode!r}; use one of {', '.join(self.MODES)}")
        self._mode = mode

    @property
    def headers(self) -> Headers:
        """Extra headers on every response (an edge's x-amz-cf-id, via, ...)."""
        return self._headers

    @headers.setter
    def headers(self, headers: HeaderInput | None) -> None:
        self._headers = _headers(headers)

    def route(self, path: str, status: int = 200, body: bytes | str = b"ok",
              headers: HeaderInput | None = None, delay: float = 0.0) -> None:
        """Answer `path` (query string ignored) with this status, body and headers, after `delay`."""
        if not 200 <= status <= 599:  # 1xx are not final responses: see mode flood_1xx
            raise ValueError(f"route {path}: status {status} is not a final HTTP status (200-599)")
        data = body.encode() if isinstance(body, str) else body
        self._routes[path] = Route(status, data, _headers(headers), delay)

    @property
    def address(self) -> str:
        return hostport(self.host, self.port)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        tcp = TcpService(self._connection)
        self.port = await tcp.listen(self.host, self.port)
        self._tcp = tcp

    async def stop(self) -> None:
        """Stop listening and close every connection, even a hung one.  Idempotent."""
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            await tcp.close()

    # -------------------------------------------------------------- connection
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        mode = self.mode
        if mode in TCP_MODES:
            await _hostile_tcp(mode, reader, writer)
            return
        sni = await self._secure(writer)
        conn = h11.Connection(h11.SERVER)
        while await self._exchange(conn, reader, writer, sni):
            conn.start_next_cycle()

    async def _secure(self, writer: asyncio.StreamWriter) -> str | None:
        """Upgrade to TLS where the server speaks it; return the SNI the client sent."""
        return None

    async def _exchange(self, conn: h11.Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, sni: str | None) -> bool:
        """Serve one request; True when the connection may carry another."""
        try:
            request = await _read_request(conn, reader)
        except h11.RemoteProtocolError:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(writer, conn, h11.Response(status_code=400, headers=[("connection", "close")]),
                            h11.EndOfMessage())
            return False
        if request is None:
            return False
        self.requests.append(_seen(request, sni))
        await self._respond(conn, writer, request)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    # ---------------------------------------------------------------- answers
    def _answer(self, request: h11.Request) -> Route:
        """The route for this request in the normal modes; the plain server adds redirects."""
        path = _path(request)
        return self._routes.get(path, _ROOT if path == "/" else _NOT_FOUND)

    def _head(self, route: Route) -> list[tuple[str, str]]:
        """Response headers: the server's own, then the route's (which win on a name clash)."""
        mine: list[tuple[str, str]] = []
        if self.server_header is not None:
            mine.append(("server", self.server_header))
        if self.hsts is not None:
            mine.append(("strict-transport-security", self.hsts))
        mine.extend(self.headers)
        overridden = {name.lower() for name, _ in route.headers}
        return [(k, v) for k, v in mine if k.lower() not in overridden] + list(route.headers)

    async def _respond(self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request) -> None:
        mode = self.mode
        if mode == "redirect_loop":
            route = Route(302, b"", (("location", request.target.decode("ascii", "replace")),))
        else:
            route = self._answer(request)
        if route.delay:
            await asyncio.sleep(route.delay)
        headers = self._head(route)
        if mode == "endless_headers":
            await _endless_headers(writer, self.endless_interval)
        elif mode == "flood_1xx":
            await _flood_1xx(conn, writer, self.endless_interval)
        elif mode == "endless_chunked":
            await _endless_chunked(conn, writer, h11.Response(status_code=200, headers=headers),
                                   self.endless_interval)
        elif mode == "huge_body":
            length = self.huge_body_bytes
            head = h11.Response(status_code=200, headers=[*headers, ("content-length", str(length))])
            await _stream(conn, writer, head, length)
        else:
            events = _whole(route, headers, request.method == b"HEAD")
            if mode == "slowloris":
                await _dribble(writer, _bytes(conn, events), self.slow_interval)
            else:
                await _send(writer, conn, *events)


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A lab server's TLS context: modern suites, no session tickets, HTTP/1.1 over ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Modern suites only: some OpenSSL builds' defaults (Debian 12's) still take CBC-SHA1,
    # which the prober reports as tls.weak_cipher on every lab endpoint.
    ctx.set_ciphers(MODERN_CIPHERS)
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load certificate {certfile} with key {keyfile}: {e}") from None
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0  # TLS 1.3 tickets too: every probe must do a full handshake
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TlsHttpServer(_HttpServer):
    """HTTP/1.1 over TLS with a default certificate, an SNI map and hostile modes."""

    MODES = TLS_MODES

    def __init__(self, certfile: str, keyfile: str, host: str = "127.0.0.1", port: int = 0, *,
                 sni: Mapping[str, tuple[str, str]] | None = None, mode: str = "normal",
                 min_version: str | ssl.TLSVersion | None = None,
                 max_version: str | ssl.TLSVersion | None = None,
                 hsts: str | None = None, server_header: str | None = None,
                 headers: HeaderInput | None = None) -> None:
        super().__init__(host, port, mode, hsts, server_header, headers)
        self.min_version = tls_version(min_version)
        self.max_version = tls_version(max_version)
        # Built once: a context per certificate, the SNI callback picks one.
        self.context = self._context(certfile, keyfile)
        self._by_name = {name.lower().rstrip("."): self._context(*files) for name, files in (sni or {}).items()}
        self.context.sni_callback = self._select
        self._sni: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()

    def _context(self, certfile: str, keyfile: str) -> ssl.SSLContext:
        ctx = server_context(certfile, keyfile)
        with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: serving them is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.min_version is not None:
                ctx.minimum_version = self.min_version
            if self.max_version is not None:
                ctx.maximum_version = self.max_version
        if any(v is not None and v < ssl.TLSVersion.TLSv1_2 for v in (self.min_version, self.max_version)):
            # OpenSSL 3 refuses TLS < 1.2 (SHA-1 signatures) at security level 1 and up.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        return ctx

    def _select(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                ctx: ssl.SSLContext) -> None:
        """SNI callback: switch to the named certificate; unknown names keep the default."""
        if server_name is None:
            return
        name = server_name.lower().rstrip(".")
        if isinstance(sslobj, ssl.SSLObject):
            self._sni[sslobj] = name
        chosen = self._by_name.get(name) or self._by_name.get("*." + name.partition(".")[2])
        if chosen is not None:
            sslobj.context = chosen

    async def _secure(self, writer: asyncio.StreamWriter) -> str | None:
        await writer.start_tls(self.context, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT)
        sslobj = writer.get_extra_info("ssl_object")
        return self._sni.get(sslobj) if sslobj is not None else None


class PlainHttpServer(_HttpServer):
    """Port 80: redirects to https:// (mode "redirect"), or does not, or gets it wrong.

    An explicitly routed path is served as routed in every mode (as an ACME
    challenge path is on a real port 80); other paths follow the mode.
    """

    MODES = PLAIN_MODES

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, mode: str = "redirect",
                 https_port: int | None = None, status: int = 301, hsts: str | None = None,
                 server_header: str | None = None, headers: HeaderInput | None = None) -> None:
        super().__init__(host, port, mode, hsts, server_header, headers)
        self.https_port = https_port  # put into the redirect target when set
        self.status = status  # of the redirects: 301, 302, 307 or 308

    def _answer(self, request: h11.Request) -> Route:
        routed = self._routes.get(_path(request))
        if routed is not None or self.mode == "no_redirect":
            return super()._answer(request)
        host = _strip_port(_host(request) or self.host)
        target = request.target.decode("ascii", "replace")
        if self.mode == "wrong_host":
            location = "https://elsewhere.example.net/"
        elif self.mode == "http_redirect":
            location = f"http://{_host(request) or self.host}{target}"
        else:
            port = f":{self.https_port}" if self.https_port is not None else ""
            location = f"https://{host}{port}{target}"
        return Route(self.status, b"", (("location", location),))


# ------------------------------------------------------------------ helpers
def _path(request: h11.Request) -> str:
    return request.target.decode("ascii", "replace").partition("?")[0]


def _host(request: h11.Request) -> str | None:
    for name, value in request.headers:
        if name == b"host":
            return value.decode("ascii", "replace")
    return None


def _seen(request: h11.Request, sni: str | None) -> SeenRequest:
    return SeenRequest(request.method.decode("ascii", "replace"), request.target.decode("ascii", "replace"),
                       _host(request), sni,
                       tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers))


def _whole(route: Route, headers: list[tuple[str, str]], head_only: bool) -> list[h11.Event]:
    """The events of one complete response (no body for HEAD, but the length it would have)."""
    if route.status in (204, 304):  # these never carry a body or a length
        return [h11.Response(status_code=route.status, headers=headers), h11.EndOfMessage()]
    events: list[h11.Event] = [h11.Response(status_code=route.status,
                                            headers=[*headers, ("content-length", str(len(route.body)))])]
    if route.body and not head_only:
        events.append(h11.Data(data=route.body))
    events.append(h11.EndOfMessage())
    return events


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    """The next request, with its body read and dropped; None when the client closed."""
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(_READ))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return None


async def _send(writer: asyncio.StreamWriter, conn: h11.Connection, *events: h11.Event) -> None:
    writer.write(_bytes(conn, events))  # one write: one TLS record burst, one syscall
    await _flush(writer)


def _bytes(conn: h11.Connection, events: Iterable[h11.Event]) -> bytes:
    return b"".join(conn.send(event) or b"" for event in events)


async def _flush(writer: asyncio.StreamWriter) -> None:
    await writer.drain()
    # drain() does not yield while the buffer is low, and writes to a lost connection are
    # dropped, so the buffer stays low: without this, huge_body's loop would never let the
    # loop see connection_lost (or stop()).
    await asyncio.sleep(0)


async def _stream(conn: h11.Connection, writer: asyncio.StreamWriter, head: h11.Response, length: int) -> None:
    """Send `head`, then `length` bytes of body, as fast as the client reads."""
    await _send(writer, conn, head)
    left = length
    while left > 0 and not writer.is_closing():
        chunk = _CHUNK[:left]
        await _send(writer, conn, h11.Data(data=chunk))
        left -= len(chunk)
    if left == 0:
        await _send(writer, conn, h11.EndOfMessage())


async def _forever(writer: asyncio.StreamWriter, block: bytes, pace: float) -> None:
    """Write `block` again and again until the client goes.

    Paced, so that one hostile connection keeps a client busy without eating
    the lab loop (and the CPU) that the healthy servers share; the block is
    built once for the same reason.
    """
    while not writer.is_closing():
        writer.write(block)
        await writer.drain()
        await asyncio.sleep(pace)


async def _endless_headers(writer: asyncio.StreamWriter, pace: float) -> None:
    # Written by hand: no HTTP library will produce a head that never ends.
    writer.write(b"HTTP/1.1 200 OK\r\n")
    await _forever(writer, _FILLER_HEADERS, pace)


async def _endless_chunked(conn: h11.Connection, writer: asyncio.StreamWriter, head: h11.Response,
                           pace: float) -> None:
    await _send(writer, conn, head)
    await _forever(writer, conn.send(h11.Data(data=_CHUNK)) or b"", pace)  # same framing each time


async def _flood_1xx(conn: h11.Connection, writer: asyncio.StreamWriter, pace: float) -> None:
    """Informational responses forever, the final response never."""
    block = _bytes(conn, [h11.InformationalResponse(status_code=102, headers=[])] * 64)
    await _forever(writer, block, pace)


async def _dribble(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
        await asyncio.sleep(interval)


async def _hostile_tcp(mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """silent: never speak; garbage: answer the hello with noise; reset: RST after the hello."""
    if mode == "silent":
        while await reader.read(_READ):
            pass
        return
    await reader.read(_READ)  # the ClientHello (or the request line)
    if mode == "garbage":
        # No TLS record starts with a byte outside 20..24: the client fails on the first byte
        # instead of waiting for a record length we made up.
        noise = bytearray(os.urandom(512))
        noise[0] = 0x7F
        writer.write(bytes(noise))
        await writer.drain()
        # Then wait for the client to hang up: closing first could turn the noise into a RST.
        while await reader.read(_READ):
            pass
        return
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
