"""TLS layer: handshake with each address, capture the chain actually served.

The handshake never verifies (CERT_NONE): an expired, untrusted or wrong-host
certificate must still be captured and reported in full.  Verification is
done afterwards, by ``x509.verify_chain_cached``, against our own trust store.
No session is ever resumed: every probe sees the real chain.
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto
import errno
import ssl
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache

import httpcore
from cryptography import x509 as cx509

from .. import x509
from ..hints import hint_for
from ..model import CATALOGUE, CertInfo, ChainVerdict, Endpoint, Finding, TlsResult, TlsTarget

_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
             "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_BELOW = {"1.1": "1.0", "1.2": "1.1", "1.3": "1.2"}

# asyncio's TLS protocol gives every connection a zeroed read buffer of SSLProtocol.max_size,
# 256 KiB.  A probe reads a handshake and at most a 64 KiB body, in TLS records of at most
# 16 KiB: 32 KiB is plenty.  With 256 probes in flight that is 8 MiB of buffers instead of 64 MiB;
# measured at 3,000 endpoints: RSS 264 -> 183 MB (bench/RESULTS.md, "Heap and collector").
READ_BUFFER = 32 * 1024
asyncio.sslproto.SSLProtocol.max_size = READ_BUFFER


class AsyncioStream(httpcore.AsyncNetworkStream):
    """asyncio's own streams and TLS transport, as httpcore's network stream.

    anyio's TLSStream (httpcore's default backend) drives the handshake and every
    record through a Python-level memory BIO of its own on top of asyncio; asyncio's
    transport does the same work once.  Measured: about 15% less CPU per handshake
    and request (bench/RESULTS.md).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, address: str, port: int, timeout: float) -> AsyncioStream:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
        return cls(reader, writer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

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

    async def aclose(self) -> None:
        self._writer.close()  # close_notify and FIN go out in the background; never wait on the peer

    def get_extra_info(self, info: str) -> object:
        return self._writer.get_extra_info(info)


@lru_cache(maxsize=None)
def probe_context() -> ssl.SSLContext:
    """The one context for the main handshake: accepts any certificate, never resumes."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_TICKET
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@lru_cache(maxsize=None)
def weak_context(below: str) -> ssl.SSLContext:
    """A context capped at the protocol just below the contract's minimum."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_TICKET
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.0/1.1 at its default level
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: offering them is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = _VERSIONS[below]
    return ctx


@dataclass(slots=True)
class Connection:
    """A live TLS stream the HTTP layer reuses, so one probe does one handshake per address."""
    address: str
    port: int
    stream: httpcore.AsyncNetworkStream

    async def aclose(self) -> None:
        try:
            await asyncio.wait_for(self.stream.aclose(), 1.0)
        except Exception:  # closing a broken stream must never fail a probe
            pass


_ERRNO_TEXT = {errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset by peer",
               errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable",
               errno.ETIMEDOUT: "timed out"}


def _root_cause(exc: BaseException) -> BaseException:
    seen = 0
    while seen < 8 and (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return exc


def _error_text(exc: BaseException) -> str:
    """One line a person understands, from whatever httpcore/anyio/ssl raised."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, httpcore.TimeoutException)):
        return "timed out"
    for candidate in (exc, _root_cause(exc)):
        if isinstance(candidate, OSError) and candidate.errno in _ERRNO_TEXT:
            return _ERRNO_TEXT[candidate.errno]
        if isinstance(candidate, ssl.SSLError):
            return f"TLS error: {candidate.reason or candidate}".splitlines()[0][:200]
    if isinstance(exc, ExceptionGroup) and exc.exceptions:
        return _error_text(exc.exceptions[0])
    text = str(exc).strip() or type(exc).__name__
    if text == "All connection attempts failed":
        cause = _root_cause(exc)
        text = str(cause).strip() or text
    return text.splitlines()[0][:200]


def _served_chain(stream: httpcore.AsyncNetworkStream) -> list[bytes]:
    sslobj = stream.get_extra_info("ssl_object")
    if sslobj is None:
        return []
    getter = getattr(sslobj, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = sslobj._sslobj.get_unverified_chain  # the same call, private before 3.13
    chain = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]


async def _handshake(address: str, port: int, hostname: str, ctx: ssl.SSLContext, deadline: float
                     ) -> tuple[httpcore.AsyncNetworkStream | None, str | None, bool, float | None, float | None]:
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
        await Connection(address, port, raw).aclose()
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
            await Connection(address, port, plain).aclose()
    if head == b"HTTP/":
        return "the TLS port answers plain HTTP (TLS is not enabled on this listener, or the port is the HTTP one)"
    return "the TLS port does not speak TLS (its reply is not a TLS record: OpenSSL says WRONG_VERSION_NUMBER)"


# Which protocols a listener accepts changes when someone edits its config, not between two
# probes: a long-running `prober serve` asks again at most once an hour per listener and
# hostname, instead of opening a second connection and handshake on every probe.  A one-shot
# `prober check` starts with an empty cache, so it always asks.
WEAK_RECHECK_SECONDS = 3600.0
_WEAK_CACHE_MAX = 65536
_weak_seen: dict[tuple[str, int, str, str], tuple[float, str | None]] = {}


async def _weak_protocol(address: str, port: int, hostname: str, minimum: str, deadline: float) -> str | None:
    below = _BELOW.get(minimum)
    if below is None:
        return None
    key = (address, port, hostname, minimum)
    seen = _weak_seen.get(key)
    if seen is not None and seen[0] > time.monotonic():
        return seen[1]
    stream, error, connected, *_ = await _handshake(address, port, hostname, weak_context(below), deadline)
    version = stream.get_extra_info("ssl_object").version() if stream is not None else None
    if stream is not None:
        await Connection(address, port, stream).aclose()
    if stream is not None or (connected and error != "timed out"):  # a definite yes or no: remember it
        if len(_weak_seen) >= _WEAK_CACHE_MAX:
            _weak_seen.clear()
        _weak_seen[key] = (time.monotonic() + WEAK_RECHECK_SECONDS, version)
    return version


async def probe_address(endpoint: Endpoint, address: str, deadline: float, store: x509.TrustStore
                        ) -> tuple[TlsTarget, Connection | None]:
    port = endpoint.tls.port
    stream, error, connected, t_connect, t_tls = await _handshake(
        address, port, endpoint.hostname, probe_context(), deadline)
    if stream is None:
        return TlsTarget(address=address, port=port, connected=connected, error=error,
                         connect_seconds=t_connect), None
    sslobj = stream.get_extra_info("ssl_object")
    now = time.time()
    certs, parse_error = _parse_served(_served_chain(stream))
    verdict = x509.verify_chain_cached(certs, endpoint.hostname, store, now) if certs else None
    weak = await _weak_protocol(address, port, endpoint.hostname, endpoint.tls_min_version, deadline)
    cipher = sslobj.cipher()
    target = TlsTarget(
        address=address, port=port, connected=True, handshake=True, version=sslobj.version(),
        cipher=cipher[0] if cipher else None, alpn=sslobj.selected_alpn_protocol(),
        chain=_infos(certs, now), verdict=verdict, weak_protocol=weak,
        connect_seconds=t_connect, tls_seconds=t_tls,
        error=None if certs else parse_error or "the server sent no parsable certificate")
    return target, Connection(address, port, stream)


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
        where = f"(served by {t.endpoint})"
        if not t.connected:
            out.append(_finding(endpoint, "tls.connect_failed",
                                f"cannot connect to {t.endpoint} for {endpoint.hostname}: {t.error}", t.endpoint))
        elif not t.handshake or not t.chain:
            out.append(_finding(endpoint, "tls.handshake_failed",
                                f"TLS handshake with {t.endpoint} for {endpoint.hostname} failed: {t.error}",
                                t.endpoint))
        else:
            out += _judge_chain(endpoint, t, where)
    return _dedupe(out)


def _judge_chain(endpoint: Endpoint, t: TlsTarget, where: str) -> list[Finding]:
    out: list[Finding] = []
    v: ChainVerdict = t.verdict
    leaf = t.chain[0]
    host = endpoint.hostname
    if not v.hostname_match:
        # A hostile certificate's SANs may hold control characters: a message stays one line.
        covered = ", ".join(n if n.isprintable() else ascii(n) for n in leaf.sans[:5]) or "no DNS names"
        out.append(_finding(endpoint, "tls.hostname_mismatch",
                            f"the certificate served for {host} covers only {covered} {where}; "
                            "check the listener's certificate binding", t.endpoint))
    if v.incomplete:
        out.append(_finding(endpoint, "tls.incomplete_chain",
                            f"the chain served for {host} is incomplete: the issuer of "
                            f"'{t.chain[-1].subject}' ({t.chain[-1].issuer}) was not sent {where}", t.endpoint))
    elif not v.trusted:
        what = "a self-signed leaf" if v.self_signed_leaf else f"a chain ending at untrusted '{t.chain[-1].issuer}'"
        out.append(_finding(endpoint, "tls.untrusted", f"{host} serves {what} {where}", t.endpoint))
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
    if t.weak_protocol:
        out.append(_finding(endpoint, "tls.weak_protocol",
                            f"{t.endpoint} still accepts {t.weak_protocol}, below tls_min_version "
                            f"{endpoint.tls_min_version}", t.endpoint))
    return out


def _expiring(endpoint: Endpoint, t: TlsTarget, where: str) -> list[Finding]:
    soonest = min(t.chain, key=lambda c: c.not_after)
    if soonest.days_left <= 0:
        return []  # tls.expired says it
    tier = x509.expiry_tier(soonest.days_left, endpoint.expiry_days)
    if tier is None:
        return []
    severity = "warning" if tier in ("warning", "high") else "critical"
    return [_finding(endpoint, "tls.expiring",
                     f"the certificate served for {endpoint.hostname} expires in {soonest.days_left:.1f} days "
                     f"(tier {tier}; {soonest.position} {soonest.subject}) {where}", t.endpoint, severity, tier)]


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
