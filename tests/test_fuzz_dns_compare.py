"""Properties of the DNS comparison (prober/layers/dns.py) over arbitrary answer sets.

Each property states the rule in plain terms, independently of how the code
reaches it, and Hypothesis looks for a set of resolver and authoritative
answers that breaks it: odd rcodes, empty answers, CNAME-only answers,
public, private, loopback and IPv4-mapped addresses, every visibility.
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from prober.layers.dns import MAX_ADDRESSES_DIALLED, _addresses_to_dial, agrees, judge
from prober.model import CATALOGUE, DnsContract, DnsResult, Endpoint, ResolverAnswer

HOST = "www.example.test"
# Answer data only: never dialled.  Global (TEST-NET is not global, so real-looking public
# addresses are needed for the exposure rules), private, loopback, mapped, IPv6.
_ADDRESSES = ("8.8.4.4", "1.1.1.1", "2606:4700::1111", "10.1.2.3", "192.168.0.7", "172.16.5.5", "127.0.0.1",
              "100.64.0.1", "::ffff:10.0.0.1", "::ffff:1.0.0.1", "fd00::1", "192.0.2.10", "198.51.100.7")
_CNAMES = ("lb.example.test", "old-lb.example.test", "edge.cdn.test", "loop.example.test")
_RCODES = ("NOERROR", "NOERROR", "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "TIMEOUT", "ERROR")
_VIEWS = ("internal", "public")


@st.composite
def answers(draw, authoritative: bool = False) -> ResolverAnswer:
    rcode = draw(st.sampled_from(_RCODES))
    # Only a NOERROR answer carries data, as the layer builds them; an error may carry a partial one.
    addresses = tuple(sorted(set(draw(st.lists(st.sampled_from(_ADDRESSES), max_size=4)))))
    cnames = tuple(draw(st.lists(st.sampled_from(_CNAMES), max_size=2, unique=True)))
    if rcode == "NXDOMAIN":
        addresses = ()
    name = draw(st.sampled_from(("a", "b", "c", "d", "e")))
    return ResolverAnswer(
        resolver=name, server=f"127.0.0.1:{ord(name)}",
        view="authoritative" if authoritative else draw(st.sampled_from(_VIEWS)),
        rcode=rcode, addresses=addresses, cnames=cnames,
        ttl=draw(st.one_of(st.none(), st.integers(0, 172800))) if rcode == "NOERROR" else None,
        error=None if rcode in ("NOERROR", "NXDOMAIN") else draw(st.sampled_from(("timed out", "bad", None))),
        authoritative=authoritative)


@st.composite
def endpoints(draw) -> Endpoint:
    contract = DnsContract(
        expect_addresses=tuple(draw(st.lists(st.sampled_from(_ADDRESSES), max_size=2, unique=True))),
        expect_cname=draw(st.one_of(st.none(), st.sampled_from(_CNAMES))),
        max_ttl=draw(st.one_of(st.none(), st.integers(0, 86400))))
    return Endpoint(hostname=HOST, visibility=draw(st.sampled_from((None, "public", "private"))),
                    authoritative="off", dns=contract,
                    connect_to=draw(st.one_of(st.none(), st.just("127.0.0.1"))))


resolver_sets = st.lists(answers(), min_size=1, max_size=4)
authoritative_sets = st.lists(answers(authoritative=True), max_size=3)


def _result(endpoint: Endpoint, resolvers: list[ResolverAnswer], auth: list[ResolverAnswer]) -> DnsResult:
    """What probe_dns assembles from the answers, with each recursive answer compared to the zone's."""
    auth_t = tuple(auth)
    judged = tuple(replace(a, agrees_with_authoritative=agrees(a, auth_t)) for a in resolvers)
    return DnsResult(resolvers=judged, authoritative=auth_t,
                     addresses=_addresses_to_dial(endpoint, judged, auth_t))


def _codes(findings) -> Counter:
    return Counter(f.code for f in findings)


def _relevant(endpoint: Endpoint, resolvers: list[ResolverAnswer]) -> list[ResolverAnswer]:
    """A private endpoint's public resolvers are supposed to know nothing: they are not compared."""
    return [a for a in resolvers if not (endpoint.visibility == "private" and a.view == "public")]


def _same_answer(recursive: ResolverAnswer, auth: ResolverAnswer) -> bool:
    """Equal as a client would see it: the same addresses; or, where the zone's server holds
    only the first CNAME (its target lives in another zone), the same first CNAME."""
    if auth.addresses:
        return set(recursive.addresses) == set(auth.addresses)
    return recursive.cnames[:1] == auth.cnames[:1]


