"""HTTP layer: the http->https redirect, HSTS, and the health path.

The health request travels over the TLS layer's own connection (one
handshake per address).  HTTP is spoken by h11; bodies are read up
to a cap, redirects are followed only within the endpoint's own origin, and
every exchange is bounded by the probe's deadline.
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import h11

from ..hints import hint_for
from ..model import CATALOGUE, Endpoint, Finding, HttpExchange, HttpResult
from .tls import AsyncioStream, Connection, _error_text

BODY_CAP = 64 * 1024
READ_BUDGET = BODY_CAP + 128 * 1024  # bytes one exchange may read: heads, any 1xx, the body up to the cap
MAX_HEAD = 100 * 1024  # h11's cap on one incomplete event (a response head)
_READ_SLICE = 4 * 1024
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
USER_AGENT = b"prober/0.1 (+https://github.com/prober-dev/prober)"
_KEPT_HEADERS = ("server", "location", "strict-transport-security", "via", "x-amz-cf-id", "x-azure-ref",
                 "x-envoy-upstream-service-time", "cf-ray", "x-cache", "content-type", "cf-mitigated",
                 "x-amzn-waf-action", "x-iinfo")
_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.I)


class Http11:
    """One HTTP/1.1 client connection over a stream, spoken by h11.

    Requests go in sequence on one connection (keep-alive), as the health check's same-origin
    redirects need.  A hostile server is bounded: h11 caps an incomplete head at MAX_HEAD, each
    read yields to the loop first and asks for at most 4 KiB (a server that packs thousands of
    tiny 1xx responses into its records must not stall every other probe on the loop), and one
    exchange reads at most READ_BUDGET bytes, so a flood that never reaches a final response is an
    error, not a spin until the deadline.  The caller bounds each exchange in time.
    """
    __slots__ = ("_stream", "_h11", "_left")

    def __init__(self, stream: AsyncioStream) -> None:
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self._left = READ_BUDGET

    def is_available(self) -> bool:
        """True when the last response ended cleanly and the server keeps the connection open."""
        return self._h11.our_state is h11.IDLE and self._h11.their_state is h11.IDLE

    async def _next_event(self) -> object:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            await asyncio.sleep(0)
            data = await self._stream.read(_READ_SLICE)
            self._left -= len(data)
            if self._left < 0:
                raise ProtocolError(f"the server sent over {READ_BUDGET // 1024} KiB without completing "
                                    "a response")
            if not data and self._h11.their_state is h11.SEND_RESPONSE:
                raise ProtocolError("the server closed the connection without sending a response")
            self._h11.receive_data(data)

    async def get(self, target: str, headers: list[tuple[bytes, bytes]]) -> _Raw:
        self._left = READ_BUDGET
        sent = time.monotonic()
        try:
            await self._stream.write(self._h11.send(h11.Request(method=b"GET", target=target, headers=headers))
                                     + self._h11.send(h11.EndOfMessage()))
        except OSError:
            pass  # a server may answer (an error page) and close before reading the request: read what it sent
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Response):
                break
            if not isinstance(event, h11.InformationalResponse):  # ConnectionClosed: h11 raises for the rest
                raise ProtocolError("the server closed the connection without sending a response")
        first_byte = time.monotonic() - sent
        body = bytearray()
        total = 0
        while total < BODY_CAP:  # read only up to the cap; the connection is then not reused
            part = await self._next_event()
            if isinstance(part, h11.Data):
                total += len(part.data)
                body += part.data[: BODY_CAP - len(body)]
            else:  # EndOfMessage (h11 raises for a body cut short)
                if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
                    self._h11.start_next_cycle()
                break
        fields: dict[str, str] = {}
        for name, value in event.headers:
            fields.setdefault(name.decode("latin-1"), value.decode("latin-1"))  # h11 gives names lower-case
        return _Raw(event.status_code, fields, bytes(body), total, first_byte)

    def close(self) -> None:
        self._stream.close()


class ProtocolError(Exception):
    """The server broke HTTP/1.1 in a way h11 does not name itself."""


@dataclass(slots=True)
class _Raw:
    status: int
    headers: dict[str, str]
    body: bytes
    body_bytes: int
    first_byte: float


def _request_headers(endpoint: Endpoint, scheme: str, port: int,
                     extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[bytes, bytes]]:
    host = endpoint.hostname
    host_header = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
    headers = [(b"Host", host_header.encode()), (b"User-Agent", USER_AGENT), (b"Accept", b"*/*"),
               (b"Connection", b"keep-alive")]
    return headers + [(k.encode(), v.encode()) for k, v in extra]


def edge_of(status: int | None, headers: dict[str, str], body: bytes) -> str | None:
    """Which layer answered, from the response's signature."""
    server = headers.get("server", "").lower()
    text = body[:4096].decode("utf-8", "replace").lower()
    if server.startswith("awselb"):
        return "AWS ALB" + (" (no healthy targets)" if status == 503 else "")
    if "microsoft-azure-application-gateway" in server or "microsoft-azure-application-gateway" in text:
        return "Azure Application Gateway"
    if "x-azure-ref" in headers:
        return "Azure Front Door"
    if "x-amz-cf-id" in headers:
        return "CloudFront"
    if "upstream connect error" in text or "no healthy upstream" in text:
        return "Envoy (upstream unreachable)"
    if server == "envoy" or "x-envoy-upstream-service-time" in headers:
        return "Envoy" + (" -> app" if "x-envoy-upstream-service-time" in headers else "")
    if "default backend - 404" in text:
        return "ingress-nginx default backend (no Ingress rule for this host)"
    if server == "cloudflare" or "cf-ray" in headers:
        return "Cloudflare"
    return None


