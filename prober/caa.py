"""CAA (RFC 8659): will the CA that issues this hostname's certificate be allowed to issue the next one?

The relevant record set is the closest CAA RRset at or above the name (tree
climbing, root excluded); a wildcard certificate is judged by its
`issuewild` properties when there are any.  Answers are cached by their TTL
(clamped, bounded in count), so `prober serve` asks once per TTL per name.
A lookup that fails is a note in the report, not a finding.
"""
from __future__ import annotations

import asyncio
import time
from functools import lru_cache
from typing import NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from .ari import organisation
from .model import CaaCheck, CertInfo, Endpoint, ResolverSpec

# The CAA issuer domains each CA honours, by the O= of its issuing certificates.  Sources:
# letsencrypt.org/docs/caa; pki.goog/faq (Google Trust Services); docs.aws.amazon.com/acm/latest/
# userguide/setup-caa.html (Amazon: any one of four); digicert.com/faq/caa; sectigo.com/knowledge-base
# (CAA); support.globalsign.com (CAA records).  Prefixes of the organisation, most specific first.
CA_CAA_IDENTITIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (O= prefix, the CA's name for messages, its CAA identities)
    ("(STAGING) Let's Encrypt", "Let's Encrypt (staging)", ("letsencrypt.org",)),
    ("Let's Encrypt", "Let's Encrypt", ("letsencrypt.org",)),
    ("Google Trust Services", "Google Trust Services", ("pki.goog",)),
    ("Amazon", "Amazon", ("amazon.com", "amazontrust.com", "awstrust.com", "amazonaws.com")),
    ("DigiCert", "DigiCert", ("digicert.com",)),
    ("Sectigo", "Sectigo", ("sectigo.com", "comodoca.com")),
    ("GlobalSign", "GlobalSign", ("globalsign.com",)),
)
# certificate_source -> the CA it issues from (a name of CA_CAA_IDENTITIES).  cert-manager and
# key vaults issue from whichever CA their issuer names, so they imply none.
SOURCE_CA: dict[str, str] = {"acm": "Amazon", "lets-encrypt": "Let's Encrypt", "letsencrypt": "Let's Encrypt"}

# RFC 8659 §4 (issue, issuewild, iodef), RFC 9495 (issuemail), the BIMI group's issuevmc: a critical
# property outside these forbids every CA.
KNOWN_TAGS = frozenset({"issue", "issuewild", "iodef", "issuemail", "issuevmc", "contactemail", "contactphone"})

MIN_TTL, MAX_TTL, FAILURE_TTL = 60.0, 3600.0, 60.0
QUERY_TIMEOUT = 2.0
MAX_LEVELS = 16
_CACHE_MAX = 65536


class CaaError(Exception):
    """One line: the lookup failed, so nothing can be said."""


class Lookup(NamedTuple):
    found_at: str | None
    records: tuple[tuple[int, str, str], ...]


_cache: dict[tuple[str, int, str], tuple[float, Lookup | None, str | None]] = {}


@lru_cache(maxsize=4096)  # a fleet has few issuers; this runs on every probe
def ca_of(issuer_dn: str) -> tuple[str, tuple[str, ...]] | None:
    org = organisation(issuer_dn) or ""
    return next(((name, ids) for prefix, name, ids in CA_CAA_IDENTITIES if org.startswith(prefix)), None)


def ca_named(name: str) -> tuple[str, tuple[str, ...]] | None:
    return next(((n, ids) for _, n, ids in CA_CAA_IDENTITIES if n == name), None)


def wildcard_base(hostname: str, leaf: CertInfo) -> str | None:
    """The base name when the hostname is covered by a wildcard SAN only, else None."""
    host = hostname.rstrip(".").lower()
    sans = {s.rstrip(".").lower() for s in leaf.sans}
    if host in sans:
        return None
    parent = host.split(".", 1)[1] if "." in host else ""
    return parent if parent and f"*.{parent}" in sans else None


def permits(records: tuple[tuple[int, str, str], ...], identities: tuple[str, ...], wildcard: bool) -> bool:
    """RFC 8659 §4: does the relevant RRset let a CA with these identities issue?"""
    tags = [(flags, tag.lower(), value) for flags, tag, value in records]
    if any(flags & 128 and tag not in KNOWN_TAGS for flags, tag, _ in tags):
        return False
    issue = [v for _, t, v in tags if t == "issue"]
    wild = [v for _, t, v in tags if t == "issuewild"]
    relevant = wild if wildcard and wild else issue
    if not relevant:
        return True
    allowed = {v.split(";", 1)[0].strip().lower() for v in relevant}
    return any(i.lower() in allowed for i in identities)


def allowed_text(records: tuple[tuple[int, str, str], ...], wildcard: bool) -> str:
    tags = [(t.lower(), v) for _, t, v in records]
    wild = [v for t, v in tags if t == "issuewild"]
    relevant = wild if wildcard and wild else [v for t, v in tags if t == "issue"]
    names = sorted({v.split(";", 1)[0].strip().lower() for v in relevant} - {""})
    return ", ".join(names) if names else "no CA at all"