# --------------------------------------------------------------------- agrees
@settings(max_examples=600, deadline=None)
@given(answers(), authoritative_sets)
def test_agrees_iff_equal_to_one_authoritative_answer(answer: ResolverAnswer, auth: list[ResolverAnswer]) -> None:
    usable = [a for a in auth if a.rcode == "NOERROR" and (a.addresses or a.cnames)]
    got = agrees(answer, tuple(auth))
    if answer.rcode != "NOERROR" or not usable:
        assert got is None  # nothing to compare: neither agreeing nor stale
    else:
        assert got is any(_same_answer(answer, a) for a in usable)


@settings(max_examples=300, deadline=None)
@given(answers(), authoritative_sets, st.randoms(use_true_random=False))
def test_agrees_ignores_order(answer: ResolverAnswer, auth: list[ResolverAnswer], rnd) -> None:
    shuffled = list(auth)
    rnd.shuffle(shuffled)
    addresses = list(answer.addresses)
    rnd.shuffle(addresses)
    assert agrees(replace(answer, addresses=tuple(addresses)), tuple(shuffled)) == agrees(answer, tuple(auth))


@settings(max_examples=300, deadline=None)
@given(answers())
def test_an_answer_agrees_with_itself_served_authoritatively(answer: ResolverAnswer) -> None:
    auth = replace(answer, view="authoritative", authoritative=True)
    expected = True if answer.rcode == "NOERROR" and (answer.addresses or answer.cnames) else None
    assert agrees(answer, (auth,)) is expected


# ---------------------------------------------------------------------- judge
# Drawing a whole set of answers costs Hypothesis far more than judging it, so one draw is
# held to every rule below; each rule is its own function, so a failure names the rule.
@settings(max_examples=1000, deadline=None)
@given(endpoints(), resolver_sets, authoritative_sets)
def test_judge_rules(endpoint: Endpoint, resolvers: list[ResolverAnswer], auth: list[ResolverAnswer]) -> None:
    result = _result(endpoint, resolvers, auth)
    findings = judge(endpoint, result)
    codes = _codes(findings)
    _speaks_the_catalogue(findings)
    _inconsistent_iff_two_distinct_answer_sets(endpoint, resolvers, codes)
    _exposure_follows_visibility(endpoint, resolvers, auth, codes)
    _failures_nxdomain_and_staleness(endpoint, resolvers, auth, findings)
    _expectations(endpoint, resolvers, codes)
    _only_answered_addresses_are_dialled(endpoint, resolvers, auth, result.addresses)


def _speaks_the_catalogue(findings) -> None:
    for f in findings:
        assert f.code in CATALOGUE and CATALOGUE[f.code].layer == "dns" == f.layer
        assert f.severity in ("warning", "critical") and f.message and "\n" not in f.message
        assert HOST in f.message


def _inconsistent_iff_two_distinct_answer_sets(endpoint: Endpoint, resolvers, codes: Counter) -> None:
    noerror = [a for a in _relevant(endpoint, resolvers) if a.rcode == "NOERROR"]
    distinct = {(frozenset(a.addresses), a.cnames[:1]) for a in noerror}
    assert codes["dns.inconsistent"] == (1 if len(distinct) >= 2 else 0)


def _exposure_follows_visibility(endpoint: Endpoint, resolvers, auth, codes: Counter) -> None:
    if endpoint.visibility != "public":
        assert codes["dns.private_address"] == 0
    if endpoint.visibility != "private":
        assert codes["dns.publicly_resolvable"] == 0
    if endpoint.visibility == "private":
        leaking = [a for a in resolvers if a.view == "public" and a.rcode == "NOERROR" and a.addresses]
        assert codes["dns.publicly_resolvable"] == len(leaking)
    if endpoint.visibility == "public":
        # what the world sees: the public resolvers and the zone's own servers (else every resolver)
        seen = [a for a in resolvers if a.view == "public"] + auth or resolvers
        non_global = [a for a in seen if any(not _is_global(x) for x in a.addresses)]
        assert codes["dns.private_address"] == len(non_global)


def _is_global(text: str) -> bool:
    ip = ipaddress.ip_address(text)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_global


def _failures_nxdomain_and_staleness(endpoint: Endpoint, resolvers, auth, findings) -> None:
    relevant = _relevant(endpoint, resolvers)
    failed = [a for a in resolvers if a.rcode not in ("NOERROR", "NXDOMAIN")]
    errors = [f for f in findings if f.code == "dns.resolver_error"]
    assert sorted(f.address for f in errors) == sorted(a.resolver for a in failed)
    # a failing resolver is a warning while another relevant one answered, critical when none did
    answered = any(a.rcode in ("NOERROR", "NXDOMAIN") for a in relevant)
    assert {f.severity for f in errors} <= {"warning" if answered else "critical"}
    # NXDOMAIN after a CNAME is a dangling CNAME, not a name that does not exist
    nx = [a for a in relevant if a.rcode == "NXDOMAIN"]
    assert _codes(findings)["dns.nxdomain"] == (1 if any(not a.cnames for a in nx) else 0)
    assert _codes(findings)["dns.dangling_cname"] == (1 if any(a.cnames for a in nx) else 0)
    stale = [a for a in relevant if agrees(a, tuple(auth)) is False]
    assert sorted(f.address for f in findings if f.code == "dns.stale_resolver") == sorted(a.resolver for a in stale)


