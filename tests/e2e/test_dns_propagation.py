"""A record moves at the authoritative server; one recursive resolver keeps serving the cached old answer.

Real knot serves e2e.test; two real unbound instances recurse to it through
a stub-zone.  www.e2e.test moves from the old load balancer to the new one
(zone file rewritten, serial bumped, `knotc zone-reload`).  unbound-1 keeps
the old answer it cached (TTL one hour); unbound-2's cache is flushed, as if
its TTL had run out.  The prober, asking both and knot without recursion,
must see exactly that: dns.stale_resolver for unbound-1 and dns.inconsistent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge import WWW, Edge
from harness import CheckRun, prober_check
from servers import TTL, DnsLab

pytestmark = pytest.mark.e2e

TIMEOUT = 5.0


def _answers(run: CheckRun) -> dict[str, list[str]]:
    dns = run.reports[WWW.hostname]["dns"]
    return {a["resolver"]: a["answers"] for a in (*dns["resolvers"], *dns["authoritative"])}


def _resolver(run: CheckRun, name: str) -> dict[str, Any]:
    return next(a for a in run.reports[WWW.hostname]["dns"]["resolvers"] if a["resolver"] == name)


def _dialled(run: CheckRun) -> dict[str, bool]:
    return {t["address"]: t["handshake"] for t in run.reports[WWW.hostname]["tls"]["targets"]}


def test_a_moved_record_stays_stale_at_the_resolver_that_cached_it(edge: Edge, dns_lab: DnsLab,
                                                                    e2e_dir: Path) -> None:
    old, new = edge.addresses["old-lb"], edge.addresses["new-lb"]
    cached, fresh = dns_lab.resolvers
    knot = dns_lab.knot.target
    # No connect_to: the probe dials whatever DNS answers, as a user would.
    entry = edge.entry(WWW, TIMEOUT, dns_lab.contract(), connect=False)
    config = edge.write_config(e2e_dir / "www.yaml", [entry], interval=60)

    # Before the move: everyone agrees on the old load balancer, and both resolvers now cache it.
    before = prober_check(config, [WWW.hostname], e2e_dir)
    assert (before.exit_code, before.codes(WWW.hostname)) == (0, []), before.stdout
    assert _answers(before) == {cached.name: [old], fresh.name: [old], knot: [old]}
    assert _dialled(before) == {old: True}
    assert cached.cached(WWW.hostname)

    # The move: knot serves the new address at once.
    dns_lab.knot.move(WWW.name, new)
    assert [r.address for r in dns_lab.knot.ask(WWW.hostname, "A")] == [new]
    assert fresh.flush_zone().startswith("ok")

    during = prober_check(config, [WWW.hostname], e2e_dir)
    report = during.reports[WWW.hostname]
    assert during.codes(WWW.hostname) == ["dns.inconsistent", "dns.stale_resolver"], during.stdout
    assert (report["status"], during.exit_code) == ("warning", 1)
    assert _answers(during) == {cached.name: [old], fresh.name: [new], knot: [new]}
    stale = during.finding(WWW.hostname, "dns.stale_resolver")
    assert stale["address"] == cached.name and old in stale["message"]
    assert _resolver(during, cached.name)["agrees_with_authoritative"] is False
    assert 0 < _resolver(during, cached.name)["ttl"] <= TTL  # counting down from the hour it was cached for
    assert _resolver(during, fresh.name)["agrees_with_authoritative"] is True
    # Both load balancers still serve, so users behind either resolver get through: a warning, not an outage.
    assert _dialled(during) == {old: True, new: True}

    # The fix on the stale resolver (what an operator would do rather than wait an hour).
    assert cached.flush_zone().startswith("ok")
    after = prober_check(config, [WWW.hostname], e2e_dir)
    assert (after.exit_code, after.codes(WWW.hostname)) == (0, []), after.stdout
    assert _answers(after) == {cached.name: [new], fresh.name: [new], knot: [new]}
    assert _dialled(after) == {new: True}