@dataclass(frozen=True, slots=True)
class WafPrint:
    """A WAF's or bot protection's default block page: status, then any one header, then any one body marker.

    Headers are (name, lower-case substring; "" = present).  Bodies are lower-case substrings of the
    first 4 KiB.  An empty tuple means "not needed".
    """
    name: str
    statuses: tuple[int, ...]
    headers: tuple[tuple[str, str], ...]
    bodies: tuple[str, ...]


# The one table of WAF and bot-protection block pages, as each vendor serves them by default.
# Sources: AWS WAF developer guide ("Custom responses for Block actions": 403 by default; an ALB's
# block page is `Server: awselb/2.0` with nginx-style "403 Forbidden"; CloudFront's says "Request
# blocked."); Microsoft Learn, Azure WAF on Front Door and on Application Gateway ("The request is
# blocked.", 403; App Gateway's page names Microsoft-Azure-Application-Gateway/v2); Cloudflare docs,
# "Troubleshooting Cloudflare 1XXX errors" (1020 access denied; API clients get "error code: 1020")
# and "Detect a Challenge Page response" (`cf-mitigated: challenge`); Akamai's edge denial page
# (`Server: AkamaiGHost`, "Access Denied", "Reference #" written as HTML entities); Imperva's
# block page ("Request unsuccessful. Incapsula incident ID").  Cross-checked with wafw00f's plugins.
WAF_FINGERPRINTS: tuple[WafPrint, ...] = (
    WafPrint("AWS WAF on an ALB", (403,), (("server", "awselb"),), ("<h1>403 forbidden</h1>",)),
    WafPrint("AWS WAF on CloudFront", (403,), (("x-amz-cf-id", ""), ("server", "cloudfront")),
             ("request blocked.",)),
    WafPrint("AWS WAF (challenge or CAPTCHA)", (202, 405), (("x-amzn-waf-action", ""),), ()),
    WafPrint("Azure Application Gateway WAF", (403,), (("server", "microsoft-azure-application-gateway"),),
             ("microsoft-azure-application-gateway",)),
    WafPrint("Azure Front Door WAF", (403,), (("x-azure-ref", ""),), ("the request is blocked.",)),
    WafPrint("Cloudflare managed challenge", (403, 429, 503), (("cf-mitigated", "challenge"),), ()),
    WafPrint("Cloudflare WAF (error 1020, access denied)", (403,), (("server", "cloudflare"), ("cf-ray", "")),
             ("error code: 1020", "error 1020", 'cf-error-code">1020')),
    WafPrint("Akamai (edge access denied)", (403,), (("server", "akamaighost"),),
             ("reference #", "reference&#32;&#35;")),
    WafPrint("Imperva/Incapsula", (), (), ("incapsula incident id",)),
)


def waf_of(status: int | None, headers: dict[str, str], body: bytes) -> str | None:
    """The WAF whose block page this is, or None: matched against WAF_FINGERPRINTS."""
    if status is None:
        return None
    text = body[:4096].decode("utf-8", "replace").lower()
    for fp in WAF_FINGERPRINTS:
        if fp.statuses and status not in fp.statuses:
            continue
        if fp.headers and not any(want in headers.get(name, "\0").lower() if want else name in headers
                                  for name, want in fp.headers):
            continue
        if fp.bodies and not any(marker in text for marker in fp.bodies):
            continue
        return fp.name
    return None


