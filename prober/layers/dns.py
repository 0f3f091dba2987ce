"""DNS layer: ask every resolver, ask the zone's authoritative servers, compare.

An updated authoritative zone does not mean that every client uses the new
answer.  So every recursive resolver's answer is compared with what the
zone's own servers say (RD=0), and with the other resolvers.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from .. import delegation, dnssec, takeover
from ..model import Delegation, DnsResult, DnssecState, Endpoint, Finding, ResolverAnswer, ResolverSpec
from ..hints import hint_for

MAX_CNAME_HOPS = 8
MAX_ADDRESSES_DIALLED = 16  # a hostile zone with 1,000 A records must not fan out 1,000 handshakes
MAX_AUTHORITATIVE = 8  # the zone's servers asked: a resolver's 1,000 glue addresses must not fan out either
ZONE_CACHE_SECONDS = 300.0
AUTHORITATIVE_PORT = 53  # where a zone's NS (and its parent's) are asked; tests point it at a lab server
EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: larger answers come back TC=1 and are asked again over TCP


@dataclass(frozen=True, slots=True)
class _Lookup:
    rcode: str
    addresses: tuple[str, ...] = ()
    cnames: tuple[str, ...] = ()
    ttl: int | None = None
    error: str | None = None
    ad: bool = False
    rrsig: tuple[float, float, str] | None = None  # (expiration, validity, signer) of the earliest RRSIG
    ede: tuple[str, ...] = ()
    cd_rcode: str | None = None  # the CD=1 retry after a SERVFAIL
    failure: str | None = None  # our own validation's words, when the CD=1 retry answered


def _server_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _strip(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class UdpExchange(asyncio.DatagramProtocol):
    """One UDP socket per address family for every query of one probe.

    A new socket and transport per query was the largest CPU cost of the DNS
    layer.  Replies are matched to their query by (server, port, ID) and must
    answer its question; a datagram that matches nothing is dropped, as
    RFC 5452 asks of a resolver, so a spoofed or stray reply cannot end a query.
    Messages are built and parsed by dnspython; TCP after TC=1 is dnspython's.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int, int], tuple[tuple[dns.name.Name, int], asyncio.Future]] = {}
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._sockets: dict[int, socket.socket] = {}
        self._opening = asyncio.Lock()  # concurrent first queries must share one socket, not race to make six

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if len(data) < 12:
            return
        entry = self._pending.get((addr[0], addr[1], int.from_bytes(data[:2], "big")))
        if entry is None or entry[1].done():
            return
        question, future = entry
        try:
            response = dns.message.from_wire(data, keyring=None, request_mac=b"", one_rr_per_rrset=False)
        except (dns.exception.DNSException, ValueError) as exc:
            future.set_exception(dns.exception.DNSException(f"malformed reply: {_describe(exc)}"))
            return
        if not _answers(response, question):
            future.set_exception(dns.exception.DNSException("the reply does not answer the question asked"))
        else:
            future.set_result(response)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error (IP_RECVERR): fail the queries to the server that sent it, at once."""
        for sock in self._sockets.values():
            for addr, err in _icmp_errors(sock):
                for (address, port, _), (_, future) in list(self._pending.items()):
                    if (address, port) == addr[:2] and not future.done():
                        future.set_exception(err)

    def _send(self, transport: asyncio.DatagramTransport, family: int, wire: bytes, addr: tuple) -> None:
        """sendto, but an ICMP error left pending by an earlier datagram (IP_RECVERR reports it on
        the next call) must not cost this datagram: take the error, then send it again."""
        sock = self._sockets.get(family)
        for _ in range(2 if sock is not None else 0):
            try:
                sock.sendto(wire, addr)
                return
            except (BlockingIOError, InterruptedError):
                break  # the transport buffers it
            except OSError as exc:
                self.error_received(exc)
        transport.sendto(wire, addr)

    async def _transport(self, family: int) -> asyncio.DatagramTransport:
        transport = self._transports.get(family)
        if transport is not None:
            return transport
        async with self._opening:
            if family not in self._transports:
                loop = asyncio.get_running_loop()
                sock = _udp_socket(family)
                self._sockets[family] = sock
                self._transports[family], _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
            return self._transports[family]

    async def query(self, question: tuple[dns.name.Name, int], wire: bytes, address: str, port: int,
                    timeout: float) -> dns.message.Message:
        """Send `wire` (a query for `question`, built once and shared) with a fresh ID."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        transport = await self._transport(family)
        query_id = dns.entropy.random_16()
        while (address, port, query_id) in self._pending:
            query_id = dns.entropy.random_16()
        key = (address, port, query_id)
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = (question, future)
        try:
            self._send(transport, family, query_id.to_bytes(2, "big") + wire[2:], (address, port))
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError:
            raise dns.exception.Timeout() from None
        finally:
            del self._pending[key]
        if response.flags & dns.flags.TC:
            query = dns.message.from_wire(query_id.to_bytes(2, "big") + wire[2:])
            response = await _tcp()(query, address, timeout=timeout, port=port)
        return response

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        self._sockets.clear()


