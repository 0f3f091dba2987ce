"""A zone's delegation and its name servers: parent NS vs apex NS, lame servers, SOA serial drift.

These facts change when someone edits a zone or a secondary stops
transferring, not between two probes: each zone is checked at most once per
RECHECK_SECONDS and the result is shared by every endpoint in the zone (the
same cache-and-cadence shape as the TLS layer's hourly weak-protocol check).
A one-shot `prober check` starts with an empty cache, so it always checks.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from .model import Delegation, ResolverSpec, ServerCheck

RECHECK_SECONDS = 300.0  # zones change by the minute, not by the second
PARENT_QUERY_SECONDS = 2.0  # one parent server's share: a silent parent must not hold the probe
LAME_AFTER_SECONDS = 1.0  # a server silent for less than this ran out of our budget, not its own
_CACHE_MAX = 4096
_checked: dict[tuple[str, str], tuple[float, Delegation]] = {}


def cache_clear() -> None:
    """Forget every zone's delegation check (each is made again on the zone's next probe)."""
    _checked.clear()


# (qname, rdtype) -> a resolver's reply, or None
FirstAnswer = Callable[[dns.name.Name, int], Awaitable[dns.message.Message | None]]
# (qname, rdtype, address, port, timeout) -> the reply to an RD=0 query; raises on failure
AskServer = Callable[[dns.name.Name, int, str, int, float], Awaitable[dns.message.Message]]
# parent name -> (the zone that holds it, its servers)
FindZone = Callable[[str], Awaitable[tuple[str | None, tuple[ResolverSpec, ...], tuple[str, ...]]]]
_NOT_ASKED = ""  # beyond the fan-out bound: neither looked up nor asked
_FAILURES = (dns.exception.DNSException, OSError, ValueError, EOFError)


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


async def check(zone: str, ns_names: tuple[str, ...], known: tuple[ResolverSpec, ...], cache_key: str,
                deadline: float, *, port: int, limit: int, first_answer: FirstAnswer, ask_server: AskServer,
                find_zone: FindZone) -> Delegation:
    """The zone's delegation, from the cache while it is fresh; never raises.

    `known` are the NS addresses the DNS layer already looked up (spec.name is the NS name):
    those are not asked for again.
    """
    key = (zone, cache_key)
    seen = _checked.get(key)
    if seen is not None and seen[0] > time.monotonic():
        return seen[1]
    names = tuple(sorted(ns_names))[:limit]
    addresses: dict[str, str | None] = {}
    for spec in known:
        addresses.setdefault(spec.name, spec.address)
    spare = limit - len({spec.address for spec in known})  # the fan-out bound covers both lookups together
    for name in names:
        if name not in addresses:
            addresses[name] = None if spare > 0 else _NOT_ASKED
            spare -= 1
    servers, parent = await asyncio.gather(
        asyncio.gather(*(_server(n, zone, deadline, port, first_answer, ask_server, addresses.get(n))
                         for n in names)),
        _parent(zone, deadline, port, ask_server, find_zone))
    child_ns = await _apex_ns(zone, servers, deadline, port, ask_server)
    result = Delegation(zone=zone, parent=parent[0], parent_ns=parent[1],
                        child_ns=child_ns or tuple(sorted(ns_names)), servers=tuple(servers),
                        parent_error=parent[2], ns_total=len(ns_names), checked_at=time.time())
    complete = time.monotonic() < deadline and all(s.rcode != "UNKNOWN" for s in servers)
    if complete:  # remember it for the zone's next endpoints and probes
        if len(_checked) >= _CACHE_MAX:
            _checked.clear()
        _checked[key] = (time.monotonic() + RECHECK_SECONDS, result)
    return result


async def _server(name: str, zone: str, deadline: float, port: int, first_answer: FirstAnswer,
                  ask_server: AskServer, address: str | None) -> ServerCheck:
    if address == _NOT_ASKED:
        return ServerCheck(name, None, "NOTASKED")
    if address is None:
        found = await _address(name, first_answer)
        if isinstance(found, ServerCheck):
            return found
        address = found
    return await _soa(name, address, zone, deadline, port, ask_server)


async def _address(name: str, first_answer: FirstAnswer) -> str | ServerCheck:
    """The NS name's first address, or the ServerCheck that says why there is none."""
    target = dns.name.from_text(name)
    reply = await first_answer(target, dns.rdatatype.A)
    if reply is None:
        return ServerCheck(name, None, "UNKNOWN")  # the resolvers did not say in time: no verdict
    cname = reply.get_rrset(reply.answer, target, dns.rdataclass.IN, dns.rdatatype.CNAME)
    if cname is not None:
        return ServerCheck(name, None, "NOADDRESS", problem=f"is a CNAME (to {_text(cname[0].target)}), "
                                                            "which an NS record must never point at")
    rrset = reply and reply.get_rrset(reply.answer, target, dns.rdataclass.IN, dns.rdatatype.A)
    if not rrset:
        reply = await first_answer(target, dns.rdatatype.AAAA)
        rrset = reply and reply.get_rrset(reply.answer, target, dns.rdataclass.IN, dns.rdatatype.AAAA)
    if not rrset:
        return ServerCheck(name, None, "NOADDRESS", problem="has no address")
    return sorted(r.address for r in rrset)[0]


