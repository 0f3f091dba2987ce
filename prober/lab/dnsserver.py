"""A controllable DNS server on loopback, UDP and TCP on one port.

It answers from an in-memory record set like a recursive resolver would
(following CNAME chains it holds) and, for RD=0 queries, like an
authoritative server (AA set).  Modes make it misbehave in every way the
DNS layer must survive::

    dns = DnsServer()                       # 127.0.0.1, ephemeral port
    await dns.start()
    dns.add_zone("example.test")            # SOA + NS, so NXDOMAIN carries an SOA
    dns.set("www.example.test", "CNAME", ["lb.example.test"])
    dns.set("lb.example.test", "A", ["192.0.2.10"], ttl=60)
    dns.set_mode("slow.example.test", "delay:2")
    dns.mode = "servfail"                   # the whole server, unless a name has its own mode
    dns.queries                             # [Query(qname, qtype, rd, transport), ...]

Several instances on different ports (or 127.0.0.N addresses) are resolvers
that disagree.  Record data uses TEST-NET addresses; nothing here dials out.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import struct
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from prober.lab.runner import TcpService, hostport

MODES: tuple[str, ...] = ("normal", "nxdomain", "servfail", "refused", "blackhole", "delay:SECONDS",
                          "truncate", "malformed", "wrong_id", "wrong_question", "cname_loop")
_PLAIN_MODES = frozenset(m for m in MODES if m != "delay:SECONDS")
# A reply that claims one question and one answer, then breaks off mid-label:
# every parser must reject it, and a client matching on the ID will read it.
_GARBAGE = b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x3fgarbage\xff\xfe\x00"
# Answer data for bulk(): documentation ranges first, then the RFC 2544
# benchmarking range for counts beyond their 762 addresses.  Never dialled.
_BULK_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15")
_MAX_CHAIN = 16  # CNAME links followed before we stop, like a resolver's loop guard
_BIND_ATTEMPTS = 20


class Query(NamedTuple):
    qname: str  # lower case, without the trailing dot
    qtype: str  # "A", "AAAA", ...
    rd: bool  # recursion desired: False when asked as an authoritative
    transport: str  # "udp" | "tcp"


def check_mode(mode: str) -> str:
    """Return `mode` if it is a known mode, else raise ValueError naming the choices."""
    if mode in _PLAIN_MODES:
        return mode
    if mode.startswith("delay:"):
        try:
            if float(mode[6:]) >= 0:
                return mode
        except ValueError:
            pass
    raise ValueError(f"unknown DNS server mode {mode!r}; use one of {', '.join(MODES)}")


def _name(name: str | dns.name.Name) -> dns.name.Name:
    # from_text makes relative names absolute; Name compares case-insensitively.
    return name if isinstance(name, dns.name.Name) else dns.name.from_text(name)


def _bulk_addresses(n: int) -> Iterator[str]:
    hosts = itertools.chain.from_iterable(ipaddress.ip_network(net).hosts() for net in _BULK_NETS)
    return (str(ip) for ip in itertools.islice(hosts, n))


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server._spawn(self.server._answer_udp(data, addr))


class DnsServer:
    """An in-memory DNS server with failure modes, on UDP and TCP at (host, port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.queries: list[Query] = []
        self.bad_queries = 0  # datagrams that did not parse as a DNS query
        self._mode = "normal"
        self._name_modes: dict[dns.name.Name, str] = {}
        self._records: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: TcpService | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ records
    def set(self, name: str, rtype: str, values: Iterable[str], ttl: int = 300) -> None:
        """Replace the `rtype` records at `name` with `values` (rdata text, e.g. "192.0.2.1")."""
        try:
            owner = _name(name)
            rdtype = dns.rdatatype.from_text(rtype)
            # origin=root: a target written without its final dot is still absolute.
            rrset = dns.rrset.from_text_list(owner, ttl, dns.rdataclass.IN, rdtype, list(values),
                                             origin=dns.name.root, relativize=False)
        except dns.exception.DNSException as e:
            raise ValueError(f"bad {rtype} record for {name}: {e}") from None
        self._records.setdefault(owner, {})[rdtype] = rrset

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Remove one type at `name`, or every record there when rtype is None."""
        owner = _name(name)
        rrsets = self._records.get(owner, {})
        if rtype is not None:
            rrsets.pop(dns.rdatatype.from_text(rtype), None)
        if rtype is None or not rrsets:  # a name with no records left does not exist
            self._records.pop(owner, None)

    def bulk(self, name: str, n: int, ttl: int = 300) -> None:
        """Give `name` n A records: enough (e.g. 1000) forces TC=1 over UDP."""
        self.set(name, "A", _bulk_addresses(n), ttl)

    def add_zone(self, origin: str, nameservers: dict[str, str] | None = None, ttl: int = 300) -> None:
        """Make `origin` a zone: an SOA (so negative answers carry it) and NS records.

        `nameservers` maps NS host names to glue addresses (loopback, for a lab
        authoritative); without it the zone gets one NS, ns1.<origin>.
        """
        zone = _name(origin)
        nameservers = nameservers or {f"ns1.{zone}": ""}
        first = _name(next(iter(nameservers)))
        self.set(origin, "SOA", [f"{first} hostmaster.{zone} 1 3600 600 86400 {ttl}"], ttl)
        self.set(origin, "NS", [str(_name(ns)) for ns in nameservers], ttl)
        for ns, address in nameservers.items():
            if address:
                rtype = "AAAA" if ":" in address else "A"
                self.set(ns, rtype, [address], ttl)

    # -------------------------------------------------------------------- modes
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = check_mode(mode)

    def set_mode(self, name: str, mode: str | None) -> None:
        """Give one name its own mode (it wins over the server's); None clears it."""
        if mode is None:
            self._name_modes.pop(_name(name), None)
        else:
            self._name_modes[_name(name)] = check_mode(mode)

    def _mode_for(self, qname: dns.name.Name) -> str:
        return self._name_modes.get(qname, self._mode)

    # ---------------------------------------------------------------- lifecycle
    @property
    def address(self) -> str:
        return hostport(self.host, self.port)

    async def start(self) -> None:
        """Bind UDP, then TCP on the same port; with port 0, retry when TCP collides."""
        loop = asyncio.get_running_loop()
        wanted = self.port
        for attempt in range(_BIND_ATTEMPTS):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, wanted))
            port = transport.get_extra_info("sockname")[1]
            tcp = TcpService(self._serve_tcp)
            try:
                await tcp.listen(self.host, port)
            except OSError:
                transport.close()
                if wanted or attempt == _BIND_ATTEMPTS - 1:
                    raise
                continue
            self._udp, self._tcp, self.port = transport, tcp, port
            return

    async def stop(self) -> None:
        """Close both listeners, every TCP connection and every pending answer.  Idempotent."""
        udp, self._udp = self._udp, None
        tcp, self._tcp = self._tcp, None
        if udp is not None:
            udp.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tcp is not None:
            await tcp.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- transport
    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        wire = await self._reply(data, "udp")
        if wire is not None and self._udp is not None:
            self._udp.sendto(wire, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            wire = await self._reply(await reader.readexactly(length), "tcp")
            if wire is None:  # blackhole: hold the connection open and say nothing
                await reader.read()
                return
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()

    # ------------------------------------------------------------------ answers
    async def _reply(self, data: bytes, transport: str) -> bytes | None:
        """The wire reply to one query, or None for no reply at all."""
        try:
            query = dns.message.from_wire(data)
            question = query.question[0]
        except (dns.exception.DNSException, IndexError):
            self.bad_queries += 1
            return None
        rd = bool(query.flags & dns.flags.RD)
        qname = question.name
        self.queries.append(Query(qname.to_text(omit_final_dot=True).lower(),
                                  dns.rdatatype.to_text(question.rdtype), rd, transport))
        mode = self._mode_for(qname)
        if mode.startswith("delay:"):
            await asyncio.sleep(float(mode[6:]))
            mode = "normal"
        if mode == "blackhole":
            return None
        if mode == "malformed":
            return data[:2] + _GARBAGE
        if mode == "wrong_question":
            query.question[0] = dns.rrset.RRset(dns.name.from_text("wrong-question.invalid."),
                                                question.rdclass, question.rdtype)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA if rd else dns.flags.AA
        if mode == "wrong_id":
            response.id = (query.id + 1) & 0xFFFF
        if mode == "truncate" and transport == "udp":
            response.flags |= dns.flags.TC
        else:
            self._fill(response, qname, question.rdtype, mode)
        return self._to_wire(response, query, transport)

    def _to_wire(self, response: dns.message.Message, query: dns.message.Message, transport: str) -> bytes:
        if transport == "tcp":
            return response.to_wire(max_size=65535)
        # What a UDP client can take: 512 bytes, or its EDNS payload size.
        limit = max(512, min(query.payload, 8192)) if query.edns >= 0 else 512
        return response.to_wire(max_size=limit, prefer_truncation=True)

    def _fill(self, response: dns.message.Message, qname: dns.name.Name, rdtype: int, mode: str) -> None:
        """Put the rcode and the answer, or the negative answer's SOA, into `response`."""
        if mode in ("servfail", "refused"):
            response.set_rcode(dns.rcode.SERVFAIL if mode == "servfail" else dns.rcode.REFUSED)
            return
        if mode == "cname_loop":
            other = dns.name.Name((b"loop",) + qname.labels)
            response.answer.append(dns.rrset.from_text(qname, 300, "IN", "CNAME", other.to_text()))
            response.answer.append(dns.rrset.from_text(other, 300, "IN", "CNAME", qname.to_text()))
            return
        final = qname if mode == "nxdomain" else self._resolve(response, qname, rdtype)
        soa = self._soa(final)
        # A CNAME target outside every zone held here is someone else's to deny.
        if mode == "nxdomain" or (final not in self._records and (final == qname or soa is not None)):
            response.set_rcode(dns.rcode.NXDOMAIN)
        if soa is not None and (not response.answer or response.rcode() == dns.rcode.NXDOMAIN):
            response.authority.append(soa)  # negative answers carry the SOA, for its TTL

    def _resolve(self, response: dns.message.Message, qname: dns.name.Name, rdtype: int) -> dns.name.Name:
        """Append the CNAME chain and final records for qname; return the last name reached."""
        name, seen = qname, set()
        while name not in seen and len(seen) < _MAX_CHAIN:
            seen.add(name)
            rrsets = dict(self._records.get(name, {}))  # a copy: tests edit records from another thread
            if rdtype == dns.rdatatype.ANY:
                response.answer.extend(rrsets.values())
                return name
            if rdtype in rrsets:
                response.answer.append(rrsets[rdtype])
                return name
            cname = rrsets.get(dns.rdatatype.CNAME)
            if cname is None:
                return name
            response.answer.append(cname)
            name = cname[0].target
        return name  # a loop set up with set(): the chain as served shows it

    def _soa(self, name: dns.name.Name) -> dns.rrset.RRset | None:
        """The SOA of the closest enclosing zone held here, if any."""
        while True:
            soa = self._records.get(name, {}).get(dns.rdatatype.SOA)
            if soa is not None:
                return soa
            if len(name) <= 1:  # the root (or a relative name's end): no zone above
                return None
            name = name.parent()
