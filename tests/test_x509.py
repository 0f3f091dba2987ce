"""Certificate analysis against real certificates from the lab PKI."""
from __future__ import annotations

import dataclasses
import os
import time
import warnings
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from prober import x509
from prober.lab.pki import CA, Issued, self_signed
from prober.model import EXPIRY_TIERS

NOW_DT = datetime.now(timezone.utc)
NOW = NOW_DT.timestamp()


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW is each test's own start: certificates the lab issues are dated from the real clock, so a
    time read once at collection would lag them on a long run."""
    global NOW_DT, NOW
    NOW_DT = datetime.now(timezone.utc)
    NOW = NOW_DT.timestamp()
DAY = 86400.0
HOST = "www.example.test"


@pytest.fixture(scope="module")
def root() -> CA:
    # Back-dated so that time-travel checks a few days into the past still have a valid anchor.
    return CA.root(not_before=NOW_DT - timedelta(days=1000))


@pytest.fixture(scope="module")
def inter(root: CA) -> CA:
    return root.intermediate(not_before=NOW_DT - timedelta(days=900))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, root: CA) -> str:
    return root.write_bundle(tmp_path_factory.mktemp("trust") / "root.pem")


@pytest.fixture(scope="module")
def store(bundle: str) -> x509.TrustStore:
    return x509.TrustStore.load(bundle)


@pytest.fixture(scope="module")
def public_store() -> x509.TrustStore:
    return x509.TrustStore.load(None)


@pytest.fixture(autouse=True)
def fresh_cache():
    x509.cache_clear()
    yield
    x509.cache_clear()


def served(issued: Issued) -> list[cx509.Certificate]:
    """What a server sends, round-tripped through DER like a handshake."""
    certs, errors = x509.parse_chain(issued.ders())
    assert errors == []
    return certs


def verdict(issued: Issued, store: x509.TrustStore, host: str = HOST, now: float | None = None):
    now = NOW if now is None else now
    return x509.verify_chain(served(issued), host, store, now)


# --------------------------------------------------------------------------
# verify_chain: every diagnosis
# --------------------------------------------------------------------------
def test_valid_chain_is_verified(inter: CA, store) -> None:
    v = verdict(inter.issue([HOST]), store)
    assert (v.verified, v.hostname_match, v.trusted, v.incomplete, v.self_signed_leaf) == (
        True, True, True, False, False)
    assert v.expired == () and v.not_yet_valid == () and v.error is None


def test_hostname_is_case_and_trailing_dot_insensitive(inter: CA, store) -> None:
    v = verdict(inter.issue([HOST]), store, host="WWW.Example.TEST.")
    assert v.verified and v.hostname_match


def test_wrong_san_is_a_mismatch_but_still_trusted(inter: CA, store) -> None:
    v = verdict(inter.issue(["other.example.test"]), store)
    assert not v.verified and not v.hostname_match
    assert v.trusted and not v.incomplete
    assert "subjectAltName" in v.error


@pytest.mark.parametrize("host, covered", [("shop.apps.example.test", True), ("a.b.apps.example.test", False),
                                           ("apps.example.test", False)])
def test_wildcard_covers_exactly_one_label(inter: CA, store, host: str, covered: bool) -> None:
    v = verdict(inter.issue(["*.apps.example.test"]), store, host=host)
    assert v.hostname_match is covered and v.verified is covered and v.trusted


def test_ip_hostname_matches_ip_sans_only(inter: CA, store) -> None:
    leaf = inter.issue(["localhost"], ip_sans=["127.0.0.1", "::1"])
    assert verdict(leaf, store, host="127.0.0.1").verified
    assert verdict(leaf, store, host="::1").verified
    v = verdict(leaf, store, host="127.0.0.2")
    assert not v.verified and not v.hostname_match and v.trusted


def test_expired_leaf(inter: CA, store) -> None:
    v = verdict(inter.issue([HOST], not_after=NOW_DT - timedelta(days=2)), store)
    assert not v.verified and v.hostname_match and v.trusted
    assert v.expired == (f"leaf CN={HOST}",) and v.not_yet_valid == ()
    assert v.error == f"the leaf CN={HOST} has expired"


def test_not_yet_valid_leaf(inter: CA, store) -> None:
    v = verdict(inter.issue([HOST], not_before=NOW_DT + timedelta(days=3)), store)
    assert not v.verified and v.trusted
    assert v.not_yet_valid == (f"leaf CN={HOST}",) and v.expired == ()


def test_expired_intermediate_is_named(root: CA, store) -> None:
    old = root.intermediate("old intermediate", not_before=NOW_DT - timedelta(days=400),
                            not_after=NOW_DT - timedelta(days=1))
    v = verdict(old.issue([HOST], not_before=NOW_DT - timedelta(days=30), days_valid=60), store)
    assert not v.verified and v.trusted and not v.incomplete
    assert v.expired == ("intermediate CN=old intermediate",)


def test_missing_intermediate_is_incomplete(inter: CA, store) -> None:
    v = verdict(inter.issue([HOST], include_chain=False), store)
    assert v.incomplete and not v.trusted and not v.verified
    assert v.hostname_match and not v.self_signed_leaf
    assert v.error


def test_intermediate_known_as_anchor_is_not_incomplete(tmp_path, inter: CA) -> None:
    ca_file = tmp_path / "inter.pem"
    ca_file.write_bytes(inter.pem())
    v = verdict(inter.issue([HOST], include_chain=False), x509.TrustStore.load(str(ca_file)))
    assert v.verified and not v.incomplete


def test_self_signed_leaf(store) -> None:
    leaf = self_signed([HOST])
    v = verdict(leaf, store)
    assert v.self_signed_leaf and not v.trusted and not v.incomplete and not v.verified
    assert v.hostname_match


def test_self_signed_leaf_pinned_in_ca_file_verifies(tmp_path) -> None:
    leaf = self_signed([HOST])
    certfile, _ = leaf.write(tmp_path, "pinned")
    v = verdict(leaf, x509.TrustStore.load(certfile))
    assert v.verified and v.self_signed_leaf


def test_private_ca_without_ca_file_is_untrusted(inter: CA, public_store) -> None:
    v = verdict(inter.issue([HOST]), public_store)
    assert not v.verified and not v.trusted and v.hostname_match
    assert v.incomplete  # the intermediate's issuer is neither served nor a public anchor


def test_served_untrusted_root_is_complete_but_untrusted(root: CA, inter: CA, public_store) -> None:
    leaf = inter.issue([HOST])
    chain = [*served(leaf), root.cert]
    assert x509.positions(chain) == ["leaf", "intermediate", "root"]
    v = x509.verify_chain(chain, HOST, public_store, NOW)
    assert not v.trusted and not v.incomplete and not v.verified


def test_extra_off_path_certificate_does_not_make_the_chain_incomplete(inter: CA, store) -> None:
    # A stray certificate whose issuer nobody knows, like a legacy cross-sign left in the bundle.
    stray = CA.root("retired root").intermediate("stray cross-sign").cert
    chain = [*served(inter.issue([HOST])), stray]
    v = x509.verify_chain(chain, HOST, store, NOW)
    assert v.verified and not v.incomplete


def test_expired_off_path_certificate_does_not_hide_trust(inter: CA, store) -> None:
    stray = CA.root("retired root").intermediate("expired stray", not_after=NOW_DT - timedelta(days=5)).cert
    chain = [*served(inter.issue(["other.example.test"])), stray]
    v = x509.verify_chain(chain, HOST, store, NOW)
    assert v.trusted and not v.incomplete and not v.hostname_match and not v.verified
    assert v.expired == ("intermediate CN=expired stray",)


def test_leaf_without_san_is_trusted_but_matches_nothing(inter: CA, store) -> None:
    v = verdict(inter.issue([], cn=HOST), store)
    assert not v.hostname_match and not v.verified and v.trusted


def test_two_intermediates_and_one_missing(root: CA, store) -> None:
    first = root.intermediate("first")
    second = first.intermediate("second")
    assert verdict(second.issue([HOST]), store).verified
    leaf = second.issue([HOST])
    v = x509.verify_chain([served(leaf)[0], second.cert], HOST, store, NOW)
    assert v.incomplete and not v.trusted


def test_empty_chain() -> None:
    v = x509.verify_chain([], HOST, x509.TrustStore.load(None), NOW)
    assert not v.verified and not v.trusted and v.error == "the server sent no certificate"


def test_invalid_hostname_gives_an_error_not_an_exception(inter: CA, store) -> None:
    v = verdict(inter.issue([HOST]), store, host="bad..name")
    assert not v.verified and not v.hostname_match and v.error


def test_rsa_chain(store, root: CA) -> None:
    leaf = root.intermediate(key="rsa2048").issue([HOST], key="rsa2048")
    assert verdict(leaf, store).verified
    info = x509.cert_info(served(leaf)[0], "leaf", NOW)
    assert (info.key_type, info.key_size, info.signature_algorithm) == ("RSA", 2048, "sha256WithRSAEncryption")


# --------------------------------------------------------------------------
# cert_info, positions, parse_chain
# --------------------------------------------------------------------------
def test_cert_info_fields(inter: CA) -> None:
    leaf = inter.issue([HOST, "alt.example.test"], ip_sans=["127.0.0.1"], days_valid=10)
    cert = served(leaf)[0]
    info = x509.cert_info(cert, "leaf", time.time())
    assert info.subject == f"CN={HOST},O=prober lab"
    assert info.issuer == "CN=prober test intermediate,O=prober lab"
    assert info.sans == (HOST, "alt.example.test", "127.0.0.1")
    assert info.serial == format(cert.serial_number, "x")
    assert info.not_after == cert.not_valid_after_utc.timestamp()
    assert info.not_before == cert.not_valid_before_utc.timestamp()
    assert 9.99 < info.days_left <= 10
    assert (info.key_type, info.key_size, info.signature_algorithm) == ("EC", 256, "ecdsa-with-SHA256")
    assert info.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert not info.self_signed and info.position == "leaf"


def test_cert_info_of_self_signed_and_ed25519() -> None:
    cert = self_signed(["ed.example.test"], key="ed25519").cert
    info = x509.cert_info(cert, "leaf", NOW)
    assert info.self_signed and (info.key_type, info.key_size, info.signature_algorithm) == ("Ed25519", 256, "ed25519")


def test_positions(root: CA, inter: CA) -> None:
    leaf = inter.issue([HOST])
    assert x509.positions([]) == []
    assert x509.positions([leaf.cert]) == ["leaf"]
    assert x509.positions([leaf.cert, inter.cert]) == ["leaf", "intermediate"]
    # A self-signed *leaf* alone is still the leaf.
    assert x509.positions([self_signed([HOST]).cert]) == ["leaf"]
    # Subject == issuer but not self-signed: an intermediate, not a root.
    assert x509.positions([leaf.cert, inter.cert, root.cert]) == ["leaf", "intermediate", "root"]
    # Subject == issuer, but another key signed it: an intermediate, not a root.
    impostor = _leaf_builder(inter, root.cert.subject, root.cert.subject).sign(inter.key, hashes.SHA256())
    assert x509.positions([leaf.cert, inter.cert, impostor]) == ["leaf", "intermediate", "intermediate"]
    assert not x509.cert_info(impostor, "intermediate", NOW).self_signed


def test_parse_chain_reports_bad_certificates(inter: CA) -> None:
    good = inter.issue([HOST]).ders()[0]
    certs, errors = x509.parse_chain([good, b"not a certificate", good[:50]])
    assert len(certs) == 1 and len(errors) == 2
    assert errors[0].startswith("served certificate #1 could not be parsed")
    assert errors[1].startswith("served certificate #2 could not be parsed")


def _leaf_builder(inter: CA, subject: cx509.Name | None = None, issuer: cx509.Name | None = None
                  ) -> cx509.CertificateBuilder:
    """A bare builder for certificates the lab PKI refuses to make."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (cx509.CertificateBuilder()
            .subject_name(subject or cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
            .issuer_name(issuer or inter.cert.subject).public_key(key.public_key())
            .serial_number(cx509.random_serial_number())
            .not_valid_before(NOW_DT - timedelta(days=1)).not_valid_after(NOW_DT + timedelta(days=1)))