def from_application(h: HttpExchange) -> bool:
    """Whether the application (not a WAF block page, nor the edge's own error page) answered."""
    if h.status is None or h.blocked_by is not None:
        return False
    edge = h.edge or ""
    return not (edge and h.status >= 500) and not edge.startswith(("ingress-nginx default backend",
                                                                   "Envoy (upstream"))


def _exchange_record(url: str, address: str, raw: _Raw | None, error: str | None, ok: bool,
                     endpoint: Endpoint) -> HttpExchange:
    if raw is None:
        return HttpExchange(url=url, address=address, error=error, ok=False)
    secret = {k.lower() for k, _ in endpoint.http.headers}
    kept = tuple((k, "<redacted>" if k in secret else v) for k, v in raw.headers.items() if k in _KEPT_HEADERS)
    return HttpExchange(
        url=url, address=address, status=raw.status, location=raw.headers.get("location"), headers=kept,
        body_excerpt=raw.body[:256].decode("utf-8", "replace"), body_bytes=raw.body_bytes, error=error,
        edge=edge_of(raw.status, raw.headers, raw.body), ok=ok, first_byte_seconds=raw.first_byte,
        blocked_by=waf_of(raw.status, raw.headers, raw.body))


# ------------------------------------------------------------------- redirect
def _resolve(base: str, location: str) -> tuple[str, str, int, str] | None:
    """A Location resolved against the request's URL: (scheme, host, port, path), or None if unparsable."""
    try:
        target = urlsplit(urljoin(base, location.strip()))
        port = target.port
    except ValueError:
        return None
    scheme = target.scheme.lower()
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    return scheme, (target.hostname or "").rstrip("."), port or (443 if scheme == "https" else 80), path


def redirect_ok(endpoint: Endpoint, location: str | None) -> tuple[bool, str]:
    """http://host/ must send the client to https:// on the same hostname (and TLS port)."""
    if not location:
        return False, "no Location header"
    target = _resolve(f"http://{endpoint.hostname}/", location)
    if target is None:
        return False, f"unparsable Location {location[:120]!r}"
    scheme, host, port, _ = target
    if scheme != "https":
        return False, f"Location {location[:120]} is not https"
    if host != endpoint.hostname:
        return False, f"Location {location[:120]} leaves {endpoint.hostname}"
    if port != endpoint.tls.port:
        return False, f"Location {location[:120]} points at port {port}, not the TLS port {endpoint.tls.port}"
    return True, ""


async def check_redirect(endpoint: Endpoint, address: str, deadline: float) -> HttpExchange:
    port = endpoint.http.port
    url = f"http://{endpoint.hostname}:{port}/" if port != 80 else f"http://{endpoint.hostname}/"
    try:
        stream = await AsyncioStream.connect(address, port, max(deadline - time.monotonic(), 0.001))
    except Exception as exc:
        return HttpExchange(url=url, address=address, error=f"connect: {_error_text(exc)}")
    conn = Http11(stream)
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            raw = await conn.get("/", _request_headers(endpoint, "http", port))
    except Exception as exc:
        return HttpExchange(url=url, address=address, error=_error_text(exc))
    finally:
        conn.close()
    ok = raw.status in REDIRECT_STATUSES and redirect_ok(endpoint, raw.headers.get("location"))[0]
    return _exchange_record(url, address, raw, None, ok, endpoint)


# --------------------------------------------------------------------- health
def _same_origin(endpoint: Endpoint, path: str, location: str | None) -> str | None:
    """The path to follow for a redirect that stays on https://hostname:tls_port; else None."""
    if not location:
        return None
    target = _resolve(f"https://{endpoint.hostname}:{endpoint.tls.port}{path}", location)
    if target is None or target[:3] != ("https", endpoint.hostname, endpoint.tls.port):
        return None
    return target[3]


def health_ok(endpoint: Endpoint, raw: _Raw) -> bool:
    if raw.status not in endpoint.http.expect_status:
        return False
    pattern = endpoint.http.expect_body
    return pattern is None or re.search(pattern, raw.body.decode("utf-8", "replace")) is not None