def _tcp() -> Callable[..., Awaitable[dns.message.Message]]:
    """dnspython's TCP query, imported after the first TC=1 only: its transports cost ~80 ms of every start."""
    import dns.asyncquery
    return dns.asyncquery.tcp


# Linux reports ICMP errors on an unconnected UDP socket only with IP_RECVERR: then a closed
# resolver port ("port unreachable") ends its query at once instead of running into the timeout.
_RECVERR = {socket.AF_INET: (socket.IPPROTO_IP, getattr(socket, "IP_RECVERR", 11)),
            socket.AF_INET6: (socket.IPPROTO_IPV6, getattr(socket, "IPV6_RECVERR", 25))}
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_ICMP_TEXT = {errno.ECONNREFUSED: "the resolver's port is closed (ICMP port unreachable)",
              errno.EHOSTUNREACH: "host unreachable (ICMP)", errno.ENETUNREACH: "network unreachable (ICMP)"}


def _udp_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(*_RECVERR[family], 1)
    except OSError:
        pass  # not Linux: such queries end at their timeout, as before
    sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
    return sock


def _icmp_errors(sock: socket.socket) -> list[tuple[tuple, OSError]]:
    """Drain the socket's error queue: (the destination the failed datagram went to, the error)."""
    out = []
    for _ in range(64):
        try:
            _, ancillary, _, addr = sock.recvmsg(512, 512, _MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError, OSError):
            break
        code = next((int.from_bytes(data[:4], sys.byteorder) for _, _, data in ancillary if len(data) >= 4),
                    errno.ECONNREFUSED)  # struct sock_extended_err starts with ee_errno
        out.append((addr, ConnectionRefusedError(code, _ICMP_TEXT.get(code, os.strerror(code)))
                    if code == errno.ECONNREFUSED else OSError(code, _ICMP_TEXT.get(code, os.strerror(code)))))
    return out


async def _query(udp: UdpExchange, qname: dns.name.Name, rdtype: int, address: str, port: int,
                 timeout: float, recursion: bool, want_dnssec: bool = True, cd: bool = False
                 ) -> dns.message.Message:
    """Every query carries EDNS (payload EDNS_PAYLOAD), so Extended DNS Errors can come back."""
    return await udp.query((qname, rdtype), _query_wire(qname, rdtype, recursion, want_dnssec, cd),
                           address, port, timeout)


@functools.lru_cache(maxsize=64)
def _query_frame(rdtype: int, recursion: bool, want_dnssec: bool, cd: bool) -> tuple[bytes, bytes]:
    """A query's wire form around its name, built by dnspython once per type and flags: the header,
    and what follows the question name (type, class and the EDNS OPT record, whose owner is the root)."""
    q = dns.message.make_query(dns.name.root, rdtype, use_edns=0, payload=EDNS_PAYLOAD, want_dnssec=want_dnssec)
    if not recursion:
        q.flags &= ~dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    wire = q.to_wire()
    return wire[:12], wire[13:]  # the root name is the one byte 0 at offset 12


def _query_wire(qname: dns.name.Name, rdtype: int, recursion: bool, want_dnssec: bool, cd: bool) -> bytes:
    """A query's wire form (about 60 bytes): only the ID changes per send.

    Building an EDNS query message and rendering it cost more than the rest of sending it; a cache
    per name thrashed at 10,000 endpoints, so the frame is cached per type and flags and the name,
    uncompressed as in a one-question query, goes between.
    """
    head, tail = _query_frame(rdtype, recursion, want_dnssec, cd)
    return head + qname.to_wire() + tail


_NO_QUESTION_OK = frozenset((dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED))


def _answers(response: dns.message.Message, question: tuple[dns.name.Name, int]) -> bool:
    """Is `response` an answer to our one question (what Message.is_response checks, the ID already matched)?"""
    if not response.flags & dns.flags.QR or dns.opcode.from_flags(response.flags) != dns.opcode.QUERY:
        return False
    if not response.question:
        return response.rcode() in _NO_QUESTION_OK
    return (len(response.question) == 1 and response.question[0].name == question[0]
            and response.question[0].rdtype == question[1] and response.question[0].rdclass == dns.rdataclass.IN)


