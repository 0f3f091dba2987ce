"""Properties: SAN matching against a reference reading of RFC 6125, and certificate
parsing that never raises on hostile bytes."""
from __future__ import annotations

import re
import socket
import time
import warnings
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prober import x509
from prober.lab.pki import CA
from prober.model import CertInfo, ChainVerdict

# --------------------------------------------------------------------------
# SAN matching
# --------------------------------------------------------------------------
_HOST_RE = re.compile(r"([a-z0-9_-]+\.)*[a-z0-9_-]+")


def _packed_ip(text: str) -> bytes | None:
    """An IP address as bytes, parsed by the C library rather than ipaddress."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return bytes([family]) + socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
    return None


def _fold(name: str) -> str | None:
    """ASCII-only case folding (bytes.lower touches nothing else); one trailing dot off."""
    if not name.isascii():
        return None
    name = name.encode().lower().decode()
    return name[:-1] if name.endswith(".") else name


def reference_match(hostname: str, sans: list[str]) -> bool:
    """RFC 6125 §6.4.3, written as plainly as possible: SAN-to-regex for wildcards."""
    host_ip = _packed_ip(hostname)
    if host_ip is not None:
        return host_ip in [_packed_ip(s) for s in sans]
    host = _fold(hostname)
    if host is None or not _HOST_RE.fullmatch(host):
        return False
    for san in sans:
        name = _fold(san)
        if name is None or _packed_ip(san) is not None:
            continue
        if name == host:
            return True
        rest = name[2:]
        if name.startswith("*.") and "*" not in rest and rest.count(".") >= 1:
            if re.fullmatch(r"[a-z0-9_-]+\." + re.escape(rest), host):
                return True
    return False


_LABELS = st.sampled_from(["a", "b", "A", "www", "xn--bcher-kva", "x_y", "-", "1", "127", "com", "test"])
_ODD_LABELS = st.sampled_from(["*", "f*", "*o", "", "\u212a", "a b", "ä", "*.*", "0", "::1", ":"])
_IPS = st.sampled_from(["127.0.0.1", "127.0.0.2", "::1", "0:0::1", "[::1]", "::ffff:127.0.0.1",
                        "01.2.3.4", "1.2.3.4.", "fe80::1%eth0", "2001:db8::1", "2001:DB8::1"])


_NAME_LABEL = st.one_of(_LABELS, _LABELS, _LABELS, _ODD_LABELS)


@st.composite
def _names(draw) -> str:
    labels = draw(st.lists(_NAME_LABEL, min_size=1, max_size=5))
    return ".".join(labels) + draw(st.sampled_from(["", "", "", "."]))


# Strategies are built once: building them per example is most of Hypothesis's cost.
_NAMES = _names()
_HOSTS = st.one_of(_NAMES, _NAMES, _IPS)
_SAN_KINDS = st.sampled_from(["same", "upper", "wild", "wild-deeper", "drop", "add", "partial",
                              "name", "ip", "text"])
_TEXT = st.text(max_size=12)


def _san_near(draw, host: str, kind: str) -> str:
    """A SAN near the hostname, so that matches are common."""
    labels = host.rstrip(".").split(".")
    derived = {"same": host, "upper": host.upper(), "wild": ".".join(["*", *labels[1:]]),
               "wild-deeper": ".".join(["*", *labels[2:]]), "drop": ".".join(labels[1:]),
               "partial": ".".join([labels[0][:1] + "*", *labels[1:]])}
    if kind in derived:
        return derived[kind]
    if kind == "add":
        return ".".join([draw(_LABELS), *labels])
    return draw({"name": _NAMES, "ip": _IPS, "text": _TEXT}[kind])


@st.composite
def _host_and_sans(draw) -> tuple[str, list[str]]:
    host = draw(_HOSTS)
    return host, [_san_near(draw, host, kind) for kind in draw(st.lists(_SAN_KINDS, max_size=4))]


@settings(max_examples=1200, deadline=None)
@given(_host_and_sans())
def test_san_matches_agrees_with_the_reference(case: tuple[str, list[str]]) -> None:
    host, sans = case
    assert x509.san_matches(host, sans) is reference_match(host, sans)


@settings(max_examples=200, deadline=None)
@given(_NAMES, st.lists(_NAMES, max_size=3))
def test_san_matches_is_case_and_trailing_dot_blind(host: str, sans: list[str]) -> None:
    expected = x509.san_matches(host, sans)
    assert x509.san_matches(host.upper() if host.isascii() else host, sans) is expected
    if not host.endswith(".") and _packed_ip(host) is None:  # "::1." is no address
        assert x509.san_matches(host + ".", sans) is expected


# --------------------------------------------------------------------------
# Hostile DER
# --------------------------------------------------------------------------
_NOW = time.time()
_ROOT = CA.root()
_INTER = _ROOT.intermediate()
_LEAF = _INTER.issue(["www.example.test", "*.apps.example.test"], ip_sans=["127.0.0.1"])
_RSA = _ROOT.issue(["rsa.example.test"], key="rsa2048",
                   not_after=datetime.now(timezone.utc) + timedelta(days=2))
_DERS = [*_LEAF.ders(), _ROOT.cert.public_bytes(serialization.Encoding.DER), _RSA.ders()[0]]
_STORE = x509.TrustStore.from_certificates([_ROOT.cert])


_DER_CHOICE = st.sampled_from(_DERS)
_MUTATIONS = st.sampled_from(["flip", "flip", "truncate", "splice", "insert", "delete", "length"])
_OFFSET = st.integers(0, 1 << 16)  # taken modulo the length: one strategy for every size
_SMALL = st.integers(1, 16)
_BIT = st.integers(0, 7)
_JUNK = st.binary(min_size=1, max_size=16)
_TAGS = st.sampled_from([0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0xff, 0x30, 0x04, 0x06])


@st.composite
def _mutated(draw) -> bytes:
    der = bytearray(draw(_DER_CHOICE))
    kind = draw(_MUTATIONS)
    if kind == "flip":
        for _ in range(draw(_SMALL) // 2 + 1):
            der[draw(_OFFSET) % len(der)] ^= 1 << draw(_BIT)
    elif kind == "truncate":
        der = der[:draw(_OFFSET) % (len(der) + 1)]
    elif kind == "splice":
        other = draw(_DER_CHOICE)
        der = der[:draw(_OFFSET) % (len(der) + 1)] + other[draw(_OFFSET) % (len(other) + 1):]
    elif kind == "insert":
        at = draw(_OFFSET) % (len(der) + 1)
        der[at:at] = draw(_JUNK)
    elif kind == "delete":
        at = draw(_OFFSET) % len(der)
        del der[at:at + draw(_SMALL)]
    else:  # a length byte or tag nudged near the start: the likeliest way into deep parser paths
        der[draw(_OFFSET) % min(len(der), 400)] = draw(_TAGS)
    return bytes(der)


_MUTATED = _mutated()


def _exercise(ders: list[bytes]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about e.g. negative serials
        certs, errors = x509.parse_chain(ders)
        assert len(certs) + len(errors) == len(ders)
        assert all(isinstance(e, str) and "\n" not in e for e in errors)
        for cert, position in zip(certs, x509.positions(certs)):
            info = x509.cert_info(cert, position, _NOW)
            assert isinstance(info, CertInfo) and isinstance(info.serial, str)
            assert all(isinstance(s, str) for s in info.sans)
            info.to_dict()
        if certs:
            verdict = x509.verify_chain(certs, "www.example.test", _STORE, _NOW)
            assert isinstance(verdict, ChainVerdict)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MUTATED)
def test_mutated_der_never_raises(der: bytes) -> None:
    _exercise([der])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_MUTATED, _DER_CHOICE), min_size=1, max_size=4))
def test_mutated_chains_never_raise(ders: list[bytes]) -> None:
    _exercise(ders)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    _exercise([data])
