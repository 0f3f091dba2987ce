"""Revocation against real CRLs served over HTTP on loopback, and the fence around that egress.

The CRLs are made with cryptography and served by the lab's HTTP server; the
certificates come from the lab PKI.  What is asserted is what the TLS layer
reports (status, source, the sentence), what was fetched (revocation.fetches),
and what the network guard saw.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from collections.abc import Iterator

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization

from prober import revocation, x509
from prober.lab.catalogue import _cdp
from prober.lab.pki import CA, Issued, self_signed
from prober.lab.runner import LabLoop
from prober.lab.webserver import PlainHttpServer
from prober.model import Endpoint, TlsContract


@pytest.fixture(scope="module")
def pki() -> tuple[CA, CA, x509.TrustStore]:
    root = CA.root()
    inter = root.intermediate()
    return root, inter, x509.TrustStore.from_certificates([root.cert])


@pytest.fixture(scope="module")
def web() -> Iterator[PlainHttpServer]:
    with LabLoop() as loop:
        yield loop.start(PlainHttpServer(mode="no_redirect"))


@pytest.fixture(autouse=True)
def fresh() -> None:
    revocation.cache_clear()


def _crl(issuer: CA, revoked: list[cx509.Certificate], next_update: float = 7.0) -> bytes:
    now = datetime.now(timezone.utc)
    builder = (cx509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
               .last_update(now - timedelta(days=8)).next_update(now + timedelta(days=next_update)))
    for cert in revoked:
        builder = builder.add_revoked_certificate(cx509.RevokedCertificateBuilder().serial_number(
            cert.serial_number).revocation_date(now - timedelta(hours=1)).build())
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _check(issued: Issued, store: x509.TrustStore, mode: str = "auto", timeout: float = 3.0):
    certs, _ = x509.parse_chain(issued.ders())
    verdict = x509.verify_chain(certs, certs[0].subject.rfc4514_string(), store, time.time())
    endpoint = Endpoint("r.test", tls=TlsContract(revocation=mode))
    return asyncio.run(revocation.check(endpoint, certs, verdict, store, time.monotonic() + timeout))


def test_a_crl_is_fetched_once_and_cached_until_next_update(pki, web) -> None:
    _, inter, store = pki
    leaf = inter.issue(["good.r.test"], extensions=[_cdp(f"http://{web.address}/good.crl")])
    web.route("/good.crl", 200, _crl(inter, []))
    before = revocation.fetches
    (first,) = _check(leaf, store)
    assert (first.status, first.source, first.position) == ("good", "crl", "leaf")
    for _ in range(3):
        assert _check(leaf, store)[0].status == "good"
    assert revocation.fetches - before == 1


def test_a_listed_certificate_is_revoked_and_says_where_and_since(pki, web) -> None:
    _, inter, store = pki
    leaf = inter.issue(["bad.r.test"], extensions=[_cdp(f"http://{web.address}/bad.crl")])
    web.route("/bad.crl", 200, _crl(inter, [leaf.cert]))
    (result,) = _check(leaf, store)
    assert result.status == "revoked" and f"listed in the CRL at http://{web.address}/bad.crl since" in result.detail


def test_a_crl_past_its_next_update_is_unknown(pki, web) -> None:
    _, inter, store = pki
    leaf = inter.issue(["stale.r.test"], extensions=[_cdp(f"http://{web.address}/stale.crl")])
    web.route("/stale.crl", 200, _crl(inter, [], next_update=-1))
    (result,) = _check(leaf, store)
    assert result.status == "unknown" and "past its nextUpdate" in result.detail


def test_a_redirect_off_http_is_not_followed(pki, web) -> None:
    _, inter, store = pki
    leaf = inter.issue(["ftp.r.test"], extensions=[_cdp(f"http://{web.address}/moved.crl")])
    web.route("/moved.crl", 302, b"", headers={"location": "ftp://127.0.0.1/x.crl"})
    (result,) = _check(leaf, store)
    assert result.status == "unknown" and "redirects off HTTP(S)" in result.detail


def test_revocation_off_fetches_nothing(pki, web) -> None:
    _, inter, store = pki
    leaf = inter.issue(["off.r.test"], extensions=[_cdp(f"http://{web.address}/good.crl")])
    before = revocation.fetches
    assert _check(leaf, store, mode="off") == ()
    assert revocation.fetches == before


def test_an_unanchored_certificate_cannot_point_the_prober_anywhere(network_guard: list[str]) -> None:
    """A self-signed certificate names a CRL off loopback: nothing is dialled, nothing is looked up."""
    leaf = self_signed(["evil.r.test"], extensions=[_cdp("http://192.0.2.1/evil.crl")])
    before = revocation.fetches
    assert _check(leaf, x509.TrustStore.from_certificates([CA.root().cert])) == ()
    assert revocation.fetches == before and network_guard == []


def test_an_anchored_certificate_is_the_only_way_out_and_the_guard_sees_it(pki, network_guard: list[str]) -> None:
    """The same URL in a certificate that chains to an anchor is fetched: the guard refuses it, and
    the status is unknown.  (This shows the fence above is what kept the other one in.)"""
    _, inter, store = pki
    leaf = inter.issue(["far.r.test"], extensions=[_cdp("http://192.0.2.1/far.crl")])
    (result,) = _check(leaf, store)
    assert result.status == "unknown" and "could not be fetched" in result.detail
    assert network_guard and all("192.0.2.1" in v for v in network_guard)
    network_guard.clear()  # seen and refused, as intended
