"""A small, real PKI for tests, demos and the bench.

Everything is made with ``cryptography`` in memory: a root, optional
intermediates and leaves, with the extensions a WebPKI verifier expects
(BasicConstraints, KeyUsage, ExtendedKeyUsage serverAuth on leaves,
SubjectKeyIdentifier / AuthorityKeyIdentifier) so that
``cryptography.x509.verification`` accepts a valid chain and fails a broken
one for the reason the test meant.

Typical use::

    root = CA.root()
    inter = root.intermediate()
    good = inter.issue(["www.example.test"])                 # leaf + intermediate
    expired = inter.issue(["www.example.test"], not_after=datetime.now(timezone.utc) - timedelta(days=1))
    missing = inter.issue(["www.example.test"], include_chain=False)
    certfile, keyfile = good.write(tmp_path, "www")
    bundle = root.write_bundle(tmp_path / "root.pem")

Nothing is cached at module level: each test gets fresh keys and random
serial numbers. EC P-256 is the default because it is generated in well
under a millisecond; RSA is there for the tests that need it.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]

# Backdate by default so a freshly issued certificate is valid even if the
# verifier's clock is behind ours, as public CAs do (an hour).  Tests that
# judge chains at an instant taken when they were collected need it too: a
# suite on a loaded machine reaches them many minutes later.
_BACKDATE = timedelta(hours=1)

KEY_KINDS: tuple[str, ...] = ("ec", "ec384", "rsa2048", "rsa3072", "rsa4096", "ed25519")


def new_key(kind: str = "ec") -> PrivateKey:
    """A fresh private key: "ec" (P-256), "ec384", "rsaNNNN" or "ed25519"."""
    if kind in ("ec", "ec256", "p256"):
        return ec.generate_private_key(ec.SECP256R1())
    if kind in ("ec384", "p384"):
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("rsa") and kind[3:].isdigit():
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise ValueError(f"unknown key kind {kind!r}; use one of {', '.join(KEY_KINDS)}")


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    # Ed25519 signs the message itself; cryptography wants None there.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(cn: str) -> x509.Name:
    # Most significant first, as real CAs do, so RFC 4514 renders "CN=…,O=prober lab".
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "prober lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _window(days: float, not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    """The validity window: explicit bounds win, else now-1h .. now+days."""
    now = datetime.now(timezone.utc)
    start = not_before if not_before is not None else now - _BACKDATE
    end = not_after if not_after is not None else now + timedelta(days=days)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    if end <= start:  # e.g. an expired leaf asked for with only not_after in the past
        start = end - timedelta(days=max(days, 1))
    return start, end


def _general_names(sans: Sequence[str], ip_sans: Sequence[str]) -> list[x509.GeneralName]:
    """DNS SANs, with any entry that parses as an IP address made an IP SAN."""
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    names.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_sans)
    return names


def _leaf_key_usage(key: PrivateKey) -> x509.KeyUsage:
    # RSA key exchange needs keyEncipherment; EC/EdDSA keys only sign.
    return x509.KeyUsage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                         content_commitment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


_CA_KEY_USAGE = x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                              crl_sign=True, encipher_only=False, decipher_only=False)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, start: datetime, end: datetime,
             issuer_public_key) -> x509.CertificateBuilder:
    """Everything every certificate here carries: names, window, serial, key ids."""
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key),
                           critical=False))


def _leaf(subject: x509.Name, issuer: x509.Name, key: PrivateKey, signer: PrivateKey,
          sans: Sequence[str], ip_sans: Sequence[str], start: datetime, end: datetime,
          extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
          usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH) -> x509.Certificate:
    builder = (_builder(subject, issuer, key.public_key(), start, end, signer.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_leaf_key_usage(key), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    names = _general_names(sans, ip_sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, _hash_for(signer))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issued:
    """A leaf certificate, its key, and the intermediates a server sends after it."""
    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def fullchain_pem(self) -> bytes:
        return self.cert_pem() + b"".join(_pem(c) for c in self.chain)

    def ders(self) -> list[bytes]:
        """The served chain as DER, as a TLS handshake would deliver it."""
        return [c.public_bytes(serialization.Encoding.DER) for c in (self.cert, *self.chain)]

    def write(self, directory: str | Path, name: str) -> tuple[str, str]:
        """Write NAME.crt (leaf + chain) and NAME.key (mode 0600); return their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        certfile, keyfile = directory / f"{name}.crt", directory / f"{name}.key"
        certfile.write_bytes(self.fullchain_pem())
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.key_pem())
        return str(certfile), str(keyfile)