async def check_health(endpoint: Endpoint, connection: Connection, deadline: float) -> HttpExchange:
    port = endpoint.tls.port
    path = endpoint.http.health_path
    url = f"https://{endpoint.hostname}{'' if port == 443 else f':{port}'}{path}"
    conn = Http11(connection.stream)
    headers = _request_headers(endpoint, "https", port, endpoint.http.headers)
    raw = None
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            for _ in range(MAX_REDIRECTS + 1):
                raw = await conn.get(path, headers)
                follow = _same_origin(endpoint, path, raw.headers.get("location")) \
                    if raw.status in REDIRECT_STATUSES and raw.status not in endpoint.http.expect_status else None
                if follow is None or not conn.is_available():
                    break
                path = follow
    except Exception as exc:
        return _exchange_record(url, connection.address, raw, _error_text(exc), False, endpoint)
    finally:
        conn.close()
    return _exchange_record(url, connection.address, raw, None, health_ok(endpoint, raw), endpoint)


async def probe_http(endpoint: Endpoint, connections: list[Connection], redirect_address: str | None,
                     deadline: float) -> tuple[HttpResult, list[Finding]]:
    jobs = [check_health(endpoint, c, deadline) for c in connections]
    want_redirect = endpoint.http.redirect and redirect_address is not None
    if want_redirect:
        jobs.append(check_redirect(endpoint, redirect_address, deadline))
    done = await asyncio.gather(*jobs)
    redirect = done[-1] if want_redirect else None
    health = tuple(done[: len(connections)])
    hsts = next((v for h in health for k, v in h.headers if k == "strict-transport-security"), None)
    result = HttpResult(redirect=redirect, health=health, hsts=hsts)
    return result, judge(endpoint, result)


# ------------------------------------------------------------------- findings
def _finding(endpoint: Endpoint, code: str, message: str, address: str | None = None,
             dial: str | None = None) -> Finding:
    return Finding(code=code, severity=CATALOGUE[code].severity, layer="http", message=message,
                   hint=hint_for(code, endpoint, address or dial), address=address)


def judge(endpoint: Endpoint, result: HttpResult) -> list[Finding]:
    out = _judge_redirect(endpoint, result.redirect)
    for h in result.health:
        if h.blocked_by is not None and not h.ok:
            out.append(_waf_finding(endpoint, h, endpoint.tls.port))
        elif not h.ok:
            out.append(_health_finding(endpoint, h))
    # HSTS is the application's to send: a block page or the edge's own error page says nothing about it.
    answered = [h for h in result.health if from_application(h)]
    hsts = next((v for h in answered for k, v in h.headers if k == "strict-transport-security"), None)
    if endpoint.http.hsts and answered:
        age = _MAX_AGE.search(hsts or "")
        if hsts is None or age is None or int(age.group(1)) < 86400:
            got = f"'{hsts}'" if hsts else "no Strict-Transport-Security header"
            out.append(_finding(endpoint, "http.missing_hsts",
                                f"https://{endpoint.hostname} sends {got}; want max-age of at least one day",
                                dial=answered[0].address))
    return out


def _judge_redirect(endpoint: Endpoint, r: HttpExchange | None) -> list[Finding]:
    if r is None or r.ok:
        return []
    where = f"{r.address}:{endpoint.http.port}"
    if r.blocked_by is not None:
        return [_waf_finding(endpoint, r, endpoint.http.port)]
    if r.status is None:
        code = "http.connect_failed"
        return [_finding(endpoint, code, f"{r.url} ({where}) did not answer: {r.error}", where)]
    if r.status not in REDIRECT_STATUSES:
        return [_finding(endpoint, "http.no_https_redirect",
                         f"{r.url} answers {r.status} instead of redirecting to https ({where})", where)]
    _, why = redirect_ok(endpoint, r.location)
    return [_finding(endpoint, "http.redirect_mismatch", f"{r.url} redirects with {r.status}, but {why}", where)]


def _waf_finding(endpoint: Endpoint, h: HttpExchange, port: int) -> Finding:
    where = f"{h.address}:{port}"
    return _finding(endpoint, "http.waf_blocked",
                    f"{h.url} was answered by a block page of {h.blocked_by} ({h.status}), not by the "
                    f"application, at {where}", where)


def _health_finding(endpoint: Endpoint, h: HttpExchange) -> Finding:
    where = f"{h.address}:{endpoint.tls.port}"
    if h.status is None:
        msg = f"{h.url} did not answer from {where}: {h.error}"
    elif h.status not in endpoint.http.expect_status:
        by = f" from {h.edge}" if h.edge else ""
        msg = (f"{h.url} answered {h.status}{by} (want {', '.join(map(str, endpoint.http.expect_status))}) "
               f"at {where}")
    else:
        msg = f"{h.url} answered {h.status} but the body does not match {endpoint.http.expect_body!r} at {where}"
    return _finding(endpoint, "http.health_failed", msg, where)
