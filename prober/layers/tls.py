"""TLS layer: handshake with each address, capture the chain actually served.

The handshake never verifies (CERT_NONE): an expired, untrusted or wrong-host
certificate must still be captured and reported in full.  Verification is
done afterwards, by ``x509.verify_chain_cached``, against our own trust store.
No session is ever resumed: every probe sees the real chain.
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto
import dataclasses
import errno
import re
import ssl
import time
import warnings
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Awaitable, Callable, TypeVar

from cryptography import x509 as cx509

from .. import renewal, revocation, tlspolicy, x509
from ..hints import hint_for
from ..model import (CATALOGUE, EXPIRY_TIERS, AltChain, CertInfo, ChainVerdict, ClientCert, Endpoint, Finding,
                     HttpResult, TlsResult, TlsTarget)

_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
             "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_BELOW = {"1.1": "1.0", "1.2": "1.1", "1.3": "1.2"}
T = TypeVar("T")

# asyncio's TLS protocol gives every connection a zeroed read buffer of SSLProtocol.max_size,
# 256 KiB.  A probe reads a handshake and at most a 64 KiB body, in TLS records of at most
# 16 KiB: 32 KiB is plenty.  With 256 probes in flight that is 8 MiB of buffers instead of 64 MiB;
# measured at 3,000 endpoints: RSS 264 -> 183 MB (bench/RESULTS.md, "Heap and collector").
READ_BUFFER = 32 * 1024
asyncio.sslproto.SSLProtocol.max_size = READ_BUFFER


class AsyncioStream:
    """A connection on asyncio's own streams and TLS transport.

    A Python-level memory BIO on top of asyncio (anyio's TLSStream, httpcore's default backend)
    would drive the handshake and every record a second time; asyncio's transport does the work
    once.  Measured: about 15% less CPU per handshake and request (bench/RESULTS.md).  Errors are
    the builtin ones: TimeoutError, and OSError (ssl.SSLError among them).
    """
    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, address: str, port: int, timeout: float) -> AsyncioStream:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
        return cls(reader, writer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if timeout is None:  # the caller bounds the whole exchange
            return await self._reader.read(max_bytes)
        async with asyncio.timeout(timeout):
            return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._writer.write(buffer)
        if timeout is None:
            await self._writer.drain()
            return
        async with asyncio.timeout(timeout):
            await self._writer.drain()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname,
                                             ssl_handshake_timeout=timeout)
        except BaseException:
            self._writer.transport.abort()
            raise
        return self

    def close(self) -> None:
        """close_notify and FIN go out in the background; never waits on the peer, never raises.
        Once only: asyncio's TLS transport forgets its protocol on a second close()."""
        try:
            if not self._writer.transport.is_closing():
                self._writer.close()
        except Exception:  # closing a broken stream must never fail a probe
            pass

    def get_extra_info(self, info: str) -> object:
        return self._writer.get_extra_info(info)


# Connections whose server sent a CertificateRequest (mTLS), seen through OpenSSL's message
# callback: Python's ssl has no other way to tell that a certificate was asked for.
_CERT_REQUESTED: weakref.WeakSet = weakref.WeakSet()
_HANDSHAKE, _CERTIFICATE_REQUEST = 22, 13  # TLS content type and handshake message type


def _note_certificate_request(conn: object, direction: str, version: int, content_type: int,
                              msg_type: int, data: bytes) -> None:
    if direction == "read" and content_type == _HANDSHAKE and msg_type == _CERTIFICATE_REQUEST:
        _CERT_REQUESTED.add(conn)


