"""Hostile certificates that are properly signed: parsing, reporting and verification never raise.

tests/test_x509_fuzz.py mutates whole DER certificates; nearly every mutation
there breaks the signature or the outer structure, so verification stops at
its first check.  Here each hostile certificate is signed again by the test
intermediate after it is damaged, so the verifier has to go all the way in:
path building, the extensions it must understand, names, validity.  Two kinds:

- the TBS (to-be-signed) bytes of a good leaf, mutated, then re-signed;
- leaves built field by field with odd serials, validity windows, names and
  extensions whose contents are arbitrary bytes under the OIDs a verifier
  must parse (subjectAltName, basicConstraints, keyUsage, nameConstraints...).

Each chain then goes through everything the TLS layer does with a served
chain: x509.parse_chain, positions, cert_info (and its JSON form),
verify_chain (cached and not), and the TLS layer's findings.
"""
from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prober import x509
from prober.lab.pki import CA
from prober.layers import tls
from prober.model import CATALOGUE, ChainVerdict, Endpoint, TlsResult, TlsTarget

HOST = "www.example.test"
_NOW_DT = datetime.now(timezone.utc)
_NOW = _NOW_DT.timestamp()
_ROOT = CA.root("der fuzz root")
_INTER = _ROOT.intermediate("der fuzz intermediate")
_GOOD = _INTER.issue([HOST, "*.apps.example.test"])
_INTER_DER = _INTER.cert.public_bytes(serialization.Encoding.DER)
_STORE = x509.TrustStore.from_certificates([_ROOT.cert])
_LEAF_KEY = ec.generate_private_key(ec.SECP256R1())
_ENDPOINT = Endpoint(hostname=HOST, tls_min_version="1.2")
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")  # AlgorithmIdentifier ecdsa-with-SHA256
_SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ DER by hand
def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _length(len(body)) + body


def _signed(tbs: bytes) -> bytes:
    """A Certificate around any TBS bytes, with a valid signature by the test intermediate."""
    signature = _INTER.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + _ECDSA_SHA256 + _tlv(0x03, b"\x00" + signature))


# -------------------------------------------------------------- hostile leaves
_TBS = _GOOD.cert.tbs_certificate_bytes
_EXTENSIONS_AT = _TBS.find(b"\x06\x03\x55\x1d")  # the first extension's OID (2.5.29.x)


@st.composite
def damaged_tbs(draw) -> bytes:
    """The good leaf's TBS with a few edits: bits, bytes, cuts, insertions, a repeated run.

    Edits that keep every length right (a bit, a byte) go mostly into the extensions, where
    the outer structure survives them and the verifier has to read what they did."""
    tbs = bytearray(_TBS)
    structural = draw(st.booleans())
    for _ in range(1 if structural else draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["cut", "insert", "repeat"] if structural else ["bit", "byte"]))
        at = draw(st.integers(0 if structural else _EXTENSIONS_AT, len(tbs) - 1))
        if edit == "bit":
            tbs[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "byte":
            tbs[at] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x04, 0x05, 0x13, 0x17, 0x18, 0x30, 0x7F,
                                            0x80, 0x81, 0x82, 0xA0, 0xA3, 0xFF]))
        elif edit == "cut":
            del tbs[at:at + draw(st.integers(1, 24))]
        elif edit == "insert":
            tbs[at:at] = draw(st.binary(min_size=1, max_size=24))
        else:  # e.g. an extension twice, or a name attribute repeated
            start = draw(st.integers(0, len(tbs) - 1))
            tbs[at:at] = tbs[start:start + draw(st.integers(1, 80))]
    return bytes(tbs)


_OIDS = (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE,
         ExtensionOID.EXTENDED_KEY_USAGE, ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
         ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.CERTIFICATE_POLICIES, ExtensionOID.POLICY_CONSTRAINTS,
         ExtensionOID.AUTHORITY_INFORMATION_ACCESS, cx509.ObjectIdentifier("1.3.6.1.4.1.99999.1"))
_SAN_POOL = (HOST, "*.example.test", "*.test", "WWW.EXAMPLE.TEST", "www.example.test.", "xn--bcher-kva.test",
             "other.test", "*", "127.0.0.1", "::1", "a..b")