def _walk_answer(response: dns.message.Message, qname: dns.name.Name, rdtype: int
                 ) -> tuple[dns.name.Name, list[str], list[str], int | None]:
    """Follow the CNAME chain inside one response; return (final name, cnames, addresses, min ttl)."""
    index = {(rrset.name, rrset.rdtype): rrset for rrset in response.answer
             if rrset.rdclass == dns.rdataclass.IN}  # one pass, instead of a find_rrset per hop
    name, cnames, addresses, ttls = qname, [], [], []
    seen = {qname}
    for _ in range(MAX_CNAME_HOPS + 1):
        rrset = index.get((name, rdtype))
        if rrset is not None:
            addresses.extend(r.address for r in rrset)
            ttls.append(rrset.ttl)
            break
        cname = index.get((name, dns.rdatatype.CNAME))
        if cname is None:
            break
        ttls.append(cname.ttl)
        name = cname[0].target
        if name in seen:
            raise dns.exception.DNSException(f"CNAME loop at {_strip(name)}")
        seen.add(name)
        cnames.append(_strip(name))
    return name, cnames, addresses, (min(ttls) if ttls else None)


@functools.lru_cache(maxsize=1024)  # one probe asks for its name about eight times; 1,024 covers every probe in flight
def _qname(hostname: str) -> dns.name.Name:
    return dns.name.from_text(hostname)