class CA:
    """A certificate authority: a root (parent None) or an intermediate."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey, parent: CA | None = None) -> None:
        self.cert = cert
        self.key = key
        self.parent = parent

    @classmethod
    def root(cls, name: str = "prober test root", days: int = 3650, key: str = "ec", *,
             not_before: datetime | None = None, not_after: datetime | None = None,
             critical_constraints: bool = True) -> CA:
        """A self-signed root; critical_constraints=False makes what an old openssl.cnf made
        (basicConstraints not marked critical)."""
        private = new_key(key)
        start, end = _window(days, not_before, not_after)
        cert = (_builder(_name(name), _name(name), private.public_key(), start, end, private.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=critical_constraints)
                .add_extension(_CA_KEY_USAGE, critical=True)
                .sign(private, _hash_for(private)))
        return cls(cert, private)

    def intermediate(self, name: str = "prober test intermediate", days: int = 1825,
                     not_before: datetime | None = None, not_after: datetime | None = None,
                     key: str = "ec") -> CA:
        private = new_key(key)
        start, end = _window(days, not_before, not_after)
        cert = (_builder(_name(name), self.cert.subject, private.public_key(), start, end,
                         self.key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(_CA_KEY_USAGE, critical=True)
                .sign(self.key, _hash_for(self.key)))
        return CA(cert, private, parent=self)

    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """This CA's certificate and its parents', up to but not including the root."""
        if self.parent is None:
            return ()
        return (self.cert, *self.parent.intermediates())

    def root_ca(self) -> CA:
        return self if self.parent is None else self.parent.root_ca()

    def issue(self, sans: Sequence[str], *, cn: str | None = None, days_valid: float = 90,
              not_before: datetime | None = None, not_after: datetime | None = None,
              key: str | PrivateKey = "ec", include_chain: bool = True, ip_sans: Sequence[str] = (),
              extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
              usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH) -> Issued:
        """A serverAuth leaf (or `usage`: clientAuth) for `sans`; chain holds the intermediates unless
        include_chain=False.  `extensions` are (extension, critical) pairs, e.g. CRL distribution points."""
        private = new_key(key) if isinstance(key, str) else key
        start, end = _window(days_valid, not_before, not_after)
        subject = _name(cn if cn is not None else (sans[0] if sans else "prober test leaf"))
        cert = _leaf(subject, self.cert.subject, private, self.key, sans, ip_sans, start, end, extensions, usage)
        return Issued(cert, private, self.intermediates() if include_chain else ())

    def pem(self) -> bytes:
        return _pem(self.cert)

    def write_bundle(self, path: str | Path) -> str:
        """Write the root of this CA's hierarchy as a PEM trust-anchor file; return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.root_ca().pem())
        return str(path)


def self_signed(sans: Sequence[str], days_valid: float = 90, *, cn: str | None = None,
                not_before: datetime | None = None, not_after: datetime | None = None,
                key: str = "ec", ip_sans: Sequence[str] = (),
                extensions: Sequence[tuple[x509.ExtensionType, bool]] = ()) -> Issued:
    """A self-signed serverAuth leaf (not a CA): what a misconfigured server serves."""
    private = new_key(key)
    start, end = _window(days_valid, not_before, not_after)
    name = _name(cn if cn is not None else (sans[0] if sans else "prober self-signed"))
    return Issued(_leaf(name, name, private, private, sans, ip_sans, start, end, extensions), private, ())


# --------------------------------------------------------------------------
# Certificates cryptography refuses to make: signed "by hand"
# --------------------------------------------------------------------------
# sha256WithRSAEncryption and the legacy algorithms of the same DER length, so the
# algorithm identifier can be swapped in place inside the to-be-signed part.
_SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")
_LEGACY_RSA = {"sha1": (bytes.fromhex("06092a864886f70d010105"), hashes.SHA1()),
               "md5": (bytes.fromhex("06092a864886f70d010104"), hashes.MD5())}


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def resign_legacy(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey, algorithm: str = "sha1") -> x509.Certificate:
    """The same certificate re-signed with SHA-1 or MD5 by an RSA issuer (cryptography will not sign so).

    `cert` must have been signed with sha256WithRSAEncryption (an RSA issuer, the default hash)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    oid, digest = _LEGACY_RSA[algorithm]
    tbs = cert.tbs_certificate_bytes
    if tbs.count(_SHA256_RSA) != 1:
        raise ValueError("resign_legacy needs a certificate signed with sha256WithRSAEncryption by an RSA key")
    tbs = tbs.replace(_SHA256_RSA, oid)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), digest)
    algid = _der(0x30, oid + b"\x05\x00")
    return x509.load_der_x509_certificate(_der(0x30, tbs + algid + _der(0x03, b"\x00" + signature)))
