"""Revocation of the served certificates: the CRL from CRL Distribution Points, else OCSP via AIA.

This is outbound traffic to addresses a certificate names, so it is fenced in:
- only certificates on a path to a trust anchor are checked (the path's signatures are
  verified first), so a self-signed certificate cannot point the prober at a URL of its choosing;
- only http:// and https:// URLs, redirects followed at most MAX_REDIRECTS times and never
  off HTTP(S); bodies capped (MAX_CRL_BYTES, MAX_OCSP_BYTES);
- every fetch ends by the probe's deadline;
- a CRL is cached until its nextUpdate, an OCSP answer until its nextUpdate, a failure for
  FAILURE_RETRY_SECONDS, in bounded caches: `prober serve` does not fetch on every probe;
- the contract's tls.revocation: off turns all of it off.

A CRL or OCSP answer counts only when its signature verifies against the issuer (or, for
OCSP, a responder certificate the issuer signed for OCSP signing).
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Sequence
from urllib.parse import urljoin, urlsplit

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from . import x509
from .model import ChainVerdict, Endpoint, Revocation

MAX_CRL_BYTES = 8 << 20
MAX_OCSP_BYTES = 64 << 10
MAX_REDIRECTS = 3
FETCH_TIMEOUT = 5.0  # at most, and never past the probe's deadline
FAILURE_RETRY_SECONDS = 300.0
NO_NEXT_UPDATE_SECONDS = 3600.0
_CACHE_MAX = 512


class _Cache:
    """Bounded LRU of (expires at, value)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.entries: OrderedDict[object, tuple[float, object]] = OrderedDict()

    def get(self, key: object, now: float) -> object | None:
        entry = self.entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        self.entries.move_to_end(key)
        return entry[1]

    def put(self, key: object, until: float, value: object) -> None:
        self.entries[key] = (until, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.maxsize:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


_CRLS = _Cache(_CACHE_MAX)  # url -> CertificateRevocationList | str (why it is unusable)
_OCSP = _Cache(_CACHE_MAX * 8)  # (url, issuer key hash, serial) -> Revocation-ready tuple
fetches = 0  # how many fetches were made in this process: the tests and the bench read it


def cache_clear() -> None:
    _CRLS.clear()
    _OCSP.clear()


class _FetchError(Exception):
    """A fetch that failed; the message is words for a person."""


async def _fetch(url: str, deadline: float, limit: int, body: bytes | None = None,
                 content_type: str | None = None) -> bytes:
    global fetches
    import httpx  # imported on first use only: most probes never fetch (the caches answer)
    timeout = min(FETCH_TIMEOUT, deadline - time.monotonic())
    if timeout <= 0:
        raise _FetchError("no time was left in the probe's deadline")
    headers = {"content-type": content_type} if content_type else {}
    try:
        async with asyncio.timeout(timeout), httpx.AsyncClient(follow_redirects=False, timeout=timeout,
                                                               trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                if urlsplit(url).scheme not in ("http", "https"):
                    raise _FetchError(f"it redirects off HTTP(S), to {url[:120]}")
                fetches += 1
                method = "POST" if body is not None else "GET"
                async with client.stream(method, url, content=body, headers=headers) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise _FetchError(f"it answered HTTP {response.status_code}")
                    length = response.headers.get("content-length", "")
                    if length.isdigit() and int(length) > limit:
                        raise _FetchError(f"it is {int(length):,} bytes, over the {limit:,}-byte cap")
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > limit:
                            raise _FetchError(f"it is over the {limit:,}-byte cap")
                    return bytes(data)
            raise _FetchError(f"it redirects more than {MAX_REDIRECTS} times")
    except TimeoutError:
        raise _FetchError(f"it did not answer within {timeout:.1f}s") from None
    except httpx.HTTPError as exc:
        raise _FetchError(f"it could not be fetched ({_words(exc)})") from None


def _words(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _http_urls(names: Sequence[cx509.GeneralName]) -> list[str]:
    return [n.value for n in names if isinstance(n, cx509.UniformResourceIdentifier)
            and urlsplit(n.value).scheme in ("http", "https")]


def _crl_urls(cert: cx509.Certificate) -> list[str]:
    def read() -> list[str]:
        points = cert.extensions.get_extension_for_class(cx509.CRLDistributionPoints).value
        return [u for p in points if p.full_name for u in _http_urls(p.full_name)]
    return x509._safe(read, [])


def _ocsp_urls(cert: cx509.Certificate) -> list[str]:
    def read() -> list[str]:
        aia = cert.extensions.get_extension_for_class(cx509.AuthorityInformationAccess).value
        return _http_urls([d.access_location for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP])
    return x509._safe(read, [])


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.replace(tzinfo=moment.tzinfo or timezone.utc).timestamp()


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d")


# ------------------------------------------------------------------------ CRL
async def _crl(url: str, issuer: cx509.Certificate, deadline: float) -> cx509.CertificateRevocationList | str:
    """The CRL at url, verified against issuer, or why it is unusable (cached either way)."""
    now = time.time()
    key = (url, x509.fingerprint(issuer))
    cached = _CRLS.get(key, now)
    if cached is not None:
        return cached  # type: ignore[return-value]
    try:
        data = await _fetch(url, deadline, MAX_CRL_BYTES)
    except _FetchError as err:
        reason = f"the CRL at {url} is unusable: {err}"
        _CRLS.put(key, now + FAILURE_RETRY_SECONDS, reason)
        return reason
    crl, until = _parse_crl(data, url, issuer, now)
    _CRLS.put(key, until, crl)
    return crl


def _parse_crl(data: bytes, url: str, issuer: cx509.Certificate, now: float
               ) -> tuple[cx509.CertificateRevocationList | str, float]:
    try:
        crl = (cx509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else cx509.load_der_x509_crl(data))
    except ValueError:
        return f"the CRL at {url} is not a CRL", now + FAILURE_RETRY_SECONDS
    if crl.issuer != issuer.subject or not x509._safe(lambda: crl.is_signature_valid(issuer.public_key()), False):
        return (f"the CRL at {url} is not signed by the issuer {x509._short_name(issuer)}",
                now + FAILURE_RETRY_SECONDS)
    next_update = _ts(crl.next_update_utc)
    if next_update is not None and next_update <= now:
        return f"the CRL at {url} is past its nextUpdate ({_day(next_update)})", now + FAILURE_RETRY_SECONDS
    return crl, next_update if next_update is not None else now + NO_NEXT_UPDATE_SECONDS


def _crl_status(crl: cx509.CertificateRevocationList, cert: cx509.Certificate, url: str) -> tuple[str, str]:
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return "good", ""
    reason = x509._safe(lambda: entry.extensions.get_extension_for_class(cx509.CRLReason).value.reason.value, "")
    since = _ts(entry.revocation_date_utc)
    return "revoked", (f"listed in the CRL at {url} since {_day(since) if since else '?'}"
                       + (f" (reason {reason})" if reason else ""))


# ----------------------------------------------------------------------- OCSP
async def _ocsp(url: str, cert: cx509.Certificate, issuer: cx509.Certificate, deadline: float) -> tuple[str, str]:
    now = time.time()
    key = (url, x509.fingerprint(issuer), cert.serial_number)
    cached = _OCSP.get(key, now)
    if cached is not None:
        return cached  # type: ignore[return-value]
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    try:
        data = await _fetch(url, deadline, MAX_OCSP_BYTES, request.public_bytes(serialization.Encoding.DER),
                            "application/ocsp-request")
        answer, until = _read_ocsp(data, url, cert, issuer, now)
    except _FetchError as err:
        answer, until = ("unknown", f"the OCSP responder {url} gave no answer: {err}"), now + FAILURE_RETRY_SECONDS
    _OCSP.put(key, until, answer)
    return answer


def _read_ocsp(data: bytes, url: str, cert: cx509.Certificate, issuer: cx509.Certificate, now: float
               ) -> tuple[tuple[str, str], float]:
    retry = now + FAILURE_RETRY_SECONDS
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError:
        return ("unknown", f"the OCSP responder {url} sent something that is not an OCSP response"), retry
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return ("unknown", f"the OCSP responder {url} answered {response.response_status.name.lower()}"), retry
    if not _ocsp_signed(response, issuer):
        return ("unknown", f"the OCSP response from {url} is not signed by the issuer or its responder"), retry
    if response.serial_number != cert.serial_number:
        return ("unknown", f"the OCSP response from {url} is about another certificate"), retry
    next_update = _ts(response.next_update_utc)
    if next_update is not None and next_update <= now:
        return ("unknown", f"the OCSP response from {url} is past its nextUpdate"), retry
    until = next_update if next_update is not None else now + NO_NEXT_UPDATE_SECONDS
    status = response.certificate_status
    if status == ocsp.OCSPCertStatus.GOOD:
        return ("good", ""), until
    if status == ocsp.OCSPCertStatus.REVOKED:
        since = _ts(response.revocation_time_utc)
        reason = response.revocation_reason.value if response.revocation_reason else ""
        return ("revoked", f"the OCSP responder {url} says revoked since {_day(since) if since else '?'}"
                + (f" (reason {reason})" if reason else "")), until
    return ("unknown", f"the OCSP responder {url} does not know the certificate"), until


def _ocsp_signed(response: ocsp.OCSPResponse, issuer: cx509.Certificate) -> bool:
    """Signed by the issuer itself, or by a responder certificate the issuer signed for OCSP signing."""
    def eku_ocsp(cert: cx509.Certificate) -> bool:
        usage = cert.extensions.get_extension_for_class(cx509.ExtendedKeyUsage).value
        return ExtendedKeyUsageOID.OCSP_SIGNING in usage

    signers = [issuer] + [c for c in response.certificates
                          if x509._issued_by(c, issuer) and x509._safe(lambda c=c: eku_ocsp(c), False)]
    for signer in signers:
        if x509._safe(lambda s=signer: _verify(s, response), False):
            return True
    return False


def _verify(signer: cx509.Certificate, response: ocsp.OCSPResponse) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    key, algorithm = signer.public_key(), response.signature_hash_algorithm
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
    else:
        key.verify(response.signature, response.tbs_response_bytes)
    return True


# ---------------------------------------------------------------------- entry
async def _one(cert: cx509.Certificate, issuer: cx509.Certificate, position: str, deadline: float
               ) -> Revocation | None:
    subject = x509._short_name(cert)
    crl_urls, ocsp_urls = _crl_urls(cert), _ocsp_urls(cert)
    if crl_urls:
        url = crl_urls[0]
        crl = await _crl(url, issuer, deadline)
        if not isinstance(crl, str):
            status, detail = _crl_status(crl, cert, url)
            return Revocation(position, subject, status, "crl", detail)
        if not ocsp_urls:
            return Revocation(position, subject, "unknown", "crl", crl)
    if ocsp_urls:
        status, detail = await _ocsp(ocsp_urls[0], cert, issuer, deadline)
        return Revocation(position, subject, status, "ocsp", detail)
    return None  # nothing to ask: the certificate names no CRL and no OCSP responder


def applies(endpoint: Endpoint, verdict: ChainVerdict | None) -> bool:
    """Whether the chain has anything to check: revocation on, and a certificate with a CRL to ask."""
    return endpoint.tls.revocation != "off" and verdict is not None and bool(verdict.revocable)


async def check(endpoint: Endpoint, certs: Sequence[cx509.Certificate], verdict: ChainVerdict | None,
                store: x509.TrustStore, deadline: float) -> tuple[Revocation, ...]:
    """The revocation status of each served certificate on the path to a trust anchor."""
    if not applies(endpoint, verdict):
        return ()
    path = x509.path_of(certs, verdict, store)
    found = await asyncio.gather(*(_one(path[n], path[n + 1], "leaf" if n == 0 else "intermediate", deadline)
                                   for n in verdict.revocable if n + 1 < len(path)))
    return tuple(r for r in found if r is not None)