def _server(endpoint: Endpoint) -> ResolverSpec | None:
    """The resolver to ask: a public one if the contract has one (a CA looks from outside), else the first."""
    usable = [r for r in endpoint.resolvers if r.address]
    return next((r for r in usable if r.view == "public"), usable[0] if usable else None)


async def _ask(name: dns.name.Name, server: ResolverSpec, deadline: float) -> tuple[str, list, int]:
    import dns.asyncquery  # on the first walk only: it brings dnspython's whole transport stack (~80 ms)
    query = dns.message.make_query(name, dns.rdatatype.CAA)
    timeout = min(QUERY_TIMEOUT, max(deadline - time.monotonic(), 0.05))
    try:
        response = await dns.asyncquery.udp(query, server.address, timeout=timeout, port=server.port)
        if response.flags & dns.flags.TC:
            response = await dns.asyncquery.tcp(query, server.address, timeout=timeout, port=server.port)
    except dns.exception.Timeout:
        raise CaaError(f"the CAA query for {name} to {server.name} timed out") from None
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        raise CaaError(f"the CAA query for {name} to {server.name} failed: {exc}"[:200]) from None
    rcode = dns.rcode.to_text(response.rcode())
    caa = [rrset for rrset in response.answer if rrset.rdtype == dns.rdatatype.CAA]
    ttl = min((r.ttl for r in caa), default=int(MAX_TTL))
    return rcode, [(rd.flags, rd.tag.decode("ascii", "replace"), rd.value.decode("utf-8", "replace"))
                   for rrset in caa for rd in rrset], ttl


async def relevant_rrset(hostname: str, server: ResolverSpec, deadline: float) -> tuple[Lookup, float]:
    """Climb from the name towards the root (excluded) to the first non-empty CAA RRset."""
    name = dns.name.from_text(hostname)
    for _ in range(MAX_LEVELS):
        if len(name.labels) <= 1:
            break
        rcode, records, ttl = await _ask(name, server, deadline)
        if rcode not in ("NOERROR", "NXDOMAIN"):
            raise CaaError(f"the CAA query for {name.to_text(True)} to {server.name} answered {rcode}")
        if records:
            return Lookup(name.to_text(omit_final_dot=True), tuple(records)), float(ttl)
        name = name.parent()
    return Lookup(None, ()), MAX_TTL


async def lookup(endpoint: Endpoint, name: str, deadline: float) -> tuple[Lookup | None, str | None]:
    """The relevant CAA RRset for `name`, cached by its TTL; (None, note) when it could not be had."""
    server = _server(endpoint)
    if server is None:
        return None, "CAA: not checked, the contract lists no resolver to ask"
    key = (server.address or "", server.port, name.lower())
    cached = _cache.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1], cached[2]
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.05)):
            found, ttl = await relevant_rrset(name, server, deadline)
        note, ttl = None, min(max(ttl, MIN_TTL), MAX_TTL)
    except CaaError as err:
        found, note, ttl = None, f"CAA: not checked: {err}", FAILURE_TTL
    except TimeoutError:
        found, note, ttl = None, f"CAA: not checked: the lookup for {name} did not finish in time", FAILURE_TTL
    except Exception as exc:  # noqa: BLE001 - a hostile answer must never crash a probe
        found, note, ttl = None, f"CAA: not checked: {type(exc).__name__}: {exc}"[:200], FAILURE_TTL
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = (time.monotonic() + ttl, found, note)
    return found, note


def identities_to_check(endpoint: Endpoint, leaf: CertInfo) -> list[tuple[str, str, tuple[str, ...]]]:
    """(why, the CA's name, its CAA identities) for the serving CA and the one certificate_source implies."""
    out: list[tuple[str, str, tuple[str, ...]]] = []
    if endpoint.tls.caa_identities:
        out.append(("issued the served leaf", leaf.issuer, endpoint.tls.caa_identities))
    else:
        known = ca_of(leaf.issuer)
        if known is not None:
            out.append(("issued the served leaf", *known))
    implied = ca_named(SOURCE_CA.get((endpoint.certificate_source or "").lower(), ""))
    if implied is not None and all(set(implied[1]) != set(ids) for _, _, ids in out):
        out.append((f"certificate_source {endpoint.certificate_source} issues from", *implied))
    return out


async def check(endpoint: Endpoint, leaf: CertInfo, deadline: float
                ) -> tuple[CaaCheck | None, list[tuple[str, str, tuple[str, ...]]], str | None]:
    """(what was found, the (why, CA, identities) it forbids, a note); nothing asked when no CA is known."""
    wanted = identities_to_check(endpoint, leaf)
    if not wanted:
        return None, [], None
    base = wildcard_base(endpoint.hostname, leaf)
    name = base or endpoint.hostname.rstrip(".")
    found, note = await lookup(endpoint, name, deadline)
    if found is None:
        return None, [], note
    result = CaaCheck(name=name, found_at=found.found_at, records=found.records, wildcard=base is not None)
    forbidden = [w for w in wanted if not permits(found.records, w[2], result.wildcard)]
    return result, forbidden, None


def cache_clear() -> None:
    _cache.clear()
