"""The lab PKI makes certificates that real TLS stacks and verifiers accept."""
from __future__ import annotations

import socket
import ssl
import threading
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from prober.lab.pki import CA, Issued, new_key, self_signed

NOW = datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW is each test's own start: the lab dates certificates from the real clock."""
    global NOW
    NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def root() -> CA:
    return CA.root()


@pytest.fixture(scope="module")
def inter(root: CA) -> CA:
    return root.intermediate()


def _verify(issued: Issued, root: CA, name: str, at: datetime | None = None) -> list[x509.Certificate]:
    builder = PolicyBuilder().store(Store([root.cert]))
    if at is not None:
        builder = builder.time(at)
    return builder.build_server_verifier(DNSName(name)).verify(issued.cert, list(issued.chain))


def test_root_intermediate_leaf_verifies_with_the_library(root: CA, inter: CA) -> None:
    leaf = inter.issue(["www.example.test", "api.example.test"])
    path = _verify(leaf, root, "api.example.test")
    assert [c.subject for c in path] == [leaf.cert.subject, inter.cert.subject, root.cert.subject]
    assert leaf.chain == (inter.cert,)
    assert inter.parent is root and root.parent is None


def test_leaf_extensions(inter: CA) -> None:
    leaf = inter.issue(["a.example.test"], ip_sans=["127.0.0.1"]).cert
    ext = leaf.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ext.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert ExtendedKeyUsageOID.SERVER_AUTH in ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    ski = inter.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier
    assert aki == ski
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_ca_extensions(root: CA, inter: CA) -> None:
    for ca in (root, inter):
        bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca
        assert ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_serials_are_random_and_positive(inter: CA) -> None:
    serials = {inter.issue(["s.example.test"]).cert.serial_number for _ in range(5)}
    assert len(serials) == 5 and all(s > 0 for s in serials)


def test_ip_looking_san_becomes_an_ip_san(inter: CA) -> None:
    san = inter.issue(["::1"]).cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]


def test_validity_windows(inter: CA) -> None:
    soon = inter.issue(["soon.example.test"], days_valid=5).cert
    assert timedelta(days=4.99) < soon.not_valid_after_utc - NOW < timedelta(days=5.01)
    assert soon.not_valid_before_utc < NOW
    past = NOW - timedelta(days=1)
    expired = inter.issue(["old.example.test"], not_after=past).cert
    assert expired.not_valid_after_utc == past.replace(microsecond=0)
    assert expired.not_valid_before_utc < expired.not_valid_after_utc
    future = inter.issue(["new.example.test"], not_before=NOW + timedelta(days=2)).cert
    assert future.not_valid_before_utc > NOW


def test_broken_variants_fail_verification_for_their_reason(root: CA, inter: CA) -> None:
    cases = {
        "expired": (inter.issue(["x.example.test"], not_after=NOW - timedelta(days=1)), "x.example.test"),
        "early": (inter.issue(["x.example.test"], not_before=NOW + timedelta(days=1)), "x.example.test"),
        "wrong SAN": (inter.issue(["other.example.test"]), "x.example.test"),
        "missing intermediate": (inter.issue(["x.example.test"], include_chain=False), "x.example.test"),
        "self-signed": (self_signed(["x.example.test"]), "x.example.test"),
    }
    for label, (issued, name) in cases.items():
        with pytest.raises(VerificationError):
            _verify(issued, root, name)
        if label == "missing intermediate":
            assert issued.chain == ()


def test_wildcard_leaf(root: CA, inter: CA) -> None:
    leaf = inter.issue(["*.apps.example.test"])
    assert _verify(leaf, root, "shop.apps.example.test")
    with pytest.raises(VerificationError):
        _verify(leaf, root, "a.b.apps.example.test")


def test_expired_intermediate_with_a_leaf_issued_while_it_was_valid() -> None:
    root = CA.root(not_before=NOW - timedelta(days=1000))
    old = root.intermediate(not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1))
    leaf = old.issue(["x.example.test"], not_before=NOW - timedelta(days=30), days_valid=60)
    assert _verify(leaf, root, "x.example.test", at=NOW - timedelta(days=2))
    with pytest.raises(VerificationError):
        _verify(leaf, root, "x.example.test")


def test_two_intermediates_chain_excludes_the_root(root: CA) -> None:
    first = root.intermediate("first")
    second = first.intermediate("second")
    leaf = second.issue(["deep.example.test"])
    assert leaf.chain == (second.cert, first.cert)
    assert len(_verify(leaf, root, "deep.example.test")) == 4


@pytest.mark.parametrize("kind, cls", [("ec", ec.EllipticCurvePrivateKey), ("ec384", ec.EllipticCurvePrivateKey),
                                       ("rsa2048", rsa.RSAPrivateKey), ("ed25519", ed25519.Ed25519PrivateKey)])
def test_key_kinds(kind: str, cls: type) -> None:
    assert isinstance(new_key(kind), cls)


def test_rsa_hierarchy_verifies() -> None:
    root = CA.root(key="rsa2048")
    leaf = root.intermediate(key="rsa2048").issue(["rsa.example.test"], key="rsa2048")
    assert isinstance(leaf.cert.public_key(), rsa.RSAPublicKey)
    assert _verify(leaf, root, "rsa.example.test")


def test_unknown_key_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown key kind 'dsa'"):
        new_key("dsa")


def test_self_signed_leaf() -> None:
    issued = self_signed(["self.example.test"], days_valid=10)
    assert issued.cert.subject == issued.cert.issuer and issued.chain == ()
    issued.cert.verify_directly_issued_by(issued.cert)
    assert issued.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_pem_output_and_files(tmp_path, root: CA, inter: CA) -> None:
    leaf = inter.issue(["files.example.test"])
    full = x509.load_pem_x509_certificates(leaf.fullchain_pem())
    assert full == [leaf.cert, inter.cert]
    certfile, keyfile = leaf.write(tmp_path / "srv", "files")
    assert certfile.endswith("files.crt") and keyfile.endswith("files.key")
    assert (tmp_path / "srv" / "files.crt").read_bytes() == leaf.fullchain_pem()
    assert (tmp_path / "srv" / "files.key").stat().st_mode & 0o777 == 0o600
    bundle = inter.write_bundle(tmp_path / "trust" / "root.pem")
    assert x509.load_pem_x509_certificates(open(bundle, "rb").read()) == [root.cert]
    assert root.pem() == open(bundle, "rb").read()


def test_written_files_serve_a_real_tls_handshake_on_loopback(tmp_path, root: CA, inter: CA) -> None:
    leaf = inter.issue(["localhost"], ip_sans=["127.0.0.1"])
    certfile, keyfile = leaf.write(tmp_path, "srv")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certfile, keyfile)
    client_ctx = ssl.create_default_context(cafile=root.write_bundle(tmp_path / "root.pem"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.recv(5) == b"hello"
                served = tls.getpeercert()
        thread.join(5)
    assert ("DNS", "localhost") in served["subjectAltName"]