def _der(cert: cx509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_cert_info_survives_an_unparsable_san_extension(inter: CA) -> None:
    garbage = cx509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x01\x01")
    cert = _leaf_builder(inter).add_extension(garbage, critical=False).sign(inter.key, hashes.SHA256())
    info = x509.cert_info(cert, "leaf", NOW)
    assert info.sans == () and info.subject == "CN=odd"
    v = x509.verify_chain([cert, inter.cert], "odd", x509.TrustStore.load(None), NOW)
    assert not v.verified and not v.hostname_match and v.error


def test_cert_info_survives_negative_serial_and_unknown_key(inter: CA) -> None:
    cert = _leaf_builder(inter).sign(inter.key, hashes.SHA256())
    der = _der(cert)
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8, "big")
    at = der.index(b"\x02" + bytes([len(serial)]) + serial) + 2
    der = der[:at] + bytes([serial[0] | 0x80]) + der[at + 1:]
    ec_oid = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey
    der = der.replace(ec_oid, ec_oid[:-1] + b"\x7f")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about the negative serial
        certs, errors = x509.parse_chain([der])
        info = x509.cert_info(certs[0], "leaf", NOW)
    assert errors == []
    assert info.serial.startswith("-")
    assert info.key_type == "1.2.840.10045.2.127" and info.key_size is None
    assert not info.self_signed


