"""ACME Renewal Information (RFC 9773): the CA's own suggested renewal window for a certificate.

The window is asked for once and kept until the CA's Retry-After says to ask
again (clamped, and bounded in count), like the weak-protocol handshake: a
long-running `prober serve` asks each CA about each served certificate a few
times a day, not on every probe.  A fetch that fails is a note in the report,
never a finding: the CA's API being down says nothing about the endpoint.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from .model import AriWindow, CertInfo, Endpoint

if TYPE_CHECKING:
    import httpx  # imported on first fetch only: a one-shot check of a certificate without ARI never needs it

# Issuer organisation (the O= of the leaf's issuer) -> the ACME directory of a CA known to serve ARI.
# Sources: letsencrypt.org/docs/acme-protocol-updates and /docs/staging-environment (production and
# staging directories, ARI since 2023); cloud.google.com/certificate-manager/docs/public-ca (Google
# Trust Services' ACME directory, ARI since 2024).  More specific prefixes first.
ACME_DIRECTORIES: tuple[tuple[str, str], ...] = (
    ("(STAGING) Let's Encrypt", "https://acme-staging-v02.api.letsencrypt.org/directory"),
    ("Let's Encrypt", "https://acme-v02.api.letsencrypt.org/directory"),
    ("Google Trust Services", "https://dv.acme-v02.api.pki.goog/directory"),
)

DEFAULT_RECHECK_SECONDS = 6 * 3600.0  # RFC 9773 §4.3: without Retry-After, ask again in about six hours
MIN_RECHECK_SECONDS = 60.0
MAX_RECHECK_SECONDS = 24 * 3600.0
FAILURE_RECHECK_SECONDS = 300.0
DIRECTORY_SECONDS = 24 * 3600.0
FETCH_TIMEOUT = 5.0
MAX_BODY = 64 * 1024
_CACHE_MAX = 65536


class _Cached(NamedTuple):
    until: float  # time.monotonic()
    window: AriWindow | None
    note: str | None


_windows: dict[tuple[str, str], _Cached] = {}
_directories: dict[str, tuple[float, str]] = {}


class AriError(Exception):
    """One line saying why the window could not be had."""


def organisation(issuer_dn: str) -> str | None:
    """The O= value of an RFC 4514 name, unescaped."""
    match = re.search(r"(?:^|,)O=((?:\\.|[^,])*)", issuer_dn)
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else None


@lru_cache(maxsize=4096)  # a fleet has few issuers; this runs on every probe
def directory_for(issuer_dn: str) -> str | None:
    """The ACME directory of the CA that issued a leaf with this issuer name, if it is known to serve ARI."""
    org = organisation(issuer_dn) or ""
    return next((url for prefix, url in ACME_DIRECTORIES if org.startswith(prefix)), None)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def serial_der(serial: int) -> bytes:
    """The content octets of the serial's DER INTEGER: minimal two's complement, big-endian."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)


def cert_id(authority_key_id: bytes, serial: int) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(DER serial content), no padding."""
    return f"{_b64url(authority_key_id)}.{_b64url(serial_der(serial))}"


def cert_id_of(leaf: CertInfo) -> str:
    serial = -int(leaf.serial[1:], 16) if leaf.serial.startswith("-") else int(leaf.serial or "0", 16)
    return cert_id(bytes.fromhex(leaf.authority_key_id), serial)


def retry_after(value: str | None, now: float) -> float:
    """Seconds until the CA wants to be asked again: delta-seconds or an HTTP-date, clamped."""
    seconds = DEFAULT_RECHECK_SECONDS
    if value:
        text = value.strip()
        if text.isdigit():
            seconds = float(text)
        else:
            import email.utils  # on first use: an HTTP-date Retry-After is rare, and the module costs 5 ms of start-up
            try:
                seconds = email.utils.parsedate_to_datetime(text).timestamp() - now
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = DEFAULT_RECHECK_SECONDS
    return min(max(seconds, MIN_RECHECK_SECONDS), MAX_RECHECK_SECONDS)


def _timestamp(value: object, what: str) -> float:
    if not isinstance(value, str):
        raise AriError(f"the suggestedWindow has no {what} timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise AriError(f"the suggestedWindow {what} {value[:40]!r} is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise AriError(f"the suggestedWindow {what} {value[:40]!r} has no time zone")
    return parsed.timestamp()


def parse_window(body: bytes, url: str) -> AriWindow:
    """A RenewalInfo object (RFC 9773 §4.2) -> AriWindow; anything else raises AriError."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise AriError("the answer is not JSON") from None
    window = doc.get("suggestedWindow") if isinstance(doc, dict) else None
    if not isinstance(window, dict):
        raise AriError("the answer has no suggestedWindow object")
    start, end = _timestamp(window.get("start"), "start"), _timestamp(window.get("end"), "end")
    if end <= start:
        raise AriError("the suggestedWindow ends before it starts")
    explanation = doc.get("explanationURL")
    return AriWindow(start=start, end=end, url=url,
                     explanation_url=explanation if isinstance(explanation, str) else None)