_TIMES = (datetime(1950, 1, 1, tzinfo=timezone.utc), datetime(2049, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
          datetime(2050, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
          _NOW_DT - timedelta(days=2), _NOW_DT - timedelta(seconds=1), _NOW_DT + timedelta(seconds=1),
          _NOW_DT + timedelta(days=90))


@st.composite
def odd_extensions(draw) -> list[tuple[cx509.ExtensionType, bool]]:
    """Raw extension values (anything at all) under OIDs a verifier has to parse, or real ones."""
    out: list[tuple[cx509.ExtensionType, bool]] = []
    oids = draw(st.lists(st.sampled_from(_OIDS), unique=True, max_size=4))
    if draw(st.integers(0, 2)) > 0 and ExtensionOID.SUBJECT_ALTERNATIVE_NAME not in oids:
        oids.insert(0, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)  # a leaf without one fails before anything else
    for oid in oids:
        critical = draw(st.booleans())
        if oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME and draw(st.integers(0, 2)) > 0:
            names = [cx509.DNSName(n) for n in draw(st.lists(st.sampled_from(_SAN_POOL), min_size=1, max_size=4))]
            out.append((cx509.SubjectAlternativeName(names), critical))
        elif oid == ExtensionOID.BASIC_CONSTRAINTS and draw(st.booleans()):
            ca = draw(st.booleans())
            out.append((cx509.BasicConstraints(ca, draw(st.one_of(st.none(), st.integers(0, 3))) if ca else None),
                        critical))
        elif oid == ExtensionOID.EXTENDED_KEY_USAGE and draw(st.booleans()):
            usage = draw(st.sampled_from([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]))
            out.append((cx509.ExtendedKeyUsage([usage]), critical))
        else:
            raw = draw(st.one_of(st.binary(max_size=48), st.sampled_from([b"", b"\x30\x00", b"\x30\x80\x00\x00",
                                                                           b"\x04\x01", b"\x30\x03\x01\x01\xff"])))
            out.append((cx509.UnrecognizedExtension(oid, raw), critical))
    return out


def _time(t: datetime) -> bytes:
    """A validity time as RFC 5280 encodes it: UTCTime through 2049, GeneralizedTime after."""
    if t.year < 2050:
        return _tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, t.strftime("%Y%m%d%H%M%SZ").encode())


@st.composite
def odd_leaf(draw) -> bytes:
    """A leaf built field by field; now and then with its validity window turned inside out."""
    # Mostly sane where it does not matter, so that the verifier gets as far as the extensions.
    usual = draw(st.integers(0, 3)) > 0
    start, end = (_TIMES[4], _TIMES[7]) if usual else \
        sorted(draw(st.lists(st.sampled_from(_TIMES), min_size=2, max_size=2, unique=True)))
    cn = draw(st.sampled_from([HOST, "x", "*.example.test", "ünïcode.test", "a" * 64]))
    issuer = _INTER.cert.subject if usual else draw(st.sampled_from([_ROOT.cert.subject, cx509.Name([])]))
    builder = (cx509.CertificateBuilder()
               .subject_name(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(issuer)
               .public_key(_LEAF_KEY.public_key())
               .serial_number(draw(st.sampled_from([1, 2**64, 2**158 + 12345, 0xFF])))
               .not_valid_before(start).not_valid_after(end))
    for extension, critical in draw(odd_extensions()):
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(_INTER.key, hashes.SHA256())
    if usual or draw(st.booleans()):
        return cert.public_bytes(serialization.Encoding.DER)
    window = _time(start) + _time(end)  # the builder refuses not_after < not_before; DER does not
    tbs = cert.tbs_certificate_bytes
    assert window in tbs
    return _signed(tbs.replace(window, _time(end) + _time(start)))


# ------------------------------------------------------------------- exercise
def _exercise(ders: list[bytes]) -> ChainVerdict | None:
    """Everything the TLS layer does with a served chain; returns the verdict it reached."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about e.g. odd serials
        certs, errors = x509.parse_chain(ders)
        assert len(certs) + len(errors) == len(ders)
        infos = tuple(x509.cert_info(c, p, _NOW) for c, p in zip(certs, x509.positions(certs)))
        for info in infos:
            assert isinstance(info.serial, str) and all(isinstance(s, str) for s in info.sans)
            info.to_dict()
        if not certs:
            return None
        verdict = x509.verify_chain(certs, HOST, _STORE, _NOW)
        assert x509.verify_chain_cached(certs, HOST, _STORE, _NOW) == verdict
        if verdict.verified:  # a trusted path from a leaf valid now that covers the name
            assert verdict.trusted and verdict.hostname_match and x509.san_matches(HOST, list(infos[0].sans))
            # (an extra served certificate off the path may still be listed as expired)
            assert not [name for name in verdict.expired + verdict.not_yet_valid if name.startswith("leaf")]
    target = TlsTarget(address="127.0.0.1", port=443, connected=True, handshake=True, chain=infos,
                       verdict=verdict, version="TLSv1.3")
    for finding in tls.judge(_ENDPOINT, TlsResult(targets=(target,))):
        assert finding.code in CATALOGUE and "\n" not in finding.message
    return verdict


def test_resigning_is_faithful() -> None:
    """The control: the good leaf's TBS signed again verifies, so damage is what the verifier sees."""
    verdict = _exercise([_signed(_GOOD.cert.tbs_certificate_bytes), _INTER_DER])
    assert verdict is not None and verdict.verified


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_tbs())  # most edits still break the DER: more examples, so that enough of them verify
def test_damaged_then_resigned_leaf_never_raises(tbs: bytes) -> None:
    _exercise([_signed(tbs), _INTER_DER])


@_SETTINGS
@given(odd_leaf())
def test_odd_but_signed_leaf_never_raises(der: bytes) -> None:
    _exercise([der, _INTER_DER])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(odd_leaf(), damaged_tbs().map(_signed), st.just(_INTER_DER)), min_size=1, max_size=4))
def test_hostile_chains_in_any_order_never_raise(ders: list[bytes]) -> None:
    _exercise(ders)