def test_cert_info_with_a_huge_san_list(inter: CA) -> None:
    names = [f"h{i}.example.test" for i in range(3000)]
    leaf = inter.issue(names)
    info = x509.cert_info(served(leaf)[0], "leaf", NOW)
    assert len(info.sans) == 3000 and info.sans[-1] == "h2999.example.test"
    assert x509.san_matches("h2999.example.test", info.sans)


def test_cert_info_names_other_san_kinds(inter: CA) -> None:
    sans = cx509.SubjectAlternativeName([cx509.DNSName("d.example.test"), cx509.RFC822Name("a@example.test"),
                                         cx509.UniformResourceIdentifier("https://example.test/")])
    cert = _leaf_builder(inter).add_extension(sans, critical=False).sign(inter.key, hashes.SHA256())
    info = x509.cert_info(cert, "leaf", NOW)
    assert info.sans == ("d.example.test", "email:a@example.test", "URI:https://example.test/")


# --------------------------------------------------------------------------
# san_matches: examples (the properties are in test_x509_fuzz.py)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("host, sans, expected", [
    ("a.com", ["a.com"], True),
    ("A.COM", ["a.com."], True),
    ("x.a.com", ["*.a.com"], True),
    ("x.y.a.com", ["*.a.com"], False),
    ("a.com", ["*.a.com"], False),
    ("x.com", ["*.com"], False),
    ("foo.a.com", ["f*.a.com"], False),
    ("foo.a.com", ["*o.a.com"], False),
    ("x.a.com", ["x.*.com"], False),
    ("xn--bcher-kva.a.com", ["*.a.com"], True),
    ("127.0.0.1", ["127.0.0.1"], True),
    ("127.0.0.1", ["*.0.0.1"], False),
    ("::1", ["0:0::1"], True),
    ("[::1]", ["::1"], True),
    ("a.com", ["email:a.com", "URI:a.com"], False),
    ("k.com", ["\u212a.com"], False),  # the Kelvin sign lower-cases to "k"; only ASCII folds
    ("a..com", ["a..com"], False),
    ("", [""], False),
    ("a.com", [], False),
])
def test_san_matches_examples(host: str, sans: list[str], expected: bool) -> None:
    assert x509.san_matches(host, sans) is expected


