"""DNS layer: ask every resolver, ask the zone's authoritative servers, compare.

An updated authoritative zone does not mean that every client uses the new
answer.  So every recursive resolver's answer is compared with what the
zone's own servers say (RD=0), and with the other resolvers.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import sys
import time
from dataclasses import dataclass, replace

import dns.asyncquery
import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from ..model import DnsResult, Endpoint, Finding, ResolverAnswer, ResolverSpec
from ..hints import hint_for

MAX_CNAME_HOPS = 8
MAX_ADDRESSES_DIALLED = 16  # a hostile zone with 1,000 A records must not fan out 1,000 handshakes
MAX_AUTHORITATIVE = 8  # the zone's servers asked: a resolver's 1,000 glue addresses must not fan out either
ZONE_CACHE_SECONDS = 300.0
AUTHORITATIVE_PORT = 53  # where a zone's NS are asked; tests point it at a lab server


@dataclass(frozen=True, slots=True)
class _Lookup:
    rcode: str
    addresses: tuple[str, ...] = ()
    cnames: tuple[str, ...] = ()
    ttl: int | None = None
    error: str | None = None


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
        self._pending: dict[tuple[str, int, int], tuple[dns.message.Message, asyncio.Future]] = {}
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._sockets: dict[int, socket.socket] = {}
        self._opening = asyncio.Lock()  # concurrent first queries must share one socket, not race to make six

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if len(data) < 12:
            return
        entry = self._pending.get((addr[0], addr[1], int.from_bytes(data[:2], "big")))
        if entry is None or entry[1].done():
            return
        query, future = entry
        try:
            response = dns.message.from_wire(data, keyring=None, request_mac=b"", one_rr_per_rrset=False)
        except (dns.exception.DNSException, ValueError) as exc:
            future.set_exception(dns.exception.DNSException(f"malformed reply: {_describe(exc)}"))
            return
        if not query.is_response(response):
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

    async def query(self, query: dns.message.Message, address: str, port: int, timeout: float
                    ) -> dns.message.Message:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        transport = await self._transport(family)
        while (address, port, query.id) in self._pending:
            query.id = dns.entropy.random_16()
        key = (address, port, query.id)
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = (query, future)
        try:
            self._send(transport, family, query.to_wire(), (address, port))
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError:
            raise dns.exception.Timeout() from None
        finally:
            del self._pending[key]
        if response.flags & dns.flags.TC:
            response = await dns.asyncquery.tcp(query, address, timeout=timeout, port=port)
        return response

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        self._sockets.clear()


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
                 timeout: float, recursion: bool) -> dns.message.Message:
    q = dns.message.make_query(qname, rdtype)
    if not recursion:
        q.flags &= ~dns.flags.RD
    return await udp.query(q, address, port, timeout)


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


async def _lookup_type(udp: UdpExchange, hostname: str, rdtype: int, address: str, port: int,
                       deadline: float, recursion: bool) -> _Lookup:
    qname = dns.name.from_text(hostname)
    cnames: list[str] = []
    ttls: list[int] = []
    try:
        for _ in range(MAX_CNAME_HOPS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise dns.exception.Timeout()
            response = await _query(udp, qname, rdtype, address, port, remaining, recursion)
            rcode = dns.rcode.to_text(response.rcode())
            if rcode != "NOERROR":
                return _Lookup(rcode, (), tuple(cnames), None)
            final, hop_cnames, addresses, ttl = _walk_answer(response, qname, rdtype)
            if ttl is not None:
                ttls.append(ttl)
            if any(c in cnames for c in hop_cnames) or _strip(qname) in hop_cnames:
                raise dns.exception.DNSException(f"CNAME loop at {hop_cnames[-1]}")
            cnames.extend(hop_cnames)
            if addresses or not hop_cnames or not recursion:
                return _Lookup("NOERROR", tuple(sorted(addresses)), tuple(cnames),
                               min(ttls) if ttls else None)
            qname = final  # the resolver gave a CNAME without its target: chase it
        raise dns.exception.DNSException(f"more than {MAX_CNAME_HOPS} CNAME hops")
    except dns.exception.Timeout:
        return _Lookup("TIMEOUT", error="no answer before the timeout")
    except (dns.exception.DNSException, OSError, ValueError, EOFError) as exc:
        return _Lookup("ERROR", error=_describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror in _ICMP_TEXT.values():
        return exc.strerror
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return text.splitlines()[0][:200]


def _merge(a: _Lookup, aaaa: _Lookup) -> _Lookup:
    """One answer per resolver out of its A and AAAA lookups."""
    for failed in (a, aaaa):
        if failed.rcode not in ("NOERROR", "NXDOMAIN"):
            return _Lookup(failed.rcode, a.addresses + aaaa.addresses, a.cnames or aaaa.cnames,
                           None, failed.error or f"{failed.rcode} for {'A' if failed is a else 'AAAA'}")
    if "NXDOMAIN" in (a.rcode, aaaa.rcode):
        return _Lookup("NXDOMAIN", (), a.cnames or aaaa.cnames)
    ttls = [t for t in (a.ttl, aaaa.ttl) if t is not None]
    return _Lookup("NOERROR", tuple(sorted(a.addresses + aaaa.addresses)), a.cnames or aaaa.cnames,
                   min(ttls) if ttls else None)


async def ask(udp: UdpExchange, hostname: str, spec: ResolverSpec, deadline: float, *, recursion: bool = True,
              authoritative: bool = False) -> ResolverAnswer:
    """Ask one server for A and AAAA; never raises."""
    started = time.monotonic()
    a, aaaa = await asyncio.gather(
        _lookup_type(udp, hostname, dns.rdatatype.A, spec.address, spec.port, deadline, recursion),
        _lookup_type(udp, hostname, dns.rdatatype.AAAA, spec.address, spec.port, deadline, recursion))
    merged = _merge(a, aaaa)
    return ResolverAnswer(
        resolver=spec.name, server=_server_text(spec.address, spec.port), view=spec.view,
        rcode=merged.rcode, addresses=merged.addresses, cnames=merged.cnames, ttl=merged.ttl,
        latency_seconds=time.monotonic() - started, error=merged.error, authoritative=authoritative)


# ---------------------------------------------------------------- authoritative
_zone_cache: dict[tuple[str, str], tuple[float, str, tuple[ResolverSpec, ...]]] = {}


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
                             ) -> tuple[str | None, tuple[ResolverSpec, ...]]:
    """Find the zone that holds hostname and the addresses of its NS, through the resolvers."""
    key = (hostname, ",".join(r.name for r in resolvers))
    cached = _zone_cache.get(key)
    if cached and cached[0] > time.monotonic():
        return cached[1], cached[2]
    name = dns.name.from_text(hostname)
    while True:
        response = await _first_answer(udp, name, dns.rdatatype.NS, resolvers, deadline)
        if response is None:
            return None, ()
        ns = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.NS)
        if ns is not None:
            break
        if name == dns.name.root or len(name.labels) <= 2:
            return None, ()
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
    _zone_cache[key] = (time.monotonic() + min(ns.ttl, ZONE_CACHE_SECONDS), zone, tuple(servers))
    return zone, tuple(servers)


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


def is_global(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


async def _authoritative(udp: UdpExchange, endpoint: Endpoint, resolvers: tuple[ResolverSpec, ...],
                         deadline: float) -> tuple[str | None, tuple[ResolverAnswer, ...]]:
    zone, specs = None, ()
    if endpoint.authoritative == "auto":
        zone, specs = await find_authoritative(udp, endpoint.hostname, resolvers, deadline)
    elif endpoint.authoritative != "off":
        specs = (parse_authoritative(endpoint.authoritative),)
    answers = await asyncio.gather(*(
        ask(udp, endpoint.hostname, s, deadline, recursion=False, authoritative=True) for s in specs))
    return zone, tuple(answers)


async def probe_dns(endpoint: Endpoint, resolvers: tuple[ResolverSpec, ...], deadline: float
                    ) -> tuple[DnsResult, list[Finding]]:
    """The DNS layer: never raises; a failing resolver is a finding, not an abort."""
    started = time.monotonic()
    udp = UdpExchange()
    try:
        answers, (zone, auth) = await asyncio.gather(
            asyncio.gather(*(ask(udp, endpoint.hostname, r, deadline) for r in resolvers)),
            _authoritative(udp, endpoint, resolvers, deadline))
    finally:
        udp.close()
    answers = tuple(replace(a, agrees_with_authoritative=agrees(a, auth)) for a in answers)
    result = DnsResult(resolvers=answers, authoritative=auth, zone=zone,
                       addresses=_addresses_to_dial(endpoint, answers, auth),
                       duration_seconds=time.monotonic() - started)
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
    findings += _inconsistent(endpoint, relevant)
    findings += _stale(endpoint, relevant)
    findings += _expectations(endpoint, relevant, result.authoritative)
    findings += _exposure(endpoint, answers, result.authoritative)
    # Hints name the real resolver and authoritative addresses and the zone, so they run as pasted.
    return [replace(f, hint=hint_for(f.code, endpoint, f.address, result)) for f in findings]


def _finding(endpoint: Endpoint, code: str, severity: str, message: str, address: str | None = None
             ) -> Finding:
    return Finding(code=code, severity=severity, layer="dns", message=message, address=address)


def _resolver_errors(endpoint, answers, relevant) -> list[Finding]:
    failed = [a for a in answers if not a.answered]
    if not failed:
        return []
    severity = "warning" if any(a.answered for a in relevant) else "critical"
    return [_finding(endpoint, "dns.resolver_error", severity,
                     f"resolver {_who(a)} failed for {endpoint.hostname}: "
                     f"{a.rcode}{': ' + a.error if a.error and a.error != a.rcode else ''}", a.resolver)
            for a in failed]


def _who(a: ResolverAnswer) -> str:
    return a.resolver if a.resolver == a.server else f"{a.resolver} ({a.server})"


def _nxdomain(endpoint, relevant) -> list[Finding]:
    nx = [a for a in relevant if a.rcode == "NXDOMAIN"]
    if not nx:
        return []
    names = ", ".join(a.resolver for a in nx)
    return [_finding(endpoint, "dns.nxdomain", "critical",
                     f"{endpoint.hostname} does not exist (NXDOMAIN) at {names}")]


def _inconsistent(endpoint, relevant) -> list[Finding]:
    answered = [a for a in relevant if a.rcode == "NOERROR"]
    groups: dict[tuple, list[str]] = {}
    for a in answered:
        groups.setdefault(_answer_key(a), []).append(a.resolver)
    if len(groups) < 2:
        return []
    views = {a.view for a in answered}
    kind = "views public and internal differ (split-horizon)" if len(views) > 1 else "propagation or drift"
    parts = "; ".join(f"{', '.join(names)} -> {_show(key)}" for key, names in groups.items())
    return [_finding(endpoint, "dns.inconsistent", "warning",
                     f"resolvers disagree on {endpoint.hostname} ({kind}): {parts}")]


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