async def _lookup_type(udp: UdpExchange, hostname: str, rdtype: int, address: str, port: int,
                       deadline: float, recursion: bool, want_dnssec: bool = True) -> _Lookup:
    qname = _qname(hostname)
    cnames: list[str] = []
    ttls: list[int] = []
    ad, rrsig, ede = True, None, ()
    try:
        for _ in range(MAX_CNAME_HOPS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise dns.exception.Timeout()
            response = await _query(udp, qname, rdtype, address, port, remaining, recursion, want_dnssec)
            rcode = dns.rcode.to_text(response.rcode())
            ad = ad and bool(response.flags & dns.flags.AD)
            ede = ede or dnssec.extended_errors(response)
            rrsig = _earlier(rrsig, dnssec.earliest_rrsig(response))
            if rcode == "SERVFAIL" and recursion and want_dnssec:
                return await _checking_disabled(udp, qname, rdtype, address, port, deadline, tuple(cnames), ede)
            final, hop_cnames, addresses, ttl = _walk_answer(response, qname, rdtype)
            if any(c in cnames for c in hop_cnames) or _strip(qname) in hop_cnames:
                raise dns.exception.DNSException(f"CNAME loop at {hop_cnames[-1]}")
            cnames.extend(hop_cnames)  # kept at NXDOMAIN too (RFC 6604): the chain shows where it dangles
            if rcode != "NOERROR":
                return _Lookup(rcode, (), tuple(cnames), None, ad=ad, rrsig=rrsig, ede=ede)
            if ttl is not None:
                ttls.append(ttl)
            if addresses or not hop_cnames or not recursion:
                return _Lookup("NOERROR", tuple(sorted(addresses)), tuple(cnames),
                               min(ttls) if ttls else None, ad=ad, rrsig=rrsig, ede=ede)
            qname = final  # the resolver gave a CNAME without its target: chase it
        raise dns.exception.DNSException(f"more than {MAX_CNAME_HOPS} CNAME hops")
    except dns.exception.Timeout:
        return _Lookup("TIMEOUT", error="no answer before the timeout")
    except (dns.exception.DNSException, OSError, ValueError, EOFError) as exc:
        return _Lookup("ERROR", error=_describe(exc))


def _earlier(a: tuple | None, b: tuple | None) -> tuple | None:
    return b if a is None or (b is not None and b[0] < a[0]) else a


async def _checking_disabled(udp: UdpExchange, qname: dns.name.Name, rdtype: int, address: str, port: int,
                             deadline: float, cnames: tuple[str, ...], ede: tuple[str, ...]) -> _Lookup:
    """After a SERVFAIL, the same question with CD=1: an answer now means the zone's DNSSEC is bogus."""
    async def fetch(name: dns.name.Name, kind: int) -> dns.message.Message | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return await _query(udp, name, kind, address, port, remaining, True, True, cd=True)
        except (dns.exception.DNSException, OSError, ValueError, EOFError):
            return None

    reply = await fetch(qname, rdtype)
    cd_rcode = dns.rcode.to_text(reply.rcode()) if reply is not None else "TIMEOUT"
    failure = None
    if cd_rcode in ("NOERROR", "NXDOMAIN"):
        failure = await dnssec.explain(fetch, reply)
        cnames = cnames + tuple(_walk_answer(reply, qname, rdtype)[1])
    return _Lookup("SERVFAIL", (), cnames, None, ede=ede, cd_rcode=cd_rcode, failure=failure,
                   rrsig=dnssec.earliest_rrsig(reply) if reply is not None else None,
                   error="SERVFAIL" + (f" ({', '.join(ede)})" if ede else ""))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror in _ICMP_TEXT.values():
        return exc.strerror
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return text.splitlines()[0][:200]


def _merge(a: _Lookup, aaaa: _Lookup) -> _Lookup:
    """One answer per resolver out of its A and AAAA lookups."""
    sec = {"ad": a.ad and aaaa.ad, "rrsig": _earlier(a.rrsig, aaaa.rrsig), "ede": a.ede or aaaa.ede,
           "cd_rcode": a.cd_rcode or aaaa.cd_rcode, "failure": a.failure or aaaa.failure}
    for failed in (a, aaaa):
        if failed.rcode not in ("NOERROR", "NXDOMAIN"):
            return _Lookup(failed.rcode, a.addresses + aaaa.addresses, a.cnames or aaaa.cnames,
                           None, failed.error or f"{failed.rcode} for {'A' if failed is a else 'AAAA'}", **sec)
    if "NXDOMAIN" in (a.rcode, aaaa.rcode):
        return _Lookup("NXDOMAIN", (), a.cnames or aaaa.cnames, **sec)
    ttls = [t for t in (a.ttl, aaaa.ttl) if t is not None]
    return _Lookup("NOERROR", tuple(sorted(a.addresses + aaaa.addresses)), a.cnames or aaaa.cnames,
                   min(ttls) if ttls else None, **sec)


def _dnssec_state(merged: _Lookup) -> DnssecState:
    expires, validity, signer = merged.rrsig or (None, None, None)
    bogus = merged.rcode == "SERVFAIL" and merged.cd_rcode in ("NOERROR", "NXDOMAIN")
    return DnssecState(validated=merged.ad and merged.rcode in ("NOERROR", "NXDOMAIN"),
                       signed=merged.rrsig is not None, rrsig_expires=expires, rrsig_validity=validity,
                       rrsig_signer=signer, ede=merged.ede, bogus=bogus, checking_disabled_rcode=merged.cd_rcode,
                       failure=merged.failure)


T = TypeVar("T")


async def _together(*jobs: Awaitable[T]) -> list[T]:
    """asyncio.gather for coroutines that never raise, with the first run in the caller's task: one
    task fewer per call (a task costs ~11 µs, and a probe made 14 here).  All start before any is
    awaited, so the queries still go out together."""
    rest = [asyncio.ensure_future(job) for job in jobs[1:]]
    try:
        first = await jobs[0]
    except BaseException:  # cancelled (the probe's deadline): take the others down with it
        for task in rest:
            task.cancel()
        raise
    return [first, *[await task for task in rest]]


async def ask(udp: UdpExchange, hostname: str, spec: ResolverSpec, deadline: float, *, recursion: bool = True,
              authoritative: bool = False, want_dnssec: bool = True) -> ResolverAnswer:
    """Ask one server for A and AAAA; never raises."""
    started = time.monotonic()
    a, aaaa = await _together(
        _lookup_type(udp, hostname, dns.rdatatype.A, spec.address, spec.port, deadline, recursion, want_dnssec),
        _lookup_type(udp, hostname, dns.rdatatype.AAAA, spec.address, spec.port, deadline, recursion,
                     want_dnssec))
    merged = _merge(a, aaaa)
    return ResolverAnswer(
        resolver=spec.name, server=_server_text(spec.address, spec.port), view=spec.view,
        rcode=merged.rcode, addresses=merged.addresses, cnames=merged.cnames, ttl=merged.ttl,
        latency_seconds=time.monotonic() - started, error=merged.error, authoritative=authoritative,
        dnssec=_dnssec_state(merged) if want_dnssec else None)


# ---------------------------------------------------------------- authoritative
_zone_cache: dict[tuple[str, str], tuple[float, str, tuple[ResolverSpec, ...], tuple[str, ...]]] = {}


def cache_clear() -> None:
    """Forget every zone's servers (they are looked up again on the next probe)."""
    _zone_cache.clear()


_ZONE_CACHE_MAX = 65536


async def _first_answer(udp: UdpExchange, qname: dns.name.Name, rdtype: int, resolvers: tuple[ResolverSpec, ...],
                        deadline: float) -> dns.message.Message | None:
    for spec in resolvers:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return await _query(udp, qname, rdtype, spec.address, spec.port, remaining, True)
        except (dns.exception.DNSException, OSError, ValueError, EOFError):
            continue
    return None


async def find_authoritative(udp: UdpExchange, hostname: str, resolvers: tuple[ResolverSpec, ...], deadline: float
                             ) -> tuple[str | None, tuple[ResolverSpec, ...], tuple[str, ...]]:
    """The zone that holds hostname, the addresses of its NS, and the NS names, through the resolvers."""
    key = (hostname, ",".join(r.name for r in resolvers))
    cached = _zone_cache.get(key)
    if cached and cached[0] > time.monotonic():
        return cached[1], cached[2], cached[3]
    name = dns.name.from_text(hostname)
    while True:
        response = await _first_answer(udp, name, dns.rdatatype.NS, resolvers, deadline)
        if response is None:
            return None, (), ()
        ns = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.NS)
        if ns is not None:
            break
        if name == dns.name.root or len(name.labels) <= 2:
            return None, (), ()
        name = name.parent()
    servers: list[ResolverSpec] = []
    for target in sorted(r.target for r in ns)[:4]:
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            reply = await _first_answer(udp, target, rdtype, resolvers, deadline)
            rrset = reply and reply.get_rrset(reply.answer, target, dns.rdataclass.IN, rdtype)
            for r in rrset or ():
                servers.append(ResolverSpec(name=_strip(target), address=r.address, port=AUTHORITATIVE_PORT,
                                            view="authoritative"))
    zone = _strip(name)
    servers = servers[:MAX_AUTHORITATIVE]
    names = tuple(_strip(r.target) for r in ns)
    if len(_zone_cache) >= _ZONE_CACHE_MAX:
        _zone_cache.clear()
    _zone_cache[key] = (time.monotonic() + min(ns.ttl, ZONE_CACHE_SECONDS), zone, tuple(servers), names)
    return zone, tuple(servers), names


