"""Renewal assurance: lifetime-relative tiers, the CA's window (RFC 9773) and CAA (RFC 8659).

The ARI tests talk to the lab responder (prober/lab/ari.py) on loopback; the
CAA permission logic is checked against RFC 8659's rules.  The end-to-end tier
(tests/e2e/test_certificate_renewal.py) drives the same code through nginx and knot.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
import yaml

from prober import ari, caa, renewal
from prober.config import ConfigError, parse_config
from prober.lab.ari import AriResponder, certificate_id, encode_id
from prober.lab.pki import CA
from prober.model import CertInfo, Endpoint, TlsContract
from prober.x509 import cert_info

DAY = 86400.0
# RFC 9773 §4.1's worked example: this keyIdentifier and serial give this certID.
RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
RFC_SERIAL = 0x87654321
RFC_CERT_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def leaf(lifetime_days: float, elapsed_days: float) -> CertInfo:
    now = time.time()
    start = now - elapsed_days * DAY
    return CertInfo(position="leaf", subject="CN=x", issuer="CN=lab,O=prober lab", sans=("x.test",), serial="1",
                    not_before=start, not_after=start + lifetime_days * DAY,
                    days_left=lifetime_days - elapsed_days, key_type="EC", key_size=256,
                    signature_algorithm="ecdsa-with-SHA256", fingerprint_sha256="f")


# ------------------------------------------------------------------ tiers
@pytest.mark.parametrize("lifetime, expected", [
    (398, (30, 14, 7, 3, 0)), (200, (30, 14, 7, 3, 0)), (90, (30, 14, 7, 3, 0)),
    (45, (15, 7.5, 3.75, 1.5, 0)), (6, (2, 1, 0.5, 0.2, 0)),
])
def test_thresholds_are_the_smaller_of_the_days_and_the_share_of_the_lifetime(lifetime, expected):
    assert renewal.thresholds(Endpoint("x.test"), leaf(lifetime, 0)) == pytest.approx(expected)


def test_expiry_fractions_null_pins_plain_days():
    endpoint = Endpoint("x.test", expiry_fractions=None)
    assert renewal.thresholds(endpoint, leaf(6, 0)) == (30, 14, 7, 3, 0)
    assert renewal.tier(endpoint, leaf(6, 3))[0] == "incident"


def test_a_six_day_certificate_is_clear_at_half_life_and_urgent_with_six_hours_left():
    endpoint = Endpoint("x.test")
    assert renewal.tier(endpoint, leaf(6, 3))[0] is None
    assert renewal.tier(endpoint, leaf(6, 6 - 0.25))[0] == "urgent"
    assert renewal.span(0.25) == "6.0 hours" and renewal.span(2.0) == "2.0 days"


def test_the_promtool_thresholds_are_the_ones_the_prober_exports():
    doc = yaml.safe_load((Path(__file__).parent / "rules" / "renewal.yaml").read_text())
    exported: dict[str, dict[str, float]] = {}
    for test in doc["tests"]:
        for s in test["input_series"]:
            if s["series"].startswith("prober_expiry_threshold_days"):
                host = s["series"].split('hostname="')[1].split('"')[0]
                tier = s["series"].split('tier="')[1].split('"')[0]
                exported.setdefault(host, {})[tier] = float(s["values"].split("+")[0])
    lifetimes = {"six-day": 6, "d45": 45, "d200": 200}
    for host, tiers in exported.items():
        life = next(v for k, v in lifetimes.items() if host.startswith(k))
        assert tuple(tiers.values()) == pytest.approx(renewal.thresholds(Endpoint(host), leaf(life, 0))), host


def test_renewal_is_due_at_renewal_at_plus_grace_of_the_lifetime():
    cert = leaf(200, 160)
    assert renewal.lifetime_due(Endpoint("x.test"), cert) == pytest.approx(cert.not_before + (2 / 3 + 0.1) * 200 * DAY)


# ------------------------------------------------------------------ the CertID
def test_cert_id_matches_the_rfc_example_in_the_prober_and_in_the_lab_responder():
    assert ari.cert_id(RFC_AKI, RFC_SERIAL) == RFC_CERT_ID
    assert encode_id(RFC_AKI, RFC_SERIAL) == RFC_CERT_ID


def test_cert_id_of_a_served_leaf_agrees_with_the_responder():
    issued = CA.root().intermediate().issue(["a.test"])
    info = cert_info(issued.cert, "leaf", time.time())
    assert info.authority_key_id
    assert ari.cert_id_of(info) == certificate_id(issued.cert)


def test_serial_der_is_minimal_twos_complement():
    assert ari.serial_der(0x7F) == b"\x7f" and ari.serial_der(0x80) == b"\x00\x80" and ari.serial_der(0) == b"\x00"


# ------------------------------------------------------------------ auto: the table, no connection
def test_auto_maps_known_issuers_to_their_directories_and_lab_cas_to_none():
    assert ari.directory_for("CN=R11,O=Let's Encrypt,C=US") == "https://acme-v02.api.letsencrypt.org/directory"
    assert ari.directory_for("CN=(STAGING) Ersatz Edamame E1,O=(STAGING) Let's Encrypt,C=US") == \
        "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert ari.directory_for("CN=WR1,O=Google Trust Services,C=US") == "https://dv.acme-v02.api.pki.goog/directory"
    assert ari.directory_for("CN=prober lab intermediate,O=prober lab") is None
    off = Endpoint("x.test", tls=TlsContract(ari="off"))
    assert ari.directory_setting(off, leaf(90, 1)) is None


def test_auto_with_a_lab_ca_makes_no_connection(network_guard):
    window, note = asyncio.run(ari.window_for(Endpoint("x.test"), leaf(90, 80), time.monotonic() + 2))
    assert (window, note) == (None, None) and network_guard == []


# ------------------------------------------------------------------ the lab responder
@pytest.fixture
def responder():
    ari.cache_clear()
    served = AriResponder(hang_seconds=5.0).start()
    yield served
    served.stop()
    ari.cache_clear()


def _ask(responder: AriResponder, issued, timeout: float = 2.0):
    endpoint = Endpoint("a.test", tls=TlsContract(ari=responder.directory))
    return asyncio.run(ari.window_for(endpoint, cert_info(issued.cert, "leaf", time.time()),
                                      time.monotonic() + timeout))


def test_a_window_is_fetched_and_kept_until_retry_after(responder):
    issued = CA.root().intermediate().issue(["a.test"])
    now = time.time()
    cid = responder.window(issued.cert, now - 3600, now + 3600, retry_after="3600",
                           explanation="http://127.0.0.1/why")
    window, note = _ask(responder, issued)
    assert note is None and window is not None
    assert abs(window.start - (now - 3600)) <= 1 and abs(window.end - (now + 3600)) <= 1  # RFC 3339 to the second
    assert window.explanation_url == "http://127.0.0.1/why" and window.url.endswith(cid)
    _ask(responder, issued)
    assert responder.hits(cid) == 1  # the second probe read the cache


@pytest.mark.parametrize("kind, words", [("not_found", "answered 404"), ("malformed", "not JSON"),
                                         ("hang", "did not answer")])
def test_a_failed_fetch_is_a_note(responder, kind, words):
    issued = CA.root().intermediate().issue(["a.test"])
    getattr(responder, kind)(issued.cert)
    started = time.monotonic()
    window, note = _ask(responder, issued, timeout=1.0)
    assert window is None and note and words in note and note.startswith("ARI:")
    assert time.monotonic() - started < 3.0  # bounded by the probe's deadline


def test_retry_after_forms_are_clamped():
    now = time.time()
    assert ari.retry_after("120", now) == 120
    assert ari.retry_after("1", now) == ari.MIN_RECHECK_SECONDS
    assert ari.retry_after(None, now) == ari.DEFAULT_RECHECK_SECONDS
    assert ari.retry_after("Wed, 21 Oct 2099 07:28:00 GMT", now) == ari.MAX_RECHECK_SECONDS


# ------------------------------------------------------------------ CAA (RFC 8659)
LE = ("letsencrypt.org",)


@pytest.mark.parametrize("records, wildcard, allowed", [
    (((0, "issue", "letsencrypt.org"),), False, True),
    (((0, "issue", "pki.goog; cansignhttpexchanges=yes"),), False, False),
    (((0, "issue", ";"),), False, False),  # no CA may issue
    (((0, "iodef", "mailto:x@example.com"),), False, True),  # no issue property: unrestricted
    (((0, "issue", "pki.goog"), (0, "issuewild", "letsencrypt.org")), True, True),
    (((0, "issue", "pki.goog"), (0, "issuewild", "letsencrypt.org")), False, False),
    (((0, "issue", "letsencrypt.org"),), True, True),  # no issuewild: issue governs wildcards too
    (((0, "issuewild", "pki.goog"),), False, True),  # issuewild alone does not restrict a plain name
    (((128, "tbs", "x"), (0, "issue", "letsencrypt.org")), False, False),  # unknown critical property
    (((0, "ISSUE", "LetsEncrypt.org"),), False, True),
])
def test_caa_permission(records, wildcard, allowed):
    assert caa.permits(records, LE, wildcard) is allowed


def test_the_issuer_table_and_certificate_source():
    assert caa.ca_of("CN=R11,O=Let's Encrypt,C=US") == ("Let's Encrypt", LE)
    acm = Endpoint("x.test", certificate_source="acm")
    wanted = caa.identities_to_check(acm, leaf(90, 1))
    assert wanted == [("certificate_source acm issues from", "Amazon",
                       ("amazon.com", "amazontrust.com", "awstrust.com", "amazonaws.com"))]
    own = Endpoint("x.test", tls=TlsContract(caa_identities=("ca.corp.test",)))
    assert caa.identities_to_check(own, leaf(90, 1))[0][2] == ("ca.corp.test",)


def test_wildcard_base():
    wild = dataclasses.replace(leaf(90, 1), sans=("*.shop.test",))
    assert caa.wildcard_base("www.shop.test", wild) == "shop.test"
    assert caa.wildcard_base("x.test", leaf(90, 1)) is None


# ------------------------------------------------------------------ the contract keys
BASE = "endpoints:\n  - hostname: api.example.com\n    resolvers: [127.0.0.1]\n"


def test_renewal_keys_parse():
    (e,) = parse_config(BASE + "    expiry_fractions: [0.5, 0.25, 0.1, 0.05]\n"
                        "    tls: {renewal_at: 0.75, renewal_grace: 0.05, ari: 'http://127.0.0.1:9/directory',"
                        " caa_identities: [CA.Corp.test]}\n").endpoints
    assert e.expiry_fractions == (0.5, 0.25, 0.1, 0.05)
    assert (e.tls.renewal_at, e.tls.renewal_grace, e.tls.ari) == (0.75, 0.05, "http://127.0.0.1:9/directory")
    assert e.tls.caa_identities == ("ca.corp.test",)
    (e,) = parse_config(BASE + "    expiry_fractions: null\n    tls: {ari: off}\n").endpoints
    assert e.expiry_fractions is None and e.tls.ari == "off"


@pytest.mark.parametrize("line, words", [
    ("    expiry_fractions: [0.5, 0.5, 0.1, 0.05]\n", "strictly decreasing"),
    ("    expiry_fractions: [0.5, 0.25]\n", "4 shares of the lifetime"),
    ("    tls: {renewal_at: 1.5}\n", "a share of the lifetime in (0, 1)"),
    ("    tls: {renewal_grace: -0.1}\n", "a share of the lifetime in [0, 1)"),
    ("    tls: {ari: 'http://acme.example.com/directory'}\n", "plain http:// only on a loopback address"),
    ("    tls: {ari: sometimes}\n", "auto, off, or the https:// URL"),
    ("    tls: {caa_identities: ['not a name']}\n", "tls.caa_identities"),
    ("    tls: {renewal_at: 0.95, renewal_grace: 0.1}\n", "must stay under 1 (0.95 + 0.1)"),
])
def test_bad_renewal_keys_are_one_line_each(line, words):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + line)
    assert len(err.value.problems) == 1 and words in err.value.problems[0], err.value.problems