def _set_message_callback(ctx: ssl.SSLContext, callback: Callable[..., None]) -> None:
    """ctx._msg_callback = callback, without ssl.py's wrapper: it turns the numbers of every TLS
    message into enums before calling, 2% of a probe's CPU.  The C context's own descriptor takes
    the callback as is (ssl.py sets it the same way); where it is missing, the wrapped form."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = getattr(getattr(getattr(ssl, "_ssl", None), "_SSLContext", None), "_msg_callback", None)
        if hasattr(raw, "__set__"):
            callback.user_function = callback  # what ssl.py's getter reads back
            raw.__set__(ctx, callback)
        else:
            ctx._msg_callback = callback  # private, but the only hook for it (also in 3.13)


def _base_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


@lru_cache(maxsize=64)
def probe_context(client_cert: ClientCert | None = None) -> ssl.SSLContext:
    """The context of the main handshake: accepts any certificate, never resumes; one per client certificate."""
    ctx = _base_context()
    ctx.set_ciphers(tlspolicy.CLIENT_CIPHERS)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if client_cert is not None:
        ctx.load_cert_chain(client_cert.cert_file, client_cert.key_file)
    _set_message_callback(ctx, _note_certificate_request)
    return ctx


def _capped(ctx: ssl.SSLContext, low: ssl.TLSVersion, high: ssl.TLSVersion) -> ssl.SSLContext:
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: offering them is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = low, high
    return ctx


@lru_cache(maxsize=None)
def weak_context(below: str) -> ssl.SSLContext:
    """A context capped at the protocol just below the contract's minimum."""
    ctx = _base_context()
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.0/1.1 at its default level
    return _capped(ctx, ssl.TLSVersion.TLSv1, _VERSIONS[below])