def parse_authoritative(value: str) -> ResolverSpec:
    """'ADDR', 'ADDR:PORT' or '[V6]:PORT' (already validated by the config)."""
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
        return ResolverSpec(name=value, address=host, port=int(port or 53), view="authoritative")
    if value.count(":") == 1:
        host, port = value.split(":")
        return ResolverSpec(name=value, address=host, port=int(port), view="authoritative")
    return ResolverSpec(name=value, address=value, view="authoritative")


# ------------------------------------------------------------------ comparison
def _address_set(answer: ResolverAnswer) -> tuple[str, ...]:
    """An answer's addresses as the set they are: record order and repeats are no difference."""
    return tuple(sorted(set(answer.addresses)))


def _answer_key(answer: ResolverAnswer) -> tuple:
    return (_address_set(answer), answer.cnames[:1]) if answer.addresses else (answer.cnames[:1],)


def agrees(answer: ResolverAnswer, authoritative: tuple[ResolverAnswer, ...]) -> bool | None:
    """A recursive answer agrees when it equals one authoritative server's answer.

    An authoritative server may only hold the first CNAME (the target lives in
    another zone): then the first CNAME is what is compared.
    """
    usable = [a for a in authoritative if a.rcode == "NOERROR" and (a.addresses or a.cnames)]
    if not usable or answer.rcode != "NOERROR":
        return None
    for auth in usable:
        if auth.addresses and _address_set(answer) == _address_set(auth):
            return True
        if not auth.addresses and answer.cnames[:1] == auth.cnames[:1]:
            return True
    return False


def newest_answers(auth: tuple[ResolverAnswer, ...], checked: Delegation | None) -> tuple[ResolverAnswer, ...]:
    """When the zone's servers answer different serials, only the newest serial's servers are the truth."""
    serials = {s.address: s.serial for s in (checked.servers if checked else ()) if s.serial is not None}
    if len(set(serials.values())) < 2:
        return auth
    top = max(serials.values())
    newest = tuple(a for a in auth if serials.get(a.server.rsplit(":", 1)[0].strip("[]")) == top)
    return newest or auth


