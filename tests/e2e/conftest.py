"""Fixtures of the e2e tier: a loopback /24 per session, the nginx edge, knot + unbound, log capture.

Servers are session- or module-scoped and stopped by their finalizers.  A
failed test gets the last lines of every server's log attached to its report,
so a CI failure shows what nginx, knot, unbound, Prometheus or the prober
said at the time.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import SITES, WWW, Edge
from harness import STARTED, free_port, random_subnet, stop_since, tool
from servers import TTL, DnsLab, start_knot, start_unbound


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        # The servers of this moment: those running, and any that died on their own.
        for service in STARTED:
            if service.state != "stopped":
                report.sections.append((f"log of {service.name} ({service.state})", service.tail()))


@pytest.fixture(scope="session")
def subnet() -> str:
    """127.A.B: every server of this session listens on an address in it."""
    return random_subnet()


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def edge(e2e_dir: Path, subnet: str) -> Iterator[Edge]:
    tool("nginx")
    served = Edge(e2e_dir / "nginx", subnet)
    try:
        served.start()
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="session")
def dns_lab(edge: Edge, e2e_dir: Path, subnet: str) -> Iterator[DnsLab]:
    """knot authoritative for e2e.test (every site on the edge, www on the old LB) and two unbound."""
    for binary in ("knotd", "knotc", "unbound", "unbound-control"):
        tool(binary)
    records = {s.name: edge.address for s in SITES} | {WWW.name: edge.addresses["old-lb"]}
    mark = len(STARTED)
    try:
        knot_address = f"{subnet}.53"
        knot = start_knot(e2e_dir / "knot", knot_address, free_port(knot_address), records, TTL)
        resolvers = []
        for n, host in ((1, f"{subnet}.54"), (2, f"{subnet}.55")):
            resolvers.append(start_unbound(e2e_dir / f"unbound-{n}", f"unbound-{n}", host, free_port(host),
                                           free_port(host), knot))
        yield DnsLab(knot, tuple(resolvers))
    finally:
        stop_since(mark)
