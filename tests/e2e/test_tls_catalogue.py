"""`prober check` against a catalogue of deliberately broken TLS servers on real nginx.

Every case of prober/lab/catalogue.py is an nginx server block on its own loopback
address, with a real PKI: weak keys, SHA-1 and MD5 chains, a real CRL served over HTTP,
a real `openssl ocsp` responder, two certificates in one block, TLS 1.0 only, small DH
groups, weak suites, ssl_verify_client on, a private CA made the old openssl.cnf way, and
the CRL faults (a URL that hangs, 100 MB, the wrong key, an off-loopback URL in a
self-signed certificate).  One `prober check` of every case; each gets exactly its codes.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import CheckRun, Service, free_port, prober_check, tcp_open, tool
from prober.lab.catalogue import BY_NAME, CASES, Case, Catalogue, block_names
from prober.lab.dnsserver import DnsServer
from prober.lab.runner import LabLoop
from prober.lab.webserver import PlainHttpServer

pytestmark = pytest.mark.e2e

TIMEOUT = 10.0  # 22 probes at once in one process on a loaded machine; the hanging CRL must still end by it


@pytest.fixture(scope="module")
def catalogue(e2e_dir: Path, subnet: str) -> Iterator[Catalogue]:
    nginx_bin, openssl = tool("nginx"), tool("openssl")
    workdir = e2e_dir / "catalogue"
    addresses = {name: f"{subnet}.{100 + i}" for i, name in enumerate(block_names())}
    tls_port = free_port(*addresses.values())
    http_port = free_port(*addresses.values())
    crl_host, ocsp_host = f"{subnet}.2", f"{subnet}.4"
    ocsp_port = free_port(ocsp_host, "0.0.0.0")
    loop = LabLoop()
    services: list[Service] = []
    try:
        crl = loop.start(PlainHttpServer(crl_host, 0, mode="no_redirect"))
        cat = Catalogue(workdir, addresses, tls_port, http_port, f"http://{crl.address}",
                        f"http://{ocsp_host}:{ocsp_port}/", openssl)
        for path, (body, delay) in cat.crls.items():
            crl.route(path, 200, body, headers={"content-type": "application/pkix-crl"}, delay=delay)
        cat.dns = loop.start(DnsServer(f"{subnet}.3", 0))
        for case in CASES:
            cat.dns.set(case.hostname, "A", [cat.address_of(case)], ttl=60)
        ocsp = Service("openssl-ocsp", cat.ocsp_argv(openssl, ocsp_port), workdir)
        # Ready when it says so: a probing connect would hold the one-at-a-time responder.
        services.append(ocsp.start(lambda: "waiting for OCSP client connections" in ocsp.tail()))
        conf = workdir / "nginx.conf"
        conf.write_text(cat.nginx_conf())
        nginx = Service("nginx-catalogue", [nginx_bin, "-p", f"{workdir}/", "-c", conf, "-g", "daemon off;"],
                        workdir, extra_logs=[workdir / "access.log"])
        services.append(nginx.start(lambda: all(tcp_open(a, tls_port) for a in addresses.values())))
        yield cat
    finally:
        for service in services:
            service.stop()
        loop.stop()


@pytest.fixture(scope="module")
def run(catalogue: Catalogue, e2e_dir: Path) -> CheckRun:
    resolvers = [{"address": f"{catalogue.dns.address}", "name": "catalogue-dns"}]
    entries = [catalogue.entry(c, TIMEOUT, resolvers) for c in CASES]
    import yaml
    config = e2e_dir / "catalogue.yaml"
    config.write_text(yaml.safe_dump({"defaults": {"interval": "60s"}, "endpoints": entries}, sort_keys=False))
    return prober_check(config, [c.hostname for c in CASES], e2e_dir, timeout=120)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_case_gets_exactly_its_codes_and_status(run: CheckRun, case: Case) -> None:
    run.assert_exactly(case.hostname, case.description, case.expect, case.status)


_DEBUG_TEXT = re.compile(r"AlgorithmIdentifier|PhantomData|DefinedByMarker|Some\(|candidates exhausted|"
                         r"\[SSL|_ssl\.c|Traceback|validation failed")


def test_every_message_is_a_sentence_without_library_debug_text(run: CheckRun) -> None:
    for case in CASES:
        report = run.reports[case.hostname]
        texts = [f["message"] for f in report["findings"]] + [report["verdict"]["message"]]
        texts += [t["verify_error"] or "" for t in report["tls"]["targets"]]
        for text in texts:
            assert not _DEBUG_TEXT.search(text), f"{case.name}: {text}"


def _messages(run: CheckRun, name: str, code: str) -> list[str]:
    return [f["message"] for f in run.reports[BY_NAME[name].hostname]["findings"] if f["code"] == code]


def test_messages_name_the_certificate_and_the_defect(run: CheckRun) -> None:
    (weak,) = _messages(run, "rsa-1024", "tls.weak_key")
    assert "leaf CN=rsa-1024.tls.test" in weak and "1024-bit RSA key" in weak and "2048-bit floor" in weak
    sha1 = _messages(run, "sha1-chain", "tls.weak_signature")
    assert len(sha1) == 2 and all("SHA-1" in m and "sha1WithRSAEncryption" in m for m in sha1)
    assert any("leaf CN=sha1-chain.tls.test" in m for m in sha1)
    assert any("intermediate CN=catalogue RSA intermediate" in m for m in sha1)
    (md5,) = _messages(run, "md5-leaf", "tls.weak_signature")
    assert "MD5" in md5
    (profile,) = _messages(run, "old-private-ca", "tls.profile_violation")
    assert "basicConstraints not marked critical" in profile and "CN=catalogue old openssl.cnf root" in profile
    assert "OpenSSL" in profile and "accept" in profile and "refuse" in profile


def test_revocation_says_how_and_why(run: CheckRun) -> None:
    (crl,) = _messages(run, "revoked-crl", "tls.revoked")
    assert "listed in the CRL at http://" in crl and "keyCompromise" in crl
    (ocsp,) = _messages(run, "revoked-ocsp", "tls.revoked")
    assert "OCSP responder" in ocsp and "revoked" in ocsp
    assert "did not answer" in _messages(run, "crl-hang", "tls.revocation_unknown")[0]
    assert "byte cap" in _messages(run, "crl-huge", "tls.revocation_unknown")[0]
    assert "not signed by the issuer" in _messages(run, "crl-wrong-key", "tls.revocation_unknown")[0]


def test_the_hanging_crl_does_not_outlive_the_probe_deadline(run: CheckRun) -> None:
    assert run.reports[BY_NAME["crl-hang"].hostname]["duration_seconds"] < TIMEOUT


def test_a_certificate_only_rsa_clients_get_says_so(run: CheckRun) -> None:
    (expired,) = _messages(run, "dual-cert", "tls.expired")
    assert "RSA-only clients" in expired and "CN=dual-cert.tls.test" in expired
    report = run.reports[BY_NAME["dual-cert"].hostname]
    assert report["tls"]["chain"][0]["key_type"] == "EC"  # the main handshake got the ECDSA one
    (alt,) = report["tls"]["targets"][0]["alternates"]
    assert alt["clients"] == "RSA-only clients" and alt["chain"][0]["key_type"] == "RSA" and not alt["verified"]
    assert alt["verify_error"] == "the leaf CN=dual-cert.tls.test has expired"
    (ocsp,) = report["tls"]["targets"][0]["revocation"]
    assert (ocsp["status"], ocsp["source"], ocsp["position"]) == ("good", "ocsp", "leaf")


def test_protocol_dh_cipher_and_mtls_messages(run: CheckRun) -> None:
    (weak,) = _messages(run, "tls10-only", "tls.weak_protocol")
    assert "only accepts TLSv1" in weak
    (failed,) = _messages(run, "tls10-only", "tls.handshake_failed")
    assert "speaks only TLSv1" in failed
    assert "default clients refuse" in _messages(run, "dh-1024", "tls.weak_dh")[0]
    assert "static RSA key exchange" in _messages(run, "static-rsa", "tls.weak_cipher")[0]
    assert "CBC with SHA-1" in _messages(run, "cbc-sha1", "tls.weak_cipher")[0]
    assert "requires a client certificate" in _messages(run, "mtls", "tls.client_cert_required")[0]


def test_hostname_mismatch_of_a_certificate_without_dns_names_reads_well(catalogue: Catalogue) -> None:
    from prober.layers.tls import judge
    from prober.model import CertInfo, ChainVerdict, Endpoint, TlsResult, TlsTarget
    leaf = CertInfo("leaf", "CN=ip-only", "CN=ca", ("127.0.0.9",), "1", 0, 2e9, 100, "EC", 256,
                    "ecdsa-with-SHA256", "0" * 64, curve="P-256", signature_hash="sha256")
    verdict = ChainVerdict(verified=False, hostname_match=False, trusted=True, incomplete=False,
                           self_signed_leaf=False)
    target = TlsTarget("127.0.0.9", 443, True, True, chain=(leaf,), verdict=verdict)
    none = TlsTarget("127.0.0.9", 443, True, True, chain=(CertInfo(**{**{s: getattr(leaf, s) for s in
                                                                       leaf.__slots__}, "sans": ()}),),
                     verdict=verdict)
    (with_ip,) = [f for f in judge(Endpoint("a.tls.test"), TlsResult((target,))) if f.code == "tls.hostname_mismatch"]
    (bare,) = [f for f in judge(Endpoint("a.tls.test"), TlsResult((none,))) if f.code == "tls.hostname_mismatch"]
    assert "covers only 127.0.0.9" in with_ip.message
    assert "no DNS names" not in bare.message and "names no host in its subjectAltName" in bare.message
