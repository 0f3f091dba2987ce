"""A catalogue of deliberately broken TLS servers, in the manner of badssl.com, for nginx on loopback.

Each case is one nginx server block on its own loopback address (nginx takes the protocols
and cipher list from the listening socket's default server, not from the block SNI picks),
with a real PKI made here: weak keys, SHA-1 and MD5 signatures (signed by hand, which
cryptography refuses to do), revoked certificates (a real CRL served over HTTP, a real
`openssl ocsp` responder), two certificates in one block, TLS 1.0 only, small DH groups,
weak suites, a required client certificate, and a private CA made the old openssl.cnf way.
The healthy controls stay ok.  Everything is generated at test time under `workdir`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from .pki import CA, Issued, new_key, resign_legacy, self_signed

DOMAIN = "tls.test"
HSTS = "max-age=31536000; includeSubDomains"
# Mozilla's "intermediate" suites (Server Side TLS 5.7): what the healthy blocks offer.
MODERN_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                  "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
# RFC 2409 6.2, the 1024-bit MODP group ("Oakley group 2"): a well-known small DH group.
_OAKLEY2 = int("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
               "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
               "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF", 16)
HANG_SECONDS = 60.0
HUGE_CRL_BYTES = 100 << 20
UNROUTABLE_CRL = "http://192.0.2.1/untrusted.crl"  # TEST-NET-1: must never be dialled


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    expect: tuple[str, ...]  # the finding codes `prober check` must report, exactly
    status: str
    contract: dict[str, Any] = field(default_factory=dict)  # extra tls: keys of the probes.yaml entry
    block: str = ""  # a server block name when several cases share one (mtls)

    @property
    def hostname(self) -> str:
        return f"{self.name}.{DOMAIN}"


CASES: tuple[Case, ...] = (
    Case("ecdsa-only", "ECDSA chain from a strict private CA, a CRL that lists it as good", (), "ok"),
    Case("rsa-4096", "RSA-4096 leaf and intermediate", (), "ok"),
    Case("strict-private", "a second private CA with strict extensions", (), "ok"),
    Case("rsa-1024", "leaf with a 1024-bit RSA key", ("tls.weak_key",), "critical"),
    Case("rsa-512", "leaf with a 512-bit RSA key (made by openssl; cryptography will not)", ("tls.weak_key",),
         "critical"),
    Case("rsa-1024-allowed", "the same key, the contract allows 1024 bits", (), "ok",
         contract={"min_rsa_bits": 1024}, block="rsa-1024"),
    Case("sha1-chain", "leaf and intermediate signed with SHA-1", ("tls.weak_signature",) * 2, "critical"),
    Case("md5-leaf", "leaf signed with MD5", ("tls.weak_signature",), "critical"),
    Case("revoked-crl", "leaf listed in its CRL", ("tls.revoked",), "critical"),
    Case("revoked-ocsp", "leaf the OCSP responder says is revoked", ("tls.revoked",), "critical"),
    Case("dual-cert", "ECDSA certificate valid (OCSP: good), the RSA one for RSA-only clients expired",
         ("tls.expired",),
         "critical"),
    Case("tls10-only", "speaks only TLS 1.0", ("tls.handshake_failed", "tls.weak_protocol"), "critical"),
    Case("dh-1024", "only DHE with a 1024-bit group", ("tls.weak_dh",), "critical"),
    Case("dh-1024-fallback", "ECDHE first, DHE with a 1024-bit group as a fallback", ("tls.weak_dh",), "warning"),
    Case("static-rsa", "only static-RSA key exchange, TLS 1.2", ("tls.weak_cipher",), "critical"),
    Case("cbc-sha1", "modern suites plus ECDHE with CBC-SHA1", ("tls.weak_cipher",), "warning"),
    Case("mtls", "ssl_verify_client on; the contract gives no certificate", ("tls.client_cert_required",),
         "critical"),
    Case("mtls-with-cert", "ssl_verify_client on; the contract gives one", (), "ok", block="mtls"),
    Case("mtls-optional-down", "ssl_verify_client optional and /healthz 503: a health failure, not mTLS",
         ("http.health_failed",), "critical"),
    Case("old-private-ca", "private CA whose basicConstraints is not critical (old openssl.cnf)",
         ("tls.profile_violation",), "warning"),
    Case("crl-hang", "the CRL URL never answers", ("tls.revocation_unknown",), "warning"),
    Case("crl-huge", "the CRL is 100 MB", ("tls.revocation_unknown",), "warning"),
    Case("crl-wrong-key", "the CRL is signed by another key", ("tls.revocation_unknown",), "warning"),
    Case("self-signed-foreign-crl", "self-signed leaf whose CRL URL points off loopback", ("tls.untrusted",),
         "critical"),
)
BY_NAME: dict[str, Case] = {c.name: c for c in CASES}


def _days(n: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=n)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _cdp(url: str) -> tuple[x509.ExtensionType, bool]:
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
    return x509.CRLDistributionPoints([point]), False


def _aia(url: str) -> tuple[x509.ExtensionType, bool]:
    return x509.AuthorityInformationAccess([x509.AccessDescription(
        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))]), False


class Catalogue:
    """The PKI, files and nginx config of every case; the test starts the servers."""

    def __init__(self, workdir: Path, addresses: dict[str, str], tls_port: int, http_port: int,
                 crl_base: str, ocsp_url: str, openssl: str = "openssl") -> None:
        self.openssl = openssl
        self.dir = workdir
        self.pki = workdir / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.addresses, self.tls_port, self.http_port = addresses, tls_port, http_port
        self.crl_base, self.ocsp_url = crl_base.rstrip("/"), ocsp_url
        self.crls: dict[str, tuple[bytes, float]] = {}  # path -> (body, delay)
        self.blocks: dict[str, str] = {}
        self._pki()
        self._cases()

    # --------------------------------------------------------------------- PKI
    def _pki(self) -> None:
        self.ec_root = CA.root("catalogue EC root", not_before=_days(-400))
        self.ec = self.ec_root.intermediate("catalogue EC intermediate", not_before=_days(-300))
        self.rsa_root = CA.root("catalogue RSA root", key="rsa2048", not_before=_days(-400))
        self.rsa = self.rsa_root.intermediate("catalogue RSA intermediate", key="rsa2048", not_before=_days(-300))
        self.rsa4096 = self.rsa_root.intermediate("catalogue RSA-4096 intermediate", key="rsa4096",
                                                  not_before=_days(-300))
        self.strict_root = CA.root("catalogue strict private root", not_before=_days(-400))
        self.old_root = CA.root("catalogue old openssl.cnf root", not_before=_days(-400), critical_constraints=False)
        self.client_ca = CA.root("catalogue client CA")
        roots = (self.ec_root, self.rsa_root, self.strict_root, self.old_root)
        self.ca_file = self.pki / "roots.pem"
        self.ca_file.write_bytes(b"".join(r.pem() for r in roots))
        client = self.client_ca.issue(["probe.client.test"], cn="prober client", usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        self.client_cert, self.client_key = client.write(self.pki, "client")
        (self.pki / "client-ca.pem").write_bytes(self.client_ca.pem())
        self.wrong_key = new_key("ec")
        self._crl("good.crl", self.ec, [])

    def _crl(self, name: str, issuer: CA, revoked: list[x509.Certificate], signer=None, delay: float = 0.0) -> str:
        now = datetime.now(timezone.utc)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
                   .last_update(now - timedelta(minutes=5)).next_update(now + timedelta(days=7)))
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                .revocation_date(now - timedelta(hours=1))
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False).build())
        crl = builder.sign(signer or issuer.key, hashes.SHA256())
        self.crls[f"/{name}"] = (crl.public_bytes(serialization.Encoding.DER), delay)
        return f"{self.crl_base}/{name}"

    def ocsp_index(self, revoked: list[x509.Certificate], good: list[x509.Certificate]) -> Path:
        """openssl ocsp's index.txt: V (valid) and R (revoked) lines."""
        def line(cert: x509.Certificate, state: str) -> str:
            expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
            when = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%y%m%d%H%M%SZ") if state == "R" else ""
            subject = "/" + "/".join(reversed(cert.subject.rfc4514_string().split(",")))
            return f"{state}\t{expiry}\t{when}\t{cert.serial_number:X}\tunknown\t{subject}\n"
        path = self.pki / "index.txt"
        path.write_text("".join(line(c, "R") for c in revoked) + "".join(line(c, "V") for c in good))
        (self.pki / "index.txt.attr").write_text("unique_subject = no\n")
        return path

    def ocsp_argv(self, openssl: str, port: int) -> list[str]:
        """A real OCSP responder for the EC intermediate, signing with that CA's own key."""
        return [openssl, "ocsp", "-port", str(port), "-index", str(self.pki / "index.txt"),
                "-CA", str(self.pki / "ocsp-ca.pem"), "-rsigner", str(self.pki / "ocsp-signer.pem"),
                "-rkey", str(self.pki / "ocsp-signer.key"), "-nmin", "10", "-ignore_err"]

    def _openssl_rsa(self, bits: int) -> Any:
        """An RSA key below cryptography's 1024-bit generation floor, made by openssl and loaded."""
        import subprocess
        path = self.pki / f"rsa{bits}.key"
        subprocess.run([self.openssl, "genrsa", "-out", str(path), str(bits)], check=True, capture_output=True)
        return serialization.load_pem_private_key(path.read_bytes(), None)

    # ------------------------------------------------------------------- cases
    def _leaf(self, case: str, issuer: CA, key: Any = "ec", **kw: Any) -> Issued:
        return issuer.issue([f"{case}.{DOMAIN}"], key=key, **kw)

    def _cases(self) -> None:
        ocsp_revoked = self._leaf("revoked-ocsp", self.ec, extensions=[_aia(self.ocsp_url)])
        ocsp_good_issuer = self.ec  # one responder, one CA: the EC intermediate
        rsa4096 = self._leaf("rsa-4096", self.rsa4096, key="rsa4096")
        revoked = self._leaf("revoked-crl", self.ec, extensions=[_cdp(f"{self.crl_base}/revoked.crl")])
        self._crl("revoked.crl", self.ec, [revoked.cert])
        self._crl("wrong-key.crl", self.ec, [], signer=self.wrong_key)
        self.crls["/hang.crl"] = (b"", HANG_SECONDS)
        self.crls["/huge.crl"] = (b"\0" * HUGE_CRL_BYTES, 0.0)
        good = self._leaf("ecdsa-only", self.ec, extensions=[_cdp(f"{self.crl_base}/good.crl")])
        ecdsa_ok = self._leaf("dual-cert", self.ec, extensions=[_aia(self.ocsp_url)])
        rsa_expired = self._leaf("dual-cert", self.rsa, key="rsa2048", not_before=_days(-92), not_after=_days(-2))
        weak = self.rsa.issue([f"rsa-1024.{DOMAIN}", f"rsa-1024-allowed.{DOMAIN}"], key="rsa1024")
        tiny = self.rsa.issue([f"rsa-512.{DOMAIN}"], key=self._openssl_rsa(512))
        sha1_leaf = self._leaf("sha1-chain", self.rsa, key="rsa2048")
        sha1 = Issued(resign_legacy(sha1_leaf.cert, self.rsa.key), sha1_leaf.key,
                      (resign_legacy(self.rsa.cert, self.rsa_root.key),))
        md5_leaf = self._leaf("md5-leaf", self.rsa, key="rsa2048")
        md5 = Issued(resign_legacy(md5_leaf.cert, self.rsa.key, "md5"), md5_leaf.key, md5_leaf.chain)
        rsa_leaf = lambda name: self._leaf(name, self.rsa, key="rsa2048")  # noqa: E731
        dhparam = self.pki / "dh1024.pem"
        dhparam.write_bytes(dh.DHParameterNumbers(_OAKLEY2, 2).parameters().parameter_bytes(
            serialization.Encoding.PEM, serialization.ParameterFormat.PKCS3))
        level0 = "ssl_ciphers ECDHE+AESGCM:@SECLEVEL=0;"
        self.ocsp_index([ocsp_revoked.cert], [ecdsa_ok.cert])
        signer = ocsp_good_issuer
        (self.pki / "ocsp-ca.pem").write_bytes(signer.cert.public_bytes(serialization.Encoding.PEM))
        (self.pki / "ocsp-signer.pem").write_bytes(signer.cert.public_bytes(serialization.Encoding.PEM))
        (self.pki / "ocsp-signer.key").write_bytes(signer.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        blocks: dict[str, tuple[list[Issued], str]] = {
            "ecdsa-only": ([good], ""),
            "rsa-4096": ([rsa4096], ""),
            "strict-private": ([self.strict_root.issue([f"strict-private.{DOMAIN}"])], ""),
            "rsa-1024": ([weak], level0),
            "rsa-512": ([tiny], "ssl_protocols TLSv1.2;\n        " + level0),  # too small for RSA-PSS in TLS 1.3
            "sha1-chain": ([sha1], level0),
            "md5-leaf": ([md5], level0),
            "revoked-crl": ([revoked], ""),
            "revoked-ocsp": ([ocsp_revoked], ""),
            "dual-cert": ([ecdsa_ok, rsa_expired], ""),
            "tls10-only": ([rsa_leaf("tls10-only")], "ssl_protocols TLSv1;\n        ssl_ciphers DEFAULT:@SECLEVEL=0;"),
            "dh-1024": ([rsa_leaf("dh-1024")], f"ssl_protocols TLSv1.2;\n        ssl_dhparam {dhparam};\n"
                                               "        ssl_ciphers DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0;"),
            "dh-1024-fallback": ([rsa_leaf("dh-1024-fallback")],
                                 f"ssl_dhparam {dhparam};\n        ssl_prefer_server_ciphers on;\n"
                                 "        ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0;"),
            "static-rsa": ([rsa_leaf("static-rsa")], "ssl_protocols TLSv1.2;\n"
                                                     "        ssl_ciphers AES128-GCM-SHA256:AES128-SHA;"),
            "cbc-sha1": ([self._leaf("cbc-sha1", self.ec)],
                         "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA;"),
            "mtls": ([self.ec.issue([f"mtls.{DOMAIN}", f"mtls-with-cert.{DOMAIN}"])],
                     f"ssl_verify_client on;\n        ssl_client_certificate {self.pki / 'client-ca.pem'};"),
            "mtls-optional-down": ([self._leaf("mtls-optional-down", self.ec)],
                                   f"ssl_verify_client optional;\n        ssl_client_certificate "
                                   f"{self.pki / 'client-ca.pem'};\n        location = /healthz {{ return 503; }}"),
            "old-private-ca": ([self.old_root.issue([f"old-private-ca.{DOMAIN}"])], ""),
            "crl-hang": ([self._leaf("crl-hang", self.ec, extensions=[_cdp(f"{self.crl_base}/hang.crl")])], ""),
            "crl-huge": ([self._leaf("crl-huge", self.ec, extensions=[_cdp(f"{self.crl_base}/huge.crl")])], ""),
            "crl-wrong-key": ([self._leaf("crl-wrong-key", self.ec,
                                          extensions=[_cdp(f"{self.crl_base}/wrong-key.crl")])], ""),
            "self-signed-foreign-crl": ([self_signed([f"self-signed-foreign-crl.{DOMAIN}"],
                                                     extensions=[_cdp(UNROUTABLE_CRL)])], ""),
        }
        for name, (issued, extra) in blocks.items():
            self.blocks[name] = self._server(name, issued, extra)

    # ------------------------------------------------------------------- nginx
    def _server(self, name: str, issued: list[Issued], extra: str) -> str:
        certs = ""
        for n, one in enumerate(issued):
            cert, key = one.write(self.pki, f"{name}-{n}")
            certs += f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
        ciphers = "" if "ssl_ciphers" in extra else f"ssl_ciphers {MODERN_CIPHERS};"
        health = "" if "location = /healthz" in extra else '        location = /healthz { return 200 "ok\\n"; }\n'
        return f"""
    server {{
        listen {self.addresses[name]}:{self.tls_port} ssl default_server;
        server_name _;
{certs}        {ciphers}
        {extra}
        add_header Strict-Transport-Security "{HSTS}" always;
{health}    }}
"""

    def nginx_conf(self) -> str:
        plain = "".join(f"        listen {a}:{self.http_port};\n" for a in dict.fromkeys(self.addresses.values()))
        redirect = f"""
    server {{
{plain}        return 301 https://$host:{self.tls_port}$request_uri;
    }}
"""
        return nginx_conf(self.dir, "prober/lab/catalogue.py", redirect + "".join(self.blocks.values()))

    # ------------------------------------------------------------------ config
    def entry(self, case: Case, timeout: float, resolvers: list[dict[str, str]]) -> dict[str, Any]:
        tls: dict[str, Any] = {"port": self.tls_port, **case.contract}
        if case.name == "mtls-with-cert":
            tls["client_cert"] = {"cert_file": self.client_cert, "key_file": self.client_key}
        return {"hostname": case.hostname, "owner_team": f"team-{case.name}", "timeout": f"{timeout:g}s",
                "ca_file": str(self.ca_file), "resolvers": resolvers, "authoritative": "off",
                "tls": tls, "http": {"port": self.http_port, "health_path": "/healthz"}}

    def address_of(self, case: Case) -> str:
        return self.addresses[case.block or case.name]


def nginx_conf(d: Path, generator: str, servers: str, extra: str = "") -> str:
    """A foreground nginx config under directory d: its pid, lock, logs and temp paths there."""
    (d / "tmp").mkdir(exist_ok=True)
    temp = "\n".join(f"    {kind}_temp_path {d / 'tmp' / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
# generated by {generator}: every listener is on loopback
worker_processes 1;
error_log stderr info;
pid {d / 'nginx.pid'};
lock_file {d / 'nginx.lock'};
events {{ worker_connections 512; }}
http {{
    access_log {d / 'access.log'};
{temp}
    default_type text/plain;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {MODERN_CIPHERS};
    ssl_session_tickets off;
{extra}{servers}}}
"""


def block_names() -> list[str]:
    """One loopback address each."""
    return list(dict.fromkeys(c.block or c.name for c in CASES))