async def _soa(name: str, address: str, zone: str, deadline: float, port: int, ask_server: AskServer
               ) -> ServerCheck:
    remaining = deadline - time.monotonic()
    try:
        if remaining <= 0:
            raise dns.exception.Timeout()
        soa = await ask_server(dns.name.from_text(zone), dns.rdatatype.SOA, address, port, remaining)
    except dns.exception.Timeout:
        if remaining < LAME_AFTER_SECONDS:
            return ServerCheck(name, address, "UNKNOWN")
        return ServerCheck(name, address, "TIMEOUT", problem=f"does not answer within {remaining:.1f} s")
    except _FAILURES as exc:
        return ServerCheck(name, address, "ERROR", problem=f"fails: {_why(exc)}")
    rcode = dns.rcode.to_text(soa.rcode())
    record = soa.get_rrset(soa.answer, dns.name.from_text(zone), dns.rdataclass.IN, dns.rdatatype.SOA)
    aa = bool(soa.flags & dns.flags.AA)
    serial = record[0].serial if record else None
    problem = None
    if rcode != "NOERROR":
        problem = f"answers {rcode} for the zone"
    elif not aa or record is None:
        problem = "answers without authority (no AA) for the zone"
    return ServerCheck(name, address, rcode, authoritative=aa and record is not None, serial=serial,
                       problem=problem)


async def _apex_ns(zone: str, servers: list[ServerCheck], deadline: float, port: int,
                   ask_server: AskServer) -> tuple[str, ...]:
    """The zone's own NS RRset, from the first server that answers for it authoritatively."""
    qname = dns.name.from_text(zone)
    for server in servers:
        remaining = deadline - time.monotonic()
        if not server.authoritative or remaining <= 0:
            continue
        try:
            reply = await ask_server(qname, dns.rdatatype.NS, server.address, port, remaining)
        except _FAILURES:
            continue
        rrset = reply.get_rrset(reply.answer, qname, dns.rdataclass.IN, dns.rdatatype.NS)
        if rrset:
            return tuple(sorted(_text(r.target) for r in rrset))
    return ()


async def _parent(zone: str, deadline: float, port: int, ask_server: AskServer, find_zone: FindZone
                  ) -> tuple[str | None, tuple[str, ...] | None, str | None]:
    """(parent zone, the NS set it delegates with, why it is unknown): the referral, asked with RD=0."""
    qname = dns.name.from_text(zone)
    if len(qname.labels) <= 2:
        return None, None, None  # a top-level zone: its parent is the root, never asked
    parent, specs, _ = await find_zone(_text(qname.parent()))
    if parent is None or not specs:
        return parent, None, "the parent zone's servers could not be found"
    for spec in specs[:3]:
        remaining = min(deadline - time.monotonic(), PARENT_QUERY_SECONDS)
        if remaining <= 0:
            break
        try:
            reply = await ask_server(qname, dns.rdatatype.NS, spec.address, port, remaining)
        except _FAILURES:
            continue
        for section in (reply.authority, reply.answer):
            rrset = reply.get_rrset(section, qname, dns.rdataclass.IN, dns.rdatatype.NS)
            if rrset:
                return parent, tuple(sorted(_text(r.target) for r in rrset)), None
        return parent, None, f"the parent {parent} gave no delegation for {zone} ({dns.rcode.to_text(reply.rcode())})"
    return parent, None, f"no server of the parent zone {parent} answered"


def _why(exc: Exception) -> str:
    """An OSError's own words without the "[Errno N]" prefix; a DNS server, not a resolver."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (text.replace("the resolver's port", "its DNS port")[:120]) or type(exc).__name__