# --------------------------------------------------------------------------
# expiry tiers
# --------------------------------------------------------------------------
@pytest.mark.parametrize("days_left, tier", [
    (90, None), (30.01, None), (30, "warning"), (15, "warning"), (14, "high"), (7.5, "high"),
    (7, "urgent"), (3.5, "urgent"), (3, "incident"), (0.5, "incident"), (0, "outage"), (-10, "outage"),
])
def test_expiry_tier(days_left: float, tier: str | None) -> None:
    assert x509.expiry_tier(days_left, (30, 14, 7, 3, 0)) == tier


def test_expiry_tier_with_custom_and_short_thresholds() -> None:
    assert x509.expiry_tier(50, (60, 20, 10, 5, 0)) == "warning"
    assert x509.expiry_tier(4, (60, 20, 10, 5, 0)) == "incident"
    assert x509.expiry_tier(10, (30, 14)) == "high"
    assert x509.expiry_tier(-1, (30,)) == EXPIRY_TIERS[-1]


def test_leaf_expiring_in_n_days_lands_in_its_tier(inter: CA) -> None:
    info = x509.cert_info(served(inter.issue([HOST], days_valid=6))[0], "leaf", NOW)
    assert x509.expiry_tier(info.days_left, (30, 14, 7, 3, 0)) == "urgent"


