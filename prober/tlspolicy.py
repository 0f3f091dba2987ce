"""What the clients that matter accept: key and signature floors, weak cipher suites, strict-profile defects.

One data table each, with its source beside it.  The contract may relax the key and
signature floors (tls.min_rsa_bits, tls.ec_curves, tls.allow_sha1) for internal
services that knowingly differ; the tables here are the defaults.
"""
from __future__ import annotations

# --------------------------------------------------------------------------
# Key and signature floors of the public Web PKI.
# Source: CA/Browser Forum Baseline Requirements 2.0, 6.1.5 (RSA modulus at least 2048 bits;
# ECDSA only on P-256, P-384, P-521) and 7.1.3.2 (signature algorithms: SHA-256/384/512 with
# RSA PKCS#1 v1.5, RSA-PSS or ECDSA); Mozilla Root Store Policy 2.9, 5.1 (the same keys; DSA
# not allowed); Chrome 57 / Firefox 51 stopped accepting SHA-1 chains (2017); MD5 since 2009.
# --------------------------------------------------------------------------
MIN_RSA_BITS = 2048
EC_CURVES: tuple[str, ...] = ("P-256", "P-384", "P-521")
# The curve names cryptography reports, in the spelling the contract and messages use.
CURVE_NAMES: dict[str, str] = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521",
                               "secp224r1": "P-224", "secp192r1": "P-192", "secp256k1": "secp256k1",
                               "brainpoolP256r1": "brainpoolP256r1", "brainpoolP384r1": "brainpoolP384r1",
                               "brainpoolP512r1": "brainpoolP512r1", "sect571r1": "B-571", "sect409r1": "B-409"}
KNOWN_CURVES: tuple[str, ...] = tuple(dict.fromkeys(CURVE_NAMES.values()))
# Key types that are never acceptable in a served certificate (Mozilla Root Store Policy 5.1).
FORBIDDEN_KEY_TYPES: frozenset[str] = frozenset({"DSA"})
# Key types accepted whatever their size (EdDSA is fixed-size; browsers do not accept it yet in
# the Web PKI, but private PKIs use it and OpenSSL-based clients accept it).
FIXED_SIZE_KEY_TYPES: frozenset[str] = frozenset({"Ed25519", "Ed448"})
# Signature hashes browsers refuse; SHA-1 can be allowed per contract (tls.allow_sha1).
WEAK_HASHES: dict[str, str] = {"md2": "MD2", "md4": "MD4", "md5": "MD5", "sha1": "SHA-1"}
# Signature algorithm OIDs whose hash cryptography cannot name (it has no MD2/MD4).
WEAK_SIGNATURE_OIDS: dict[str, str] = {"1.2.840.113549.1.1.2": "md2", "1.2.840.113549.1.1.3": "md4",
                                       "1.2.840.113549.1.1.4": "md5", "1.2.840.113549.1.1.5": "sha1",
                                       "1.2.840.10045.4.1": "sha1", "1.2.840.10040.4.3": "sha1",
                                       "1.3.14.3.2.29": "sha1"}