class _Answer(NamedTuple):
    status: int
    retry_after: str | None
    body: bytes


async def _get(client: httpx.AsyncClient, url: str) -> _Answer:
    import httpx
    try:
        async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise AriError(f"{url} answered more than {MAX_BODY // 1024} KiB")
            return _Answer(response.status_code, response.headers.get("retry-after"), body)
    except httpx.TimeoutException:
        raise AriError(f"{url} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise AriError(f"{url}: {str(exc).strip() or type(exc).__name__}"[:200]) from None


async def _renewal_info_base(client: httpx.AsyncClient, directory: str) -> str:
    cached = _directories.get(directory)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    response = await _get(client, directory)
    if response.status != 200:
        raise AriError(f"the ACME directory {directory} answered {response.status}")
    try:
        base = json.loads(response.body).get("renewalInfo")
    except (ValueError, AttributeError, UnicodeDecodeError):
        base = None
    if not isinstance(base, str) or not base.startswith(("https://", "http://")):
        raise AriError(f"the ACME directory {directory} offers no renewalInfo URL (the CA does not serve ARI)")
    if len(_directories) >= _CACHE_MAX:
        _directories.clear()
    _directories[directory] = (time.monotonic() + DIRECTORY_SECONDS, base)
    return base


async def _fetch(directory: str, cid: str, timeout: float) -> tuple[AriWindow, float]:
    import httpx
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        base = await _renewal_info_base(client, directory)
        url = f"{base.rstrip('/')}/{cid}"
        response = await _get(client, url)
        if response.status != 200:
            raise AriError(f"{url} answered {response.status}")
        return parse_window(response.body, url), retry_after(response.retry_after, time.time())


def directory_setting(endpoint: Endpoint, leaf: CertInfo) -> str | None:
    """The directory to ask about this leaf: the contract's URL, the issuer's known one, or None."""
    setting = endpoint.tls.ari
    if setting == "off":
        return None
    return directory_for(leaf.issuer) if setting == "auto" else setting


async def window_for(endpoint: Endpoint, leaf: CertInfo, deadline: float) -> tuple[AriWindow | None, str | None]:
    """(the CA's window for this leaf, a note when it could not be had); (None, None) when not asked."""
    directory = directory_setting(endpoint, leaf)
    if directory is None:
        return None, None
    if not leaf.authority_key_id:
        return None, (f"ARI: the leaf (serial {leaf.serial}) has no Authority Key Identifier, so its "
                      "renewal window cannot be asked for")
    cid = cert_id_of(leaf)
    key = (directory, cid)
    cached = _windows.get(key)
    if cached is not None and cached.until > time.monotonic():
        return cached.window, cached.note
    timeout = min(FETCH_TIMEOUT, max(deadline - time.monotonic(), 0.05))
    try:
        async with asyncio.timeout(timeout):
            window, seconds = await _fetch(directory, cid, timeout)
        note = None
    except TimeoutError:
        window, seconds = None, FAILURE_RECHECK_SECONDS
        note = (f"ARI: the renewal window of serial {leaf.serial} could not be fetched: {directory} did not "
                f"answer in {timeout:.1f}s")
    except AriError as err:
        window, seconds = None, FAILURE_RECHECK_SECONDS
        note = f"ARI: the renewal window of serial {leaf.serial} could not be fetched: {err}"
    except Exception as exc:  # noqa: BLE001 - a hostile CA answer must never crash a probe
        window, seconds = None, FAILURE_RECHECK_SECONDS
        note = f"ARI: the renewal window of serial {leaf.serial} could not be fetched: {type(exc).__name__}"
    if len(_windows) >= _CACHE_MAX:
        _windows.clear()
    _windows[key] = _Cached(time.monotonic() + seconds, window, note)
    return window, note


def cache_clear() -> None:
    _windows.clear()
    _directories.clear()