# --------------------------------------------------------------------------
# TrustStore
# --------------------------------------------------------------------------
def test_trust_store_is_built_once_per_configuration(bundle: str) -> None:
    assert x509.TrustStore.load(None) is x509.TrustStore.load(None)
    store = x509.TrustStore.load(bundle)
    assert store is x509.TrustStore.load(bundle)
    assert store.id != x509.TrustStore.load(None).id
    assert len(store.anchors) == len(x509.TrustStore.load(None).anchors) + 1
    assert store.ca_file == os.path.abspath(bundle)


def test_trust_store_id_is_stable_and_content_based(root: CA) -> None:
    a = x509.TrustStore.from_certificates([root.cert])
    b = x509.TrustStore.from_certificates([root.cert, root.cert])
    assert a.id == b.id and len(b.anchors) == 1
    assert x509.TrustStore.from_certificates([CA.root().cert]).id != a.id


def test_trust_store_reloads_when_ca_file_changes(tmp_path, root: CA) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(root.pem())
    first = x509.TrustStore.load(str(path))
    other = CA.root("another root")
    path.write_bytes(other.pem())
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = x509.TrustStore.load(str(path))
    assert second is not first and second.id != first.id
    assert other.cert in second.anchors and root.cert not in second.anchors


def test_a_broken_rewrite_keeps_the_last_good_store(tmp_path, root: CA) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(root.pem())
    good = x509.TrustStore.load(str(path))
    path.write_bytes(root.pem()[:40])  # caught half-written
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert x509.TrustStore.load(str(path)) is good
    path.unlink()
    assert x509.TrustStore.load(str(path)) is good


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it"), (b"", "holds no PEM certificate"), (b"garbage\n", "holds no PEM certificate"),
])
def test_bad_ca_file_is_one_clear_sentence(tmp_path, content: bytes | None, message: str) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(x509.TrustStoreError, match=message) as err:
        x509.TrustStore.load(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------
# The verification cache
# --------------------------------------------------------------------------
def test_cached_and_uncached_agree_on_every_variant(root: CA, inter: CA, store, public_store) -> None:
    variants = [inter.issue([HOST]), inter.issue(["other.example.test"]), inter.issue([HOST], include_chain=False),
                inter.issue([HOST], not_after=NOW_DT - timedelta(days=1)), self_signed([HOST]),
                inter.issue([HOST], not_before=NOW_DT + timedelta(days=1)), inter.issue(["*.example.test"])]
    for issued in variants:
        chain = served(issued)
        for s in (store, public_store):
            for now in (NOW, NOW + 30 * DAY, NOW + 400 * DAY):
                expected = x509.verify_chain(chain, HOST, s, now)
                assert x509.verify_chain_cached(chain, HOST, s, now) == expected
                assert x509.verify_chain_cached(chain, HOST, s, now) == expected


def test_cache_hits_while_the_answer_cannot_change(inter: CA, store) -> None:
    chain = served(inter.issue([HOST]))
    first = x509.verify_chain_cached(chain, HOST, store, NOW)
    again = x509.verify_chain_cached(chain, HOST, store, NOW + 60)
    assert first is again and first.verified
    info = x509.cache_info()
    assert (info.hits, info.misses, info.size, info.maxsize) == (1, 1, 1, 32768)
    x509.verify_chain_cached(chain, "other.example.test", store, NOW)
    assert x509.cache_info().size == 2


def test_cached_valid_result_expires_with_the_certificate(inter: CA, store) -> None:
    chain = served(inter.issue([HOST], days_valid=2))
    assert x509.verify_chain_cached(chain, HOST, store, NOW).verified
    assert x509.verify_chain_cached(chain, HOST, store, NOW + DAY).verified
    assert x509.cache_info().hits == 1
    later = NOW + 3 * DAY
    cached = x509.verify_chain_cached(chain, HOST, store, later)
    assert cached == x509.verify_chain(chain, HOST, store, later)
    assert not cached.verified and cached.expired == (f"leaf CN={HOST}",)
    assert x509.cache_info().hits == 1  # the later call was recomputed, not served from the cache


def test_expired_results_are_not_cached(inter: CA, store) -> None:
    chain = served(inter.issue([HOST], not_after=NOW_DT - timedelta(days=1)))
    x509.verify_chain_cached(chain, HOST, store, NOW)
    x509.verify_chain_cached(chain, HOST, store, NOW)
    assert x509.cache_info().size == 0 and x509.cache_info().hits == 0


def test_store_change_changes_the_cached_answer(tmp_path, inter: CA, public_store) -> None:
    chain = served(inter.issue([HOST]))
    assert not x509.verify_chain_cached(chain, HOST, public_store, NOW).trusted
    path = tmp_path / "ca.pem"
    path.write_bytes(b"")
    inter.write_bundle(path)
    assert x509.verify_chain_cached(chain, HOST, x509.TrustStore.load(str(path)), NOW).verified
    # The same file rewritten with another root: a new store id, a new answer.
    path.write_bytes(CA.root("a different root").pem())
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not x509.verify_chain_cached(chain, HOST, x509.TrustStore.load(str(path)), NOW).trusted
    assert x509.cache_info().hits == 0


def test_cache_is_bounded(inter: CA, store, monkeypatch) -> None:
    monkeypatch.setattr(x509._CACHE, "maxsize", 3)
    chain = served(inter.issue([HOST]))
    for i in range(6):
        x509.verify_chain_cached(chain, f"h{i}.example.test", store, NOW)
    assert x509.cache_info().size == 3
    # The oldest were evicted; the newest is still there.
    x509.verify_chain_cached(chain, "h5.example.test", store, NOW)
    x509.verify_chain_cached(chain, "h0.example.test", store, NOW)
    assert x509.cache_info().hits == 1


# ----------------------------------------------------------------- facts kept per served DER
def test_a_served_certificate_is_parsed_once_and_its_facts_are_kept(inter: CA):
    """The same DER on the next probe gives the same parsed certificate and the same facts,
    with days_left as of that probe."""
    x509.known_clear()
    ders = inter.issue([HOST], days_valid=40).ders()
    first, errors = x509.parse_chain(ders)
    again, _ = x509.parse_chain([bytes(bytearray(d)) for d in ders])  # new bytes objects, as each handshake gives
    assert not errors and [a is b for a, b in zip(first, again)] == [True, True]
    info_now = x509.cert_info(again[0], "leaf", NOW)
    info_later = x509.cert_info(again[0], "leaf", NOW + 10 * DAY)
    assert abs(info_now.days_left - info_later.days_left - 10) < 1e-9
    assert dataclasses.replace(info_later, days_left=info_now.days_left) == info_now
    fresh = cx509.load_der_x509_certificate(ders[0])  # not met through parse_chain: computed, not kept
    assert x509.cert_info(fresh, "leaf", NOW) == info_now
    assert x509.fingerprint(fresh) == x509.fingerprint(again[0]) == info_now.fingerprint_sha256
    assert x509.cert_info(again[0], "intermediate", NOW).position == "intermediate"  # kept per position


def test_the_kept_facts_are_bounded(inter: CA, monkeypatch):
    x509.known_clear()
    monkeypatch.setattr(x509, "_KNOWN_MAX", 3)
    issued = [inter.issue([f"h{i}.example.test"]) for i in range(7)]
    for one in issued:
        certs, _ = x509.parse_chain(one.ders()[:1])
        assert x509.cert_info(certs[0], "leaf", NOW).sans == (one.cert.extensions.get_extension_for_class(
            cx509.SubjectAlternativeName).value.get_values_for_type(cx509.DNSName)[0],)
        assert len(x509._known_der) <= 3 and len(x509._known_id) <= 3
    x509.known_clear()