def is_global(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


async def _authoritative(udp: UdpExchange, endpoint: Endpoint, resolvers: tuple[ResolverSpec, ...],
                         deadline: float) -> tuple[str | None, tuple[ResolverAnswer, ...], Delegation | None]:
    zone, specs, names = None, (), ()
    if endpoint.authoritative == "auto":
        zone, specs, names = await find_authoritative(udp, endpoint.hostname, resolvers, deadline)
    elif endpoint.authoritative != "off":
        specs = (parse_authoritative(endpoint.authoritative),)
    want = endpoint.dns.dnssec != "off"
    answers = await _together(*(ask(udp, endpoint.hostname, s, deadline, recursion=False, authoritative=True,
                                    want_dnssec=want) for s in specs), _delegation(udp, zone, names, specs,
                                                                                   resolvers, deadline))
    return zone, tuple(answers[:-1]), answers[-1]


async def _delegation(udp: UdpExchange, zone: str | None, names: tuple[str, ...], known: tuple[ResolverSpec, ...],
                      resolvers: tuple[ResolverSpec, ...], deadline: float) -> Delegation | None:
    """With authoritative: auto, the zone's delegation and servers, on the zone's cadence (delegation.py)."""
    if zone is None or not names:
        return None

    async def first_answer(qname: dns.name.Name, rdtype: int) -> dns.message.Message | None:
        return await _first_answer(udp, qname, rdtype, resolvers, deadline)

    async def ask_server(qname: dns.name.Name, rdtype: int, address: str, port: int, timeout: float
                         ) -> dns.message.Message:
        return await _query(udp, qname, rdtype, address, port, timeout, False, False)

    async def find_zone(name: str) -> tuple[str | None, tuple[ResolverSpec, ...], tuple[str, ...]]:
        return await find_authoritative(udp, name, resolvers, deadline)

    return await delegation.check(zone, names, known, ",".join(r.name for r in resolvers), deadline,
                                  port=AUTHORITATIVE_PORT, limit=MAX_AUTHORITATIVE, first_answer=first_answer,
                                  ask_server=ask_server, find_zone=find_zone)


async def probe_dns(endpoint: Endpoint, resolvers: tuple[ResolverSpec, ...], deadline: float
                    ) -> tuple[DnsResult, list[Finding]]:
    """The DNS layer: never raises; a failing resolver is a finding, not an abort."""
    started = time.monotonic()
    udp = UdpExchange()
    want = endpoint.dns.dnssec != "off"
    try:
        *answers, (zone, auth, checked) = await _together(
            *(ask(udp, endpoint.hostname, r, deadline, want_dnssec=want) for r in resolvers),
            _authoritative(udp, endpoint, resolvers, deadline))
    finally:
        udp.close()
    newest = newest_answers(auth, checked)
    answers = tuple(replace(a, agrees_with_authoritative=agrees(a, newest)) for a in answers)
    result = DnsResult(resolvers=answers, authoritative=auth, zone=zone,
                       addresses=_addresses_to_dial(endpoint, answers, auth),
                       duration_seconds=time.monotonic() - started, delegation=checked)
    return result, judge(endpoint, result)


def _relevant(endpoint: Endpoint, answers: tuple[ResolverAnswer, ...]) -> tuple[ResolverAnswer, ...]:
    """For a private endpoint, public resolvers are supposed to know nothing."""
    if endpoint.visibility == "private":
        return tuple(a for a in answers if a.view != "public")
    return answers


def _addresses_to_dial(endpoint: Endpoint, answers, auth) -> tuple[str, ...]:
    if endpoint.connect_to:
        return (endpoint.connect_to,)
    seen: dict[str, None] = {}
    for answer in (*_relevant(endpoint, answers), *auth):
        for address in answer.addresses:
            seen.setdefault(address)
    return tuple(seen)[:MAX_ADDRESSES_DIALLED]


# --------------------------------------------------------------------- findings
def judge(endpoint: Endpoint, result: DnsResult) -> list[Finding]:
    findings: list[Finding] = []
    answers = result.resolvers
    relevant = _relevant(endpoint, answers)
    findings += _resolver_errors(endpoint, answers, relevant)
    findings += _nxdomain(endpoint, relevant)
    findings += _dnssec_findings(endpoint, relevant)
    findings += _delegation_findings(endpoint, result.delegation)
    findings += _inconsistent(endpoint, relevant, result.delegation)
    findings += _stale(endpoint, relevant)
    findings += _expectations(endpoint, relevant, result.authoritative)
    findings += _exposure(endpoint, answers, result.authoritative)
    # Hints name the real resolver and authoritative addresses and the zone, so they run as pasted.
    return [replace(f, hint=hint_for(f.code, endpoint, f.address, result)) for f in findings]


def _finding(endpoint: Endpoint, code: str, severity: str, message: str, address: str | None = None
             ) -> Finding:
    return Finding(code=code, severity=severity, layer="dns", message=message, address=address)


def _resolver_errors(endpoint, answers, relevant) -> list[Finding]:
    failed = [a for a in answers if not a.answered and not _bogus(a)]  # bogus DNSSEC is its own finding
    if not failed:
        return []
    severity = "warning" if any(a.answered for a in relevant) else "critical"
    return [_finding(endpoint, "dns.resolver_error", severity,
                     f"resolver {_who(a)} failed for {endpoint.hostname}: "
                     f"{a.rcode}{': ' + a.error if a.error and a.error != a.rcode else ''}", a.resolver)
            for a in failed]


def _who(a: ResolverAnswer) -> str:
    return a.resolver if a.resolver == a.server else f"{a.resolver} ({a.server})"


def _bogus(a: ResolverAnswer) -> bool:
    return a.dnssec is not None and a.dnssec.bogus


def _nxdomain(endpoint, relevant) -> list[Finding]:
    out = []
    nx = [a for a in relevant if a.rcode == "NXDOMAIN" and not a.cnames]
    if nx:
        out.append(_finding(endpoint, "dns.nxdomain", "critical",
                            f"{endpoint.hostname} does not exist (NXDOMAIN) at {', '.join(a.resolver for a in nx)}"))
    dangling = [a for a in relevant if a.rcode == "NXDOMAIN" and a.cnames]
    if dangling:
        chain = " -> ".join((endpoint.hostname, *dangling[0].cnames))
        target = dangling[0].cnames[-1]
        provider = takeover.provider_for(target)
        risk = (f"; {target} is in {provider}'s namespace, where whoever creates that resource name gets "
                f"this hostname's traffic and can get certificates for it (subdomain takeover)" if provider
                else "; whoever can create the target name gets this hostname's traffic")
        out.append(_finding(endpoint, "dns.dangling_cname", "critical",
                            f"{endpoint.hostname} is a CNAME whose target does not exist (NXDOMAIN at "
                            f"{target}) at {', '.join(a.resolver for a in dangling)}: {chain}{risk}"))
    return out


def _dnssec_findings(endpoint, relevant) -> list[Finding]:
    out = []
    bogus = [a for a in relevant if _bogus(a)]
    if bogus:
        first = bogus[0].dnssec
        why = "; ".join(x for x in (first.failure, ", ".join(first.ede)) if x) or "no reason given"
        out.append(_finding(endpoint, "dns.dnssec_bogus", "critical",
                            f"DNSSEC validation fails for {endpoint.hostname}: validating resolvers "
                            f"{', '.join(a.resolver for a in bogus)} answer SERVFAIL, the same query with "
                            f"checking disabled answers {first.checking_disabled_rcode} ({why}). Clients behind "
                            "validating resolvers cannot resolve the name, and CAs must refuse to issue or renew "
                            "its certificates"))
    now = time.time()
    signed = [a for a in relevant if a.dnssec and not a.dnssec.bogus and a.answered]
    expiring = [a for a in signed if dnssec.is_expiring(a.dnssec, endpoint.dns.rrsig_min_hours, now)]
    if expiring:
        state = min((a.dnssec for a in expiring), key=lambda d: d.rrsig_expires)
        hours = (state.rrsig_expires - now) / 3600
        left = (f"in {hours:.1f} h" if hours >= 0 else
                f"{-hours:.1f} h ago, still accepted within the resolvers' clock-skew allowance")
        out.append(_finding(endpoint, "dns.rrsig_expiring", "warning",
                            f"the RRSIG over {endpoint.hostname} (signer {state.rrsig_signer}) expires at "
                            f"{dnssec.when(state.rrsig_expires)}, {left}, of a "
                            f"{state.rrsig_validity / 86400:.1f}-day validity: has re-signing stopped? "
                            "Once it expires, validating resolvers answer SERVFAIL", expiring[0].resolver))
    if endpoint.dns.dnssec == "required":
        unsigned = [a for a in signed if not a.dnssec.signed and not a.dnssec.validated]
        if unsigned:
            out.append(_finding(endpoint, "dns.dnssec_missing", "warning",
                                f"dns.dnssec is required, but the answer for {endpoint.hostname} at "
                                f"{', '.join(a.resolver for a in unsigned)} is unsigned (no RRSIG, AD not set)"))
    return out


def _delegation_findings(endpoint, checked: Delegation | None) -> list[Finding]:
    if checked is None:
        return []
    out = []
    zone = checked.zone
    if checked.parent_ns is not None and set(checked.parent_ns) != set(checked.child_ns):
        only_parent = sorted(set(checked.parent_ns) - set(checked.child_ns))
        only_child = sorted(set(checked.child_ns) - set(checked.parent_ns))
        parts = [f"only the parent lists {', '.join(only_parent)}" if only_parent else "",
                 f"only the zone lists {', '.join(only_child)}" if only_child else ""]
        out.append(_finding(endpoint, "dns.delegation_mismatch", "warning",
                            f"the delegation of {zone} in {checked.parent} differs from the zone's own NS set: "
                            f"{'; '.join(p for p in parts if p)}"))
    for server in checked.servers:
        if server.problem:
            where = f"{server.name} ({server.address})" if server.address else server.name
            out.append(_finding(endpoint, "dns.lame_delegation", "warning",
                                f"name server {where} of {zone} is lame: it {server.problem}", server.name))
    drift = _drift(checked)
    if drift:
        out.append(_finding(endpoint, "dns.serial_drift", "warning", drift))
    return out


def _drift(checked: Delegation) -> str | None:
    serials = {s.name: s.serial for s in checked.servers if s.serial is not None and s.authoritative}
    if len(set(serials.values())) < 2:
        return None
    top = max(serials.values())
    behind = sorted(n for n, v in serials.items() if v != top)
    listing = ", ".join(f"{n} {v}" for n, v in sorted(serials.items()))
    return (f"the servers of {checked.zone} answer different SOA serials ({listing}): "
            f"{', '.join(behind)} {'is' if len(behind) == 1 else 'are'} behind serial {top} and "
            f"{'its' if len(behind) == 1 else 'their'} answers differ from the others' "
            "(a secondary that stopped transferring?)")


def _inconsistent(endpoint, relevant, checked: Delegation | None = None) -> list[Finding]:
    answered = [a for a in relevant if a.rcode == "NOERROR"]
    groups: dict[tuple, list[ResolverAnswer]] = {}
    for a in answered:
        groups.setdefault(_answer_key(a), []).append(a)
    if len(groups) < 2:
        return []
    parts = "; ".join(f"{', '.join(a.resolver for a in group)} -> {_show(key)}" for key, group in groups.items())
    return [_finding(endpoint, "dns.inconsistent", "warning",
                     f"resolvers disagree on {endpoint.hostname} ({_cause(groups, checked)}): {parts}")]


def _cause(groups: dict[tuple, list[ResolverAnswer]], checked: Delegation | None) -> str:
    """Name the disagreement after what was found, not after the resolvers' labels."""
    if checked is not None and _drift(checked):
        return "stale secondary: the zone's own servers answer different serials"
    if any(a.agrees_with_authoritative is False for group in groups.values() for a in group):
        return "propagation: a resolver still serves an answer the authoritative servers no longer give"
    views = [{a.view for a in group} for group in groups.values()]
    if all(len(v) == 1 for v in views) and len(set().union(*views)) > 1:
        return "split-horizon: the public and internal views differ"
    return "resolvers differ, and the authoritative servers were not asked or did not settle it"


def _show(key: tuple) -> str:
    addresses = key[0] if len(key) == 2 else ()
    cname = key[-1]
    text = " ".join(addresses) if addresses else "no address"
    return f"{text} (via {cname[0]})" if cname else text


def _stale(endpoint, answers) -> list[Finding]:
    out = []
    for a in answers:
        if a.agrees_with_authoritative is False:
            out.append(_finding(
                endpoint, "dns.stale_resolver", "warning",
                f"resolver {a.resolver} still answers {' '.join(a.addresses) or a.cnames[:1]} for "
                f"{endpoint.hostname}, which differs from the authoritative answer"
                f"{' (TTL ' + str(a.ttl) + 's left)' if a.ttl is not None else ''}", a.resolver))
    return out


def _expectations(endpoint, relevant, auth) -> list[Finding]:
    out = []
    want = endpoint.dns
    if want.expect_addresses:
        allowed = {str(ipaddress.ip_address(x)) for x in want.expect_addresses}
        for a in relevant:
            extra = [x for x in a.addresses if str(ipaddress.ip_address(x)) not in allowed]
            if extra:
                out.append(_finding(endpoint, "dns.unexpected_address", "critical",
                                    f"{a.resolver} answers {' '.join(extra)} for {endpoint.hostname}, "
                                    f"outside the expected {' '.join(want.expect_addresses)}", a.resolver))
    if want.expect_cname:
        for a in relevant:
            if a.rcode == "NOERROR" and a.cnames[:1] != (want.expect_cname,):
                got = a.cnames[0] if a.cnames else "no CNAME"
                out.append(_finding(endpoint, "dns.unexpected_cname", "critical",
                                    f"{a.resolver} answers {got} for {endpoint.hostname}, "
                                    f"expected CNAME {want.expect_cname}", a.resolver))
    if want.max_ttl is not None:
        source = [a for a in auth if a.rcode == "NOERROR" and a.ttl is not None] or relevant
        for a in source:
            if a.ttl is not None and a.ttl > want.max_ttl:
                out.append(_finding(endpoint, "dns.ttl_above_max", "warning",
                                    f"TTL {a.ttl}s at {a.resolver} for {endpoint.hostname} is above "
                                    f"max_ttl {want.max_ttl}s: a wrong answer would survive that long",
                                    a.resolver))
    return out


def _exposure(endpoint, answers, auth) -> list[Finding]:
    out = []
    if endpoint.visibility == "public":
        public = [a for a in answers if a.view == "public"] + list(auth)
        for a in public or answers:
            private = [x for x in a.addresses if not is_global(x)]
            if private:
                out.append(_finding(endpoint, "dns.private_address", "critical",
                                    f"public endpoint {endpoint.hostname} resolves to non-global "
                                    f"{' '.join(private)} at {a.resolver}", a.resolver))
    elif endpoint.visibility == "private":
        for a in answers:
            if a.view == "public" and a.rcode == "NOERROR" and a.addresses:
                out.append(_finding(endpoint, "dns.publicly_resolvable", "critical",
                                    f"private endpoint {endpoint.hostname} is answered by public "
                                    f"resolver {a.resolver}: {' '.join(a.addresses)}", a.resolver))
    return out