@lru_cache(maxsize=None)
def side_context(kind: str) -> ssl.SSLContext:
    """The periodic handshakes' contexts: an RSA-only client, a weak-suites-only offer, a DHE-only offer."""
    ctx = _base_context()
    if kind == "rsa":  # what an RSA-only TLS 1.2 client (older Java, IoT) offers; the server picks its RSA certificate
        ctx.set_ciphers("aRSA:!aNULL:@SECLEVEL=0")
        return _capped(ctx, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    if kind == "cipher":  # TLS 1.2 only: below it every suite is CBC with SHA-1, which weak_protocol says
        ctx.set_ciphers(tlspolicy.WEAK_CIPHERS)
        return _capped(ctx, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    if kind == "dh":  # at the default security level: a group under 2048 bits fails with DH_KEY_TOO_SMALL
        ctx.set_ciphers(tlspolicy.DHE_CIPHERS.replace(":@SECLEVEL=0", ""))
        return _capped(ctx, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    raise ValueError(kind)


@dataclass(slots=True)
class Connection:
    """A live TLS stream the HTTP layer reuses, so one probe does one handshake per address."""
    address: str
    port: int
    stream: AsyncioStream

    def close(self) -> None:
        self.stream.close()


_ERRNO_TEXT = {errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset by peer",
               errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable",
               errno.ETIMEDOUT: "timed out"}


# OpenSSL's reason codes a person meets most, in words; the code stays in parentheses to search for.
_SSL_REASONS = {
    "TLSV1_ALERT_PROTOCOL_VERSION": "the server refused every protocol version offered",
    "UNSUPPORTED_PROTOCOL": "the server offered only a protocol version this client refuses",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server found nothing in common with the offer (suites, curves or "
                                     "signature algorithms)",
    "NO_SHARED_CIPHER": "no cipher suite in common",
    "NO_CIPHERS_AVAILABLE": "no cipher suite in common",
    "DH_KEY_TOO_SMALL": "the server's Diffie-Hellman group is too small",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate",
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection during the handshake",
    "TLSV1_UNRECOGNIZED_NAME": "the server does not serve this name (SNI)",
    "TLSV1_ALERT_INTERNAL_ERROR": "the server reported an internal error",
    "LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED": "the server signed the handshake with a signature algorithm "
                                               "this client refuses (MD5-SHA1 or SHA-1)",
}
# What an ssl.SSLError without a reason code prints around OpenSSL's text: "[SSL] ... (_ssl.c:992)".
_SSL_WRAPPING = re.compile(r"^\[[A-Z_]+\]\s*|\s*\(_ssl\.c:\d+\)$")


def _root_cause(exc: BaseException) -> BaseException:
    seen = 0
    while seen < 8 and (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return exc


def _error_text(exc: BaseException) -> str:
    """One line a person understands, from whatever the socket, ssl or h11 raised."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    for candidate in (exc, _root_cause(exc)):
        if isinstance(candidate, OSError) and candidate.errno in _ERRNO_TEXT:
            return _ERRNO_TEXT[candidate.errno]
        if isinstance(candidate, ssl.SSLError):
            code = getattr(candidate, "reason", None)
            reason = _SSL_WRAPPING.sub("", str(code or candidate).splitlines()[0])[:120]
            coded = reason.upper().replace(" ", "_")  # OpenSSL's text without its code: the code's form
            if not code and coded in _SSL_REASONS:
                reason = coded
            words = _SSL_REASONS.get(reason)
            return f"TLS error: {words} ({reason})" if words else f"TLS error: {reason}"
    if isinstance(exc, ExceptionGroup) and exc.exceptions:
        return _error_text(exc.exceptions[0])
    text = str(exc).strip() or type(exc).__name__
    if text == "All connection attempts failed":
        cause = _root_cause(exc)
        text = str(cause).strip() or text
    return text.splitlines()[0][:200]


def _served_chain(stream: AsyncioStream) -> list[bytes]:
    sslobj = stream.get_extra_info("ssl_object")
    return [] if sslobj is None else _served_chain_of(sslobj)


def _served_chain_of(sslobj: ssl.SSLObject) -> list[bytes]:
    getter = getattr(sslobj, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = sslobj._sslobj.get_unverified_chain  # the same call, private before 3.13
    chain = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]


async def _handshake(address: str, port: int, hostname: str, ctx: ssl.SSLContext, deadline: float
                     ) -> tuple[AsyncioStream | None, str | None, bool, float | None, float | None]:
    """Returns (stream, error, connected, connect_seconds, tls_seconds)."""
    started = time.monotonic()
    try:
        raw = await AsyncioStream.connect(address, port, max(deadline - started, 0.001))
    except Exception as exc:
        return None, _error_text(exc), False, None, None
    connected = time.monotonic()
    try:
        tls = await raw.start_tls(ctx, server_hostname=hostname,
                                  timeout=max(deadline - time.monotonic(), 0.001))
    except Exception as exc:
        raw.close()
        error = _error_text(exc)
        if error == "TLS error: WRONG_VERSION_NUMBER":
            error = await _not_tls(address, port, hostname, deadline)
        return None, error, True, connected - started, None
    return tls, None, True, connected - started, time.monotonic() - connected


async def _not_tls(address: str, port: int, hostname: str, deadline: float) -> str:
    """The reply was no TLS record: ask once in plain HTTP, so the message can say what answers there.

    Only on this failure, and bounded by the probe's deadline: a second connection, never a retry.
    """
    plain = None
    try:
        budget = max(min(deadline - time.monotonic(), 1.0), 0.001)
        plain = await AsyncioStream.connect(address, port, budget)
        await plain.write(f"HEAD / HTTP/1.0\r\nHost: {hostname}\r\n\r\n".encode(), budget)
        head = await plain.read(5, budget)
    except Exception:
        head = b""
    finally:
        if plain is not None:
            plain.close()
    if head == b"HTTP/":
        return "the TLS port answers plain HTTP (TLS is not enabled on this listener, or the port is the HTTP one)"
    return "the TLS port does not speak TLS (its reply is not a TLS record: OpenSSL says WRONG_VERSION_NUMBER)"


# Which protocols and suites a listener accepts, and which certificate it gives an RSA-only
# client, change when someone edits its config, not between two probes: a long-running
# `prober serve` asks again at most once an hour per listener and hostname, instead of opening
# extra connections and handshakes on every probe.  A one-shot `prober check` starts with an
# empty cache, so it always asks.
WEAK_RECHECK_SECONDS = 3600.0
PERIODIC_KINDS: tuple[str, ...] = ("protocol", "rsa", "cipher", "dh")  # one handshake each per address
_PERIODIC_MAX = 65536
_periodic_seen: dict[tuple, tuple[float, object]] = {}


def cache_clear() -> None:
    """Forget every listener's periodic handshakes (they are made again on its next probe)."""
    _periodic_seen.clear()


_MISSING = object()


def _periodic_fresh(key: tuple) -> object:
    """The remembered answer for key while it is fresh, else _MISSING."""
    seen = _periodic_seen.get(key)
    return seen[1] if seen is not None and seen[0] > time.monotonic() else _MISSING


async def _periodic(key: tuple, attempt: Callable[[], Awaitable[tuple[bool, T]]]) -> T:
    """attempt() -> (definite, value), asked at most once per WEAK_RECHECK_SECONDS per key."""
    seen = _periodic_fresh(key)
    if seen is not _MISSING:
        return seen  # type: ignore[return-value]
    definite, value = await attempt()
    if definite:  # a yes or a no, not a timeout: remember it
        if len(_periodic_seen) >= _PERIODIC_MAX:
            _periodic_seen.clear()
        _periodic_seen[key] = (time.monotonic() + WEAK_RECHECK_SECONDS, value)
    return value


async def _side_handshake(address: str, port: int, hostname: str, ctx: ssl.SSLContext, deadline: float,
                          read: Callable[[ssl.SSLObject], T]) -> tuple[bool, T | None, str | None]:
    """One extra handshake: (definite, read(ssl object) or None, error)."""
    stream, error, connected, *_ = await _handshake(address, port, hostname, ctx, deadline)
    if stream is None:
        return connected and error != "timed out", None, error
    try:
        return True, read(stream.get_extra_info("ssl_object")), None
    finally:
        stream.close()


async def _weak_protocol(address: str, port: int, hostname: str, minimum: str, deadline: float) -> str | None:
    below = _BELOW.get(minimum)
    if below is None:
        return None

    async def attempt() -> tuple[bool, str | None]:
        definite, version, _ = await _side_handshake(address, port, hostname, weak_context(below), deadline,
                                                     lambda o: o.version())
        return definite, version
    return await _periodic((address, port, hostname, "protocol", minimum), attempt)


async def _weak_cipher(address: str, port: int, hostname: str, deadline: float) -> tuple[str, str] | None:
    async def attempt() -> tuple[bool, tuple[str, str] | None]:
        definite, got, _ = await _side_handshake(address, port, hostname, side_context("cipher"), deadline,
                                                 lambda o: (o.cipher()[0], o.version()))
        return definite, got
    return await _periodic((address, port, hostname, "cipher"), attempt)


async def _weak_dh(address: str, port: int, hostname: str, deadline: float) -> bool:
    async def attempt() -> tuple[bool, bool]:
        definite, _, error = await _side_handshake(address, port, hostname, side_context("dh"), deadline,
                                                   lambda o: None)
        return definite, bool(error and "DH_KEY_TOO_SMALL" in error.upper().replace(" ", "_"))
    return await _periodic((address, port, hostname, "dh"), attempt)


async def _rsa_chain(address: str, port: int, hostname: str, main_leaf: bytes, deadline: float
                     ) -> tuple[tuple[bytes, ...], str | None, str | None] | None:
    """The chain an RSA-only client gets, when its leaf differs from the main handshake's."""
    async def attempt() -> tuple[bool, tuple[tuple[bytes, ...], str | None, str | None] | None]:
        definite, got, _ = await _side_handshake(
            address, port, hostname, side_context("rsa"), deadline,
            lambda o: (tuple(_served_chain_of(o)), o.version(), (o.cipher() or (None,))[0]))
        if got is None or not got[0] or got[0][0] == main_leaf:
            return definite, None
        return definite, got
    return await _periodic((address, port, hostname, "rsa"), attempt)


def _side_known(endpoint: Endpoint, address: str) -> dict | None:
    """The periodic protocol, cipher and DH answers when all three are fresh (a steady `prober
    serve`): then a probe spends no task on them."""
    host, port, minimum = endpoint.hostname, endpoint.tls.port, endpoint.tls_min_version
    weak = None if _BELOW.get(minimum) is None else _periodic_fresh((address, port, host, "protocol", minimum))
    cipher = _periodic_fresh((address, port, host, "cipher"))
    dh = _periodic_fresh((address, port, host, "dh"))
    if weak is _MISSING or cipher is _MISSING or dh is _MISSING:
        return None
    return {"weak_protocol": weak, "weak_cipher": cipher, "weak_dh": dh}


async def _side_checks(endpoint: Endpoint, address: str, deadline: float) -> dict:
    """The periodic protocol, cipher and DH handshakes, concurrently."""
    known = _side_known(endpoint, address)
    if known is not None:
        return known
    host, port = endpoint.hostname, endpoint.tls.port
    weak, cipher, dh = await asyncio.gather(
        _weak_protocol(address, port, host, endpoint.tls_min_version, deadline),
        _weak_cipher(address, port, host, deadline), _weak_dh(address, port, host, deadline))
    return {"weak_protocol": weak, "weak_cipher": cipher, "weak_dh": dh}


async def probe_address(endpoint: Endpoint, address: str, deadline: float, store: x509.TrustStore
                        ) -> tuple[TlsTarget, Connection | None]:
    port = endpoint.tls.port
    stream, error, connected, t_connect, t_tls = await _handshake(
        address, port, endpoint.hostname, probe_context(endpoint.tls.client_cert), deadline)
    if stream is None:
        # A refused or timed-out handshake, or a port that does not speak TLS: nothing more to learn there.
        worth = connected and error != "timed out" and not (error or "").startswith("the TLS port")
        side = await _side_checks(endpoint, address, deadline) if worth else {}
        return TlsTarget(address=address, port=port, connected=connected, error=error,
                         connect_seconds=t_connect, **side), None
    sslobj = stream.get_extra_info("ssl_object")
    now = time.time()
    ders = _served_chain(stream)
    certs, parse_error = _parse_served(ders)
    verdict = x509.verify_chain_cached(certs, endpoint.hostname, store, now) if certs else None
    side = _side_known(endpoint, address)
    rsa = _periodic_fresh((address, port, endpoint.hostname, "rsa")) if ders else None
    if side is not None and rsa is not _MISSING and not (certs and revocation.applies(endpoint, verdict)):
        alternates, revoked = _alternates_of(endpoint, rsa, store), ()  # all cached: no task, no await
    else:
        side, alternates, revoked = await asyncio.gather(
            _side_checks(endpoint, address, deadline), _alternates(endpoint, address, ders, store, deadline),
            revocation.check(endpoint, certs, verdict, store, deadline) if certs else _nothing())
    cipher = sslobj.cipher()
    target = TlsTarget(
        address=address, port=port, connected=True, handshake=True, version=sslobj.version(),
        cipher=cipher[0] if cipher else None, alpn=sslobj.selected_alpn_protocol(),
        chain=_infos(certs, now), verdict=verdict, connect_seconds=t_connect, tls_seconds=t_tls,
        error=None if certs else parse_error or "the server sent no parsable certificate",
        alternates=alternates, client_cert_requested=sslobj in _CERT_REQUESTED, revocation=revoked, **side)
    return target, Connection(address, port, stream)


async def _nothing() -> tuple:
    return ()


async def _alternates(endpoint: Endpoint, address: str, ders: list[bytes], store: x509.TrustStore,
                      deadline: float) -> tuple[AltChain, ...]:
    if not ders:
        return ()
    return _alternates_of(endpoint, await _rsa_chain(address, endpoint.tls.port, endpoint.hostname, ders[0],
                                                     deadline), store)


def _alternates_of(endpoint: Endpoint, got: tuple[tuple[bytes, ...], str | None, str | None] | None,
                   store: x509.TrustStore) -> tuple[AltChain, ...]:
    """The RSA-only handshake's chain, judged, when it differs from the main one."""
    if got is None:
        return ()
    certs, _ = _parse_served(list(got[0]))
    if not certs:
        return ()
    now = time.time()
    return (AltChain("RSA-only clients", got[1], got[2], _infos(certs, now),
                     x509.verify_chain_cached(certs, endpoint.hostname, store, now)),)


def _parse_served(ders: list[bytes]) -> tuple[list[cx509.Certificate], str | None]:
    """The served chain, parsed.  A leaf that does not parse leaves no chain at all:
    the next certificate must never be judged as if it were the leaf."""
    leaf, errors = x509.parse_chain(ders[:1])
    if errors:
        return [], errors[0]
    rest, _ = x509.parse_chain(ders[1:])  # an unparsable intermediate is left out: the chain shows it missing
    return leaf + rest, None


def _infos(certs: list[cx509.Certificate], now: float) -> tuple[CertInfo, ...]:
    return tuple(x509.cert_info(c, pos, now) for c, pos in zip(certs, x509.positions(certs)))


async def probe_tls(endpoint: Endpoint, addresses: tuple[str, ...], deadline: float,
                    store: x509.TrustStore) -> tuple[TlsResult, list[Finding], list[Connection]]:
    results = await asyncio.gather(*(probe_address(endpoint, a, deadline, store) for a in addresses))
    targets = tuple(t for t, _ in results)
    connections = [c for _, c in results if c is not None]
    result = TlsResult(targets=targets)
    return result, judge(endpoint, result), connections


# --------------------------------------------------------------------- findings
def _finding(endpoint: Endpoint, code: str, message: str, address: str | None = None,
             severity: str | None = None, tier: str | None = None) -> Finding:
    return Finding(code=code, severity=severity or CATALOGUE[code].severity, layer="tls",
                   message=message, hint=hint_for(code, endpoint, address), address=address, tier=tier)


def judge(endpoint: Endpoint, result: TlsResult) -> list[Finding]:
    out: list[Finding] = []
    for t in result.targets:
        if not t.connected:
            out.append(_finding(endpoint, "tls.connect_failed",
                                f"cannot connect to {t.endpoint} for {endpoint.hostname}: {t.error}", t.endpoint))
        elif not t.handshake or not t.chain:
            out += _judge_failed(endpoint, t)
        else:
            clients = " to ECDSA-capable clients" if t.alternates else ""
            out += _judge_chain(endpoint, t, f"(served{clients} by {t.endpoint})")
            for alt in t.alternates:
                alt_target = dataclasses.replace(t, chain=alt.chain, verdict=alt.verdict, revocation=())
                out += [f for f in _judge_chain(endpoint, alt_target, f"(served to {alt.clients} by {t.endpoint})")
                        if f.code not in _LISTENER_CODES]
            out += _listener(endpoint, t, failed=False)
    return _dedupe(out)


# Facts about the listener, not about one chain: reported once, not per chain.
_LISTENER_CODES = frozenset({"tls.weak_protocol", "tls.weak_cipher", "tls.weak_dh"})


def _judge_failed(endpoint: Endpoint, t: TlsTarget) -> list[Finding]:
    """A failed main handshake, explained by what the periodic handshakes found."""
    host, error = endpoint.hostname, t.error or "no certificate"
    if "CERTIFICATE_REQUIRED" in error.upper():
        return [_client_cert_finding(endpoint, t.endpoint)]
    why = []
    if t.weak_dh:
        why.append("its Diffie-Hellman group is under 2048 bits, which default clients refuse")
    elif t.weak_cipher and not t.weak_protocol:
        why.append(f"it accepts only weak cipher suites ({t.weak_cipher[0]}: "
                   f"{tlspolicy.weak_cipher_reason(*t.weak_cipher)})")
    if t.weak_protocol:
        why.append(f"it speaks only {t.weak_protocol} and nothing at or above tls_min_version "
                   f"{endpoint.tls_min_version}")
    out = _listener(endpoint, t, failed=True)
    if why and (t.weak_dh or t.weak_cipher) and not t.weak_protocol:
        return out  # the specific code, critical, says it all
    because = f" because {'; '.join(why)}" if why else ""
    return [_finding(endpoint, "tls.handshake_failed",
                     f"TLS handshake with {t.endpoint} for {host} failed{because}: {error}", t.endpoint)] + out


def _listener(endpoint: Endpoint, t: TlsTarget, failed: bool) -> list[Finding]:
    """weak protocol, cipher and DH: facts about the listener, from the periodic handshakes."""
    out = []
    if t.weak_protocol:
        only = "only " if failed else "still "
        out.append(_finding(endpoint, "tls.weak_protocol",
                            f"{t.endpoint} {only}accepts {t.weak_protocol}, below tls_min_version "
                            f"{endpoint.tls_min_version}", t.endpoint))
    refused = "critical" if failed else None
    if t.weak_dh:
        out.append(_finding(endpoint, "tls.weak_dh",
                            f"{t.endpoint} uses a Diffie-Hellman group under {tlspolicy.MIN_DH_BITS} bits for "
                            f"DHE suites{', so default clients refuse to connect' if failed else ''}; "
                            "use ECDHE, or a 2048-bit or larger group (RFC 7919 ffdhe2048)",
                            t.endpoint, severity=refused))
    if t.weak_cipher:
        suite, version = t.weak_cipher
        only = "only weak suites, e.g. " if failed and not t.weak_protocol else ""
        out.append(_finding(endpoint, "tls.weak_cipher",
                            f"{t.endpoint} accepts {only}{suite} over {version} "
                            f"({tlspolicy.weak_cipher_reason(suite, version)})", t.endpoint,
                            severity=refused if not t.weak_protocol else None))
    return out


def _client_cert_finding(endpoint: Endpoint, where: str) -> Finding:
    if endpoint.tls.client_cert is None:
        return _finding(endpoint, "tls.client_cert_required",
                        f"{where} requires a client certificate (mTLS) for {endpoint.hostname}; the probe has none, "
                        "so it cannot see past the handshake: set tls.client_cert in the contract", where)
    return _finding(endpoint, "tls.client_cert_required",
                    f"{where} requires a client certificate for {endpoint.hostname} and refused the one in "
                    f"tls.client_cert ({endpoint.tls.client_cert.cert_file})", where, severity="warning")


# How servers refuse a request that came without the client certificate they asked for: nginx
# answers 400 ("No required SSL certificate was sent") or 495/496, others 401/403, or the TLS
# stack sends an alert that ends the connection (no status at all).
_REFUSED_WITHOUT_CERT = (None, 400, 401, 403, 495, 496)


def client_cert_findings(endpoint: Endpoint, result: TlsResult, http: HttpResult, http_failed: bool
                         ) -> list[Finding]:
    """A server that asked for a certificate and then refused the request: mTLS, not a health failure."""
    asked = {t.address for t in result.targets if t.client_cert_requested}
    refused = [h for h in http.health if h.address in asked and not h.ok and h.status in _REFUSED_WITHOUT_CERT]
    if not http_failed or not refused:
        return []
    where = next(t.endpoint for t in result.targets if t.address == refused[0].address)
    return [_client_cert_finding(endpoint, where)]


def _key_problem(endpoint: Endpoint, c: CertInfo) -> str | None:
    if c.key_type in tlspolicy.FORBIDDEN_KEY_TYPES:
        return f"a {c.key_type} key, which browsers and the Web PKI no longer accept"
    if c.key_type in ("RSA", "RSA-PSS") and c.key_size is not None and c.key_size < endpoint.tls.min_rsa_bits:
        return f"a {c.key_size}-bit RSA key, below the {endpoint.tls.min_rsa_bits}-bit floor (curl: \"key too weak\")"
    if c.key_type == "EC" and c.curve not in endpoint.tls.ec_curves:
        return f"an EC key on curve {c.curve or 'unknown'}, not one of {', '.join(endpoint.tls.ec_curves)}"
    return None


def _signature_problem(endpoint: Endpoint, c: CertInfo) -> str | None:
    if c.self_signed:  # a trust anchor's (or a self-signed leaf's) own signature proves nothing
        return None
    weak = tlspolicy.WEAK_HASHES.get(c.signature_hash or "")
    if weak is None or (c.signature_hash == "sha1" and endpoint.tls.allow_sha1):
        return None
    return f"is signed with {c.signature_algorithm} ({weak}), which browsers and curl refuse"


def _weak_material(endpoint: Endpoint, t: TlsTarget, where: str) -> list[Finding]:
    out = []
    for c in t.chain:
        name = f"{c.position} {c.subject}"
        key = _key_problem(endpoint, c)
        if key:
            out.append(_finding(endpoint, "tls.weak_key",
                                f"the {name} served for {endpoint.hostname} has {key} {where}", t.endpoint))
        signature = _signature_problem(endpoint, c)
        if signature:
            out.append(_finding(endpoint, "tls.weak_signature",
                                f"the {name} served for {endpoint.hostname} {signature} {where}", t.endpoint))
    return out


def _trust(endpoint: Endpoint, t: TlsTarget, where: str, weak: list[Finding]) -> list[Finding]:
    v: ChainVerdict = t.verdict
    host = endpoint.hostname
    if v.incomplete:
        return [_finding(endpoint, "tls.incomplete_chain",
                         f"the chain served for {host} is incomplete: the issuer of "
                         f"'{t.chain[-1].subject}' ({t.chain[-1].issuer}) was not sent {where}", t.endpoint)]
    if v.trusted:
        return []
    if v.anchored and v.strict_cause == "profile":
        return [_finding(endpoint, "tls.profile_violation",
                         f"the chain served for {host} reaches a trust anchor, but {v.profile_defect}: "
                         f"{tlspolicy.LENIENT_CLIENTS}; {tlspolicy.STRICT_CLIENTS} {where}", t.endpoint)]
    if v.anchored:
        return []  # a weak key or signature the floors name (or the contract knowingly allows)
    if weak:
        return []  # the weak key or signature explains it
    what = "a self-signed leaf" if v.self_signed_leaf else f"a chain ending at untrusted '{t.chain[-1].issuer}'"
    return [_finding(endpoint, "tls.untrusted", f"{host} serves {what} {where}", t.endpoint)]


def _judge_chain(endpoint: Endpoint, t: TlsTarget, where: str) -> list[Finding]:
    out: list[Finding] = []
    v: ChainVerdict = t.verdict
    leaf = t.chain[0]
    host = endpoint.hostname
    if not v.hostname_match:
        # A hostile certificate's SANs may hold control characters: a message stays one line.
        names = [n if n.isprintable() else ascii(n) for n in leaf.sans if ":" not in n or x509._as_ip(n) is not None]
        if names:
            covers = f"covers only {', '.join(names[:5])}"
        else:
            subject = leaf.subject if leaf.subject.isprintable() else ascii(leaf.subject)
            covers = f"names no host in its subjectAltName (subject {subject}; clients ignore the CN)"
        out.append(_finding(endpoint, "tls.hostname_mismatch",
                            f"the certificate served for {host} {covers} {where}; "
                            "check the listener's certificate binding", t.endpoint))
    weak = _weak_material(endpoint, t, where)
    out += weak + _trust(endpoint, t, where, weak)
    for name in v.expired:
        out.append(_finding(endpoint, "tls.expired", f"the {name} served for {host} has expired {where}",
                            t.endpoint))
    for name in v.not_yet_valid:
        out.append(_finding(endpoint, "tls.not_yet_valid", f"the {name} served for {host} is not valid yet {where}",
                            t.endpoint))
    out += _expiring(endpoint, t, where)
    issuer = endpoint.tls.expect_issuer
    if issuer and issuer.lower() not in leaf.issuer.lower():
        out.append(_finding(endpoint, "tls.unexpected_issuer",
                            f"the leaf for {host} is issued by '{leaf.issuer}', expected '{issuer}' {where}",
                            t.endpoint))
    out += _revocation(endpoint, t, where)
    return out


def _revocation(endpoint: Endpoint, t: TlsTarget, where: str) -> list[Finding]:
    out = []
    for r in t.revocation:
        name = f"{r.position} {r.subject}"
        if r.status == "revoked":
            out.append(_finding(endpoint, "tls.revoked",
                                f"the {name} served for {endpoint.hostname} is revoked: {r.detail} {where}",
                                t.endpoint))
        elif r.status == "unknown":
            out.append(_finding(endpoint, "tls.revocation_unknown",
                                f"the revocation status of the {name} served for {endpoint.hostname} is unknown: "
                                f"{r.detail} {where}", t.endpoint))
    return out


def _expiring(endpoint: Endpoint, t: TlsTarget, where: str) -> list[Finding]:
    soonest = min(t.chain, key=lambda c: c.not_after)
    if soonest.days_left <= 0:
        return []  # tls.expired says it
    tier, limits = renewal.tier(endpoint, soonest)
    if tier is None:
        return []
    severity = "warning" if tier in ("warning", "high") else "critical"
    at = renewal.span(limits[EXPIRY_TIERS.index(tier)])
    return [_finding(endpoint, "tls.expiring",
                     f"the certificate served for {endpoint.hostname} expires in {renewal.span(soonest.days_left)} "
                     f"(tier {tier} at {at} for {renewal.lifetime_text(soonest)}; "
                     f"{soonest.position} {soonest.subject}) {where}", t.endpoint, severity, tier)]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """Several addresses serving the same broken chain: one finding per code and message shape."""
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        key = (f.code, f.message.split(" (served by", 1)[0])
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