# --------------------------------------------------------------------------
# Strict-profile defects that OpenSSL-style path checks let through.
# Source: RFC 5280 4.2.1.9 (basicConstraints MUST be critical in CA certificates) and
# 4.2.1.1 (authorityKeyIdentifier: keyIdentifier MUST be present, MUST NOT be critical);
# OpenSSL 3 x509_vfy.c checks CA:TRUE but not its criticality (curl, Python's ssl, nginx
# upstreams, Java); Go's crypto/x509 likewise; the pyca/cryptography and rustls-webpki
# verifiers apply the CA/Browser Forum profile and refuse them.
# --------------------------------------------------------------------------
LENIENT_CLIENTS = "OpenSSL-based clients (curl, Python's ssl, nginx as a proxy) and Go accept it"
STRICT_CLIENTS = "verifiers that apply the Web PKI profile strictly (rustls/webpki, Python's cryptography) refuse it"
EXTENSION_NAMES: dict[str, str] = {
    "2.5.29.19": "basicConstraints", "2.5.29.35": "authorityKeyIdentifier", "2.5.29.14": "subjectKeyIdentifier",
    "2.5.29.15": "keyUsage", "2.5.29.37": "extendedKeyUsage", "2.5.29.17": "subjectAltName",
    "2.5.29.30": "nameConstraints", "2.5.29.36": "policyConstraints", "2.5.29.32": "certificatePolicies",
    "1.3.6.1.5.5.7.1.1": "authorityInfoAccess", "2.5.29.31": "cRLDistributionPoints",
}
# The verifier's own reason, by a fragment of its text -> words for a person.
VERIFIER_REASONS: tuple[tuple[str, str], ...] = (
    ("incorrect criticality", "marks it with the wrong criticality"),
    ("duplicate extension", "carries it twice"),
    ("missing required extension", "lacks it"),
    ("basicConstraints.cA", "is not a CA certificate"),
    ("path length", "exceeds the issuer's path length constraint"),
    ("name constraint", "violates the issuer's name constraints"),
    ("keyCertSign", "lacks keyCertSign in keyUsage"),
    ("EKU", "lacks serverAuth in extendedKeyUsage"),
    ("extendedKeyUsage", "lacks serverAuth in extendedKeyUsage"),
    ("self-issued", "is self-issued where the profile forbids it"),
    ("Forbidden public key", "has a public key the profile forbids"),
    ("Forbidden signature algorithm", "is signed with an algorithm the profile forbids"),
    ("signature", "has a signature that does not verify"),
)

# --------------------------------------------------------------------------
# Weak cipher suites, offered only in the periodic cipher-policy handshake (TLS 1.2 and below;
# TLS 1.3 has none of these).  OpenSSL cipher-string syntax.
# Source: Mozilla Server Side TLS 5.7 ("old" suites excluded from "intermediate"), RFC 7525
# 4.2 (no NULL, anonymous, export, RC4, 3DES; prefer forward secrecy), RFC 9325 4.1, NIST
# SP 800-52r2 3.3.1; Logjam (weakdh.org, 2015) for DHE groups under 2048 bits.
# --------------------------------------------------------------------------
# The main handshake's offer: CPython's own default suites and TLS 1.2 floor, set explicitly
# because distribution builds of Python inherit OpenSSL's system defaults instead, which still
# offer static RSA, CBC-SHA1 and TLS 1.0; the verdict must not depend on how Python was built.
CLIENT_CIPHERS = "@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
WEAK_CIPHERS = "kRSA:3DES:NULL:aNULL:eNULL:SHA1:RC4:EXPORT:@SECLEVEL=0"
# What a suite's name says about why it is weak, checked in order.
WEAK_CIPHER_REASONS: tuple[tuple[str, str], ...] = (
    ("NULL", "no encryption"), ("ADH", "no authentication (anonymous)"), ("AECDH", "no authentication (anonymous)"),
    ("EXP", "export-grade"), ("RC4", "RC4"), ("DES-CBC3", "3DES"), ("3DES", "3DES"),
)
# DHE-only offer for the DH group check: the server's group size shows in the handshake.
DHE_CIPHERS = "kDHE:kEDH:@SECLEVEL=0"
MIN_DH_BITS = 2048
# OpenSSL's default security level 2 (Debian, Ubuntu, RHEL 9 and so every default client
# built on them) refuses DH groups under 2048 bits; level 1 refuses under 1024.
DEFAULT_CLIENT_MIN_DH_BITS = 2048


def weak_cipher_reason(name: str, version: str | None) -> str:
    """Why an accepted suite is weak, in words."""
    for fragment, reason in WEAK_CIPHER_REASONS:
        if fragment in name:
            return reason
    if not any(kx in name for kx in ("ECDHE", "DHE", "EDH")) and version != "TLSv1.3":
        return "static RSA key exchange (no forward secrecy)"
    if name.endswith("SHA") and "CBC" not in name and "GCM" not in name and "CHACHA" not in name:
        return "CBC with SHA-1"
    return "a legacy suite"