def _expectations(endpoint: Endpoint, resolvers, codes: Counter) -> None:
    relevant = _relevant(endpoint, resolvers)
    want = endpoint.dns
    allowed = {ipaddress.ip_address(x) for x in want.expect_addresses}
    outside = [a for a in relevant if allowed and any(ipaddress.ip_address(x) not in allowed for x in a.addresses)]
    assert codes["dns.unexpected_address"] == len(outside)
    wrong = [a for a in relevant if want.expect_cname and a.rcode == "NOERROR"
             and a.cnames[:1] != (want.expect_cname,)]
    assert codes["dns.unexpected_cname"] == len(wrong)
    if want.max_ttl is None:
        assert codes["dns.ttl_above_max"] == 0


def _only_answered_addresses_are_dialled(endpoint: Endpoint, resolvers, auth, dialled: tuple[str, ...]) -> None:
    if endpoint.connect_to:
        assert dialled == (endpoint.connect_to,)
        return
    assert len(dialled) == len(set(dialled)) <= MAX_ADDRESSES_DIALLED
    # a private endpoint never dials what only a public resolver handed out
    allowed = {x for a in _relevant(endpoint, resolvers) + auth for x in a.addresses}
    assert set(dialled) <= allowed
    if len(allowed) <= MAX_ADDRESSES_DIALLED:
        assert set(dialled) == allowed


@settings(max_examples=300, deadline=None)
@given(endpoints(), resolver_sets, authoritative_sets, st.randoms(use_true_random=False))
def test_judge_ignores_order(endpoint: Endpoint, resolvers, auth, rnd) -> None:
    """Which resolver answered first, or in which order a server listed its records, changes nothing."""
    shuffled_resolvers = [replace(a, addresses=tuple(rnd.sample(a.addresses, len(a.addresses))))
                          for a in rnd.sample(resolvers, len(resolvers))]
    shuffled_auth = rnd.sample(auth, len(auth))
    before = _codes(judge(endpoint, _result(endpoint, resolvers, auth)))
    after = _codes(judge(endpoint, _result(endpoint, shuffled_resolvers, shuffled_auth)))
    assert before == after


@settings(max_examples=100, deadline=None)
@given(endpoints(), st.lists(answers(), min_size=MAX_ADDRESSES_DIALLED // 2, max_size=MAX_ADDRESSES_DIALLED))
def test_many_answers_still_dial_a_bounded_set(endpoint: Endpoint, resolvers) -> None:
    """Many resolvers, each with its own addresses: the dial list stays within MAX_ADDRESSES_DIALLED."""
    spread = [replace(a, addresses=tuple(f"127.0.{i}.{j + 1}" for j in range(8))) for i, a in enumerate(resolvers)]
    endpoint = replace(endpoint, connect_to=None)
    dialled = _result(endpoint, spread, []).addresses
    assert len(dialled) == min(MAX_ADDRESSES_DIALLED, len({x for a in _relevant(endpoint, spread)
                                                            for x in a.addresses}))


_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63)


@settings(max_examples=300, deadline=None)
@given(labels=st.lists(_LABEL, min_size=0, max_size=6), rdtype=st.sampled_from((1, 28, 5, 2, 6, 43, 48, 257)),
       recursion=st.booleans(), want_dnssec=st.booleans(), cd=st.booleans())
def test_a_query_is_the_bytes_dnspython_renders_for_it(labels, rdtype, recursion, want_dnssec, cd) -> None:
    """The query sent is byte for byte what dnspython renders for the question and flags (the ID aside),
    although only its frame is built by dnspython once per type and flags."""
    import dns.flags
    import dns.message
    import dns.name

    from prober.layers.dns import EDNS_PAYLOAD, _query_wire
    qname = dns.name.from_text(".".join(labels) + ".") if labels else dns.name.root
    q = dns.message.make_query(qname, rdtype, use_edns=0, payload=EDNS_PAYLOAD, want_dnssec=want_dnssec)
    if not recursion:
        q.flags &= ~dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    assert _query_wire(qname, rdtype, recursion, want_dnssec, cd)[2:] == q.to_wire()[2:]
