"""probes.yaml -> Endpoint: every rule gives one exact line naming file:line, endpoint and key."""
from __future__ import annotations

import datetime
import os
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from prober.config import (
    ConfigError, build_endpoint, expand_system, load_config, load_defaults, normalize_hostname,
    parse_address, parse_config, parse_duration, parse_resolver,
)
from prober.model import Endpoint, ResolverSpec

REPO = Path(__file__).resolve().parent.parent
HEAD = "endpoints:\n  - hostname: api.example.com\n"  # an endpoint body starts on line 3
API = "probes.yaml:3: endpoint 'api.example.com'"


@pytest.fixture
def resolv(tmp_path: Path) -> str:
    path = tmp_path / "resolv.conf"
    path.write_text("# written by the test\nsearch example.com\nnameserver 127.0.0.53\n"
                    "nameserver not-an-address\n; comment\nnameserver ::1\noptions edns0\n")
    return str(path)


@pytest.fixture
def empty_resolv(tmp_path: Path) -> str:
    path = tmp_path / "empty-resolv.conf"
    path.write_text("search example.com\n")
    return str(path)


def parse(text: str, resolv: str, **kw) -> tuple[Endpoint, ...]:
    return parse_config(textwrap.dedent(text), "probes.yaml", resolv_conf=resolv, **kw).endpoints


def problems(text: str, resolv: str, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "probes.yaml", resolv_conf=resolv, **kw)
    assert str(info.value) == "\n".join(info.value.problems)
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


def endpoint(body: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(body), "    ")


def write_ca(path: Path) -> None:
    """A real self-signed CA certificate, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Internal CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# --------------------------------------------------------------------------
# The example file and the happy path
# --------------------------------------------------------------------------
def test_example_probes_yaml_parses(resolv):
    config = load_config(str(REPO / "probes.yaml"), resolv_conf=resolv)
    assert config.source == str(REPO / "probes.yaml")
    orders, admin, www = config.endpoints
    assert [e.hostname for e in config.endpoints] == [
        "orders.prod.example.com", "admin.internal.example.net", "www.example.com"]
    assert [(r.name, r.address, r.view, r.system) for r in orders.resolvers] == [
        ("system", "127.0.0.53", "internal", True), ("system#2", "::1", "internal", True),
        ("1.1.1.1", "1.1.1.1", "public", False), ("8.8.8.8", "8.8.8.8", "public", False),
        ("9.9.9.9", "9.9.9.9", "public", False)]
    assert (orders.timeout, orders.interval, orders.visibility, orders.tls_termination) == (
        10.0, 60.0, "public", "aws-alb")
    assert orders.http.health_path == "/healthz" and orders.http.expect_status == (200,)
    # The private endpoint replaces the resolver list and turns the authoritative check off
    # with a bare `off`, which YAML reads as false.
    assert [(r.name, r.view) for r in admin.resolvers] == [("corp-dns", "internal"), ("1.1.1.1", "public")]
    assert admin.authoritative == "off"
    assert admin.dns.expect_addresses == ("198.51.100.10", "198.51.100.11") and admin.dns.max_ttl == 300
    assert admin.http.headers == (("X-Probe", "prober"),)
    assert admin.http.expect_body == '"status":\\s*"ok"'
    assert (www.connect_to, www.timeout, www.tls.port, www.http.hsts) == ("203.0.113.20", 5.0, 8443, False)
    assert www.expiry_days == (45, 21, 10, 5, 1)


def test_minimal_endpoint_takes_model_defaults_and_system_resolvers(resolv):
    (e,) = parse("endpoints:\n  - hostname: WWW.Example.COM.\n", resolv)
    assert e.hostname == "www.example.com"
    assert e.resolvers == (ResolverSpec("system", "127.0.0.53", 53, "internal", True),
                           ResolverSpec("system#2", "::1", 53, "internal", True))
    assert e == Endpoint(hostname="www.example.com", resolvers=e.resolvers)


def test_defaults_merge_key_by_key_and_endpoint_wins(resolv):
    first, second = parse("""\
        defaults:
          timeout: 5s
          visibility: public
          resolvers: [127.0.0.1]
          http: {port: 8080, hsts: false, headers: {X-A: a}}
          tls: {expect_issuer: Example CA}
        endpoints:
          - hostname: a.example.com
            visibility: null
            resolvers: ["127.0.0.2:5353"]
            http: {hsts: true, expect_status: [204]}
          - hostname: b.example.com
            timeout: 1m30s
            interval: 2m
        """, resolv)
    assert (first.timeout, first.visibility, first.http.port, first.http.hsts) == (5.0, None, 8080, True)
    assert first.http.expect_status == (204,) and first.http.headers == (("X-A", "a"),)
    assert [(r.name, r.address, r.port) for r in first.resolvers] == [("127.0.0.2:5353", "127.0.0.2", 5353)]
    assert first.tls.expect_issuer == "Example CA"
    assert (second.timeout, second.visibility, second.http.hsts) == (90.0, "public", False)
    assert [r.name for r in second.resolvers] == ["127.0.0.1"]


def test_yaml_merge_keys_and_x_anchors(resolv):
    (e,) = parse("""\
        x-edge: &edge
          owner_team: platform-edge
          http: {port: 8080}
        endpoints:
          - <<: *edge
            hostname: a.example.com
            owner_team: web
        """, resolv)
    assert (e.owner_team, e.http.port) == ("web", 8080)


def test_hostname_and_cname_normalised(resolv):
    (e,) = parse(endpoint("dns: {expect_cname: Edge.Example.NET.}\n").replace("api.example.com",
                                                                            "API.Example.com."), resolv)
    assert (e.hostname, e.dns.expect_cname) == ("api.example.com", "edge.example.net")


def test_value_normalisation(resolv):
    (e,) = parse(endpoint("""\
        tls_min_version: 1.3
        authoritative: "[2001:DB8::53]:5353"
        connect_to: 2001:DB8:0:0::1
        dns: {expect_addresses: [192.0.2.1, 192.0.2.1, "2001:db8::0:1"]}
        http: {expect_status: [200, 301, 200]}
        """), resolv)
    assert e.tls_min_version == "1.3"
    assert e.authoritative == "[2001:db8::53]:5353"
    assert e.connect_to == "2001:db8::1"
    assert e.dns.expect_addresses == ("192.0.2.1", "2001:db8::1")
    assert e.http.expect_status == (200, 301)


@pytest.mark.parametrize("value, stored", [
    ("auto", "auto"), ("off", "off"), ('"off"', "off"), ("192.0.2.53", "192.0.2.53"),
    ("192.0.2.53:5353", "192.0.2.53:5353"), ('"2001:db8::53"', "2001:db8::53"),
    ('"[2001:db8::53]"', "2001:db8::53"), ('"[2001:db8::53]:53"', "[2001:db8::53]:53"),
])
def test_authoritative_forms(resolv, value, stored):
    (e,) = parse(endpoint(f"authoritative: {value}\n"), resolv)
    assert e.authoritative == stored


@pytest.mark.parametrize("value, stored", [("1.0", "1.0"), ('"1.1"', "1.1"), ("1.2", "1.2"), ('"1.3"', "1.3")])
def test_tls_min_version_forms(resolv, value, stored):
    (e,) = parse(endpoint(f"tls_min_version: {value}\n"), resolv)
    assert e.tls_min_version == stored


def test_ca_file_relative_to_config_directory(tmp_path, resolv):
    (tmp_path / "pki").mkdir()
    write_ca(tmp_path / "pki" / "internal-ca.pem")
    config_path = tmp_path / "probes.yaml"
    config_path.write_text("defaults:\n  ca_file: pki/internal-ca.pem\n" + HEAD)
    (e,) = load_config(str(config_path), resolv_conf=resolv).endpoints
    assert e.ca_file == str(tmp_path / "pki" / "internal-ca.pem")


# --------------------------------------------------------------------------
# One rule, one line, the right line
# --------------------------------------------------------------------------
CASES = [
    # unknown keys, with suggestions, at every level
    ("timeot: 5s\n", f"{API}: key 'timeot': unknown key (did you mean 'timeout'?)"),
    ("http:\n  heath_path: /x\n", "probes.yaml:4: endpoint 'api.example.com': key 'http.heath_path': "
                                  "unknown key (did you mean 'health_path'?)"),
    ("dns: {ttl: 5}\n", f"{API}: key 'dns.ttl': unknown key (did you mean 'max_ttl'?)"),
    ("dns: {cname: x}\n", f"{API}: key 'dns.cname': unknown key (known keys: expect_addresses, expect_cname, "
                          "max_ttl, dnssec, rrsig_min_hours)"),
    ("dns: {dnssec: yes}\n", f"{API}: key 'dns.dnssec': must be auto or required or off "
                             "(got yes, which YAML reads as true)"),
    ("dns: {rrsig_min_hours: -1}\n", f"{API}: key 'dns.rrsig_min_hours': must be a number of hours 0..8760, "
                                     "like 48 (got -1)"),
    ("resolvers:\n  - {address: 127.0.0.1, viw: public}\n",
     "probes.yaml:4: endpoint 'api.example.com': key 'resolvers': resolver key 'viw': unknown key "
     "(did you mean 'view'?)"),
    # wrong types, YAML booleans included
    ("http: {port: yes}\n", f"{API}: key 'http.port': must be a port number 1..65535 "
                            "(got yes, which YAML reads as true)"),
    ("owner_team: no\n", f"{API}: key 'owner_team': must be text (got no, which YAML reads as false); "
                         "put it in quotes to make it text"),
    ("http: {redirect: 'yes'}\n", f"{API}: key 'http.redirect': must be true or false (got 'yes')"),
    ("tls: {port: '443'}\n", f"{API}: key 'tls.port': must be a port number 1..65535 (got '443')"),
    ("dns: []\n", f"{API}: key 'dns': must be a mapping of dns keys (got a list)"),
    ("app_owner: ''\n", f"{API}: key 'app_owner': must be non-empty text on one line (got '')"),
    # durations
    ("timeout: soon\n", f"{API}: key 'timeout': must be a duration like 10s, 500ms, 2m or 1m30s (got 'soon')"),
    ("timeout: -5s\n", f"{API}: key 'timeout': must not be negative (got '-5s')"),
    ("interval: 0s\n", f"{API}: key 'interval': must be more than zero (got '0s')"),
    ("interval: 30s1m\n", f"{API}: key 'interval': must give its units largest first, each once, "
                          "like 1h30m (got '30s1m')"),
    ("timeout: 2m\ninterval: 1m\n", f"{API}: key 'timeout': must not exceed interval (120s > 60s): "
                                    "probes would overlap"),
    # http
    ("http: {health_path: healthz}\n", f"{API}: key 'http.health_path': must start with '/' (got 'healthz')"),
    ("http: {health_path: /a b}\n", f"{API}: key 'http.health_path': must not hold spaces or control "
                                    "characters; percent-encode them (got '/a b')"),
    ("tls: {port: 0}\n", f"{API}: key 'tls.port': must be a port number 1..65535 (got 0)"),
    ("http: {port: 65536}\n", f"{API}: key 'http.port': must be a port number 1..65535 (got 65536)"),
    ("http: {expect_body: '(['}\n", f"{API}: key 'http.expect_body': is not a valid regular expression: "
                                    "unterminated character set at position 1 (got '([')"),
    ("http: {expect_status: 200}\n", f"{API}: key 'http.expect_status': must be a list of HTTP status codes "
                                     "100..599, like [200] (got 200)"),
    ("http: {expect_status: []}\n", f"{API}: key 'http.expect_status': must be a list of HTTP status codes "
                                    "100..599, like [200] (got an empty list)"),
    ("http: {expect_status: [99]}\n", f"{API}: key 'http.expect_status': must be an HTTP status 100..599 "
                                      "(got 99)"),
    ("http: {headers: [a]}\n", f"{API}: key 'http.headers': must be a mapping of header name to value "
                               "(got a list)"),
    ("http: {headers: {X-Retry: 3}}\n", f"{API}: key 'http.headers': header 'X-Retry' must have a text "
                                        "value (got 3); put it in quotes"),
    ("http: {headers: {'X A': b}}\n", f"{API}: key 'http.headers': header name 'X A' is not a valid HTTP token"),
    ("http: {headers: {X-A: a, x-a: b}}\n", f"{API}: key 'http.headers': header 'x-a' is given twice "
                                            "(also as 'X-A')"),
    # addresses
    ("dns: {expect_addresses: [192.0.2.1, 192.0.2.300]}\n",
     f"{API}: key 'dns.expect_addresses': must be an IP address (got '192.0.2.300')"),
    ("dns: {expect_addresses: 192.0.2.1}\n",
     f"{API}: key 'dns.expect_addresses': must be a list of IP addresses (got '192.0.2.1')"),
    ("connect_to: lb.example.com\n", f"{API}: key 'connect_to': must be an IP address (got 'lb.example.com')"),
    ("connect_to: 192.0.2.1:443\n", f"{API}: key 'connect_to': must be an IP address without a port "
                                    "(got '192.0.2.1:443')"),
    ("dns: {expect_cname: edge_lb.example.net}\n",
     f"{API}: key 'dns.expect_cname': must be a DNS name: each label 1 to 63 letters, digits or inner "
     "hyphens (label 'edge_lb' in 'edge_lb.example.net')"),
    ("dns: {max_ttl: -1}\n", f"{API}: key 'dns.max_ttl': must be a whole number of seconds 0..2147483647 "
                             "(got -1)"),
    # choices
    ("visibility: pubic\n", f"{API}: key 'visibility': must be public or private (got 'pubic') "
                            "(did you mean 'public'?)"),
    ("authoritative: ns1.example.com\n", f"{API}: key 'authoritative': must be auto, off or ADDR[:PORT] "
                                         "of an authoritative server (got 'ns1.example.com')"),
    ("authoritative: on\n", f"{API}: key 'authoritative': must be auto, off or ADDR[:PORT] of an "
                            "authoritative server (got on, which YAML reads as true)"),
    ("authoritative: 192.0.2.53:0\n", f"{API}: key 'authoritative': needs a port 1..65535 after the colon "
                                      "(got '192.0.2.53:0')"),
    ("tls_min_version: 1.4\n", f"{API}: key 'tls_min_version': must be one of \"1.0\", \"1.1\", \"1.2\", "
                               "\"1.3\" (got 1.4)"),
    ("tls_min_version: TLSv1.2\n", f"{API}: key 'tls_min_version': must be one of \"1.0\", \"1.1\", "
                                   "\"1.2\", \"1.3\" (got 'TLSv1.2')"),
    # expiry tiers
    ("expiry_days: [30, 14, 7, 3]\n", f"{API}: key 'expiry_days': must be 5 whole numbers of days >= 0, "
     "strictly decreasing, for the tiers warning/high/urgent/incident/outage, like [30, 14, 7, 3, 0] "
     "(got [30, 14, 7, 3])"),
    ("expiry_days: [30, 14, 14, 3, 0]\n", f"{API}: key 'expiry_days': must be 5 whole numbers of days >= 0, "
     "strictly decreasing, for the tiers warning/high/urgent/incident/outage, like [30, 14, 7, 3, 0] "
     "(got [30, 14, 14, 3, 0])"),
    ("expiry_days: [30, 14, 7, 3, -1]\n", f"{API}: key 'expiry_days': must be 5 whole numbers of days >= 0, "
     "strictly decreasing, for the tiers warning/high/urgent/incident/outage, like [30, 14, 7, 3, 0] "
     "(got [30, 14, 7, 3, -1])"),
    ("expiry_days: [30, 14, 7, yes, 0]\n", f"{API}: key 'expiry_days': must be 5 whole numbers of days >= 0, "
     "strictly decreasing, for the tiers warning/high/urgent/incident/outage, like [30, 14, 7, 3, 0] "
     "(got [30, 14, 7, yes, 0])"),
    ("expiry_days: 30\n", f"{API}: key 'expiry_days': must be 5 whole numbers of days >= 0, strictly "
     "decreasing, for the tiers warning/high/urgent/incident/outage, like [30, 14, 7, 3, 0] (got 30)"),
    # resolvers
    ("resolvers: []\n", f"{API}: key 'resolvers': must list at least one resolver"),
    ("resolvers: 127.0.0.1\n", f"{API}: key 'resolvers': must be a list of resolvers, like "
                               "[system, 1.1.1.1] (got '127.0.0.1')"),
    ("resolvers: [dns.example.net]\n", f"{API}: key 'resolvers': must be system, ADDR, ADDR:PORT or "
     "[IPV6]:PORT (resolvers are dialled by IP address) (got 'dns.example.net')"),
    ("resolvers: [127.0.0.1, {address: 127.0.0.2, name: 127.0.0.1}]\n",
     f"{API}: key 'resolvers': two resolvers are named '127.0.0.1'; give one a distinct name"),
    ("resolvers: [{address: 127.0.0.1, view: dmz}]\n",
     f"{API}: key 'resolvers': view must be public or internal (got 'dmz')"),
    # duplicate keys in one mapping
    ("timeout: 5s\ntimeout: 6s\n", "probes.yaml:4: endpoint 'api.example.com': key 'timeout': "
                                   "is given twice (first at line 3)"),
]


@pytest.mark.parametrize("body, expected", CASES, ids=[body.replace("\n", " ").strip() for body, _ in CASES])
def test_each_rule_gives_one_exact_line(resolv, body, expected):
    assert problems(endpoint(body), resolv) == [expected]


def test_problem_in_a_block_list_names_the_item_line(resolv):
    text = endpoint("dns:\n  expect_addresses:\n    - 192.0.2.1\n    - nope\n    - 192.0.2.2\n    - also-nope\n")
    assert problems(text, resolv) == [
        "probes.yaml:6: endpoint 'api.example.com': key 'dns.expect_addresses': must be an IP address "
        "(got 'nope')",
        "probes.yaml:8: endpoint 'api.example.com': key 'dns.expect_addresses': must be an IP address "
        "(got 'also-nope')"]


def test_ca_file_that_does_not_exist(tmp_path, resolv):
    found = problems(endpoint("ca_file: missing.pem\n"), resolv, base_dir=str(tmp_path))
    assert found == [f"{API}: key 'ca_file': is not a file: '{tmp_path / 'missing.pem'}' "
                     "(relative paths start at the directory of the config file)"]


def test_ca_file_without_a_certificate(tmp_path, resolv):
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    found = problems(endpoint("ca_file: key.pem\n"), resolv, base_dir=str(tmp_path))
    assert found == [f"{API}: key 'ca_file': {tmp_path / 'key.pem'} holds no PEM certificate "
                     "(-----BEGIN CERTIFICATE-----)"]


@pytest.mark.parametrize("hostname, message", [
    ("api_1.example.com", "must be a DNS name: each label 1 to 63 letters, digits or inner hyphens "
                          "(label 'api_1' in 'api_1.example.com')"),
    ("-api.example.com", "must be a DNS name: each label 1 to 63 letters, digits or inner hyphens "
                         "(label '-api' in '-api.example.com')"),
    ("a..example.com", "must be a DNS name: each label 1 to 63 letters, digits or inner hyphens "
                       "(label '' in 'a..example.com')"),
    ("x" * 64 + ".example.com", "must be a DNS name: each label 1 to 63 letters, digits or inner hyphens "
                                f"(label '{'x' * 64}' in '{'x' * 64}.example.com')"),
    ("192.0.2.1", "must be a DNS name, not an IP address: use connect_to to pin an address (got '192.0.2.1')"),
    ("☃.example", "is not a valid internationalised name under IDNA 2008: codepoint U+2603 at position 1 of "
                  "'☃' not allowed (got '☃.example')"),
    ("xn--zz.example", "holds 'xn--zz', which is not a valid IDNA 2008 A-label: invalid A-label "
                       "(got 'xn--zz.example')"),
])
def test_bad_hostnames(resolv, hostname, message):
    text = f"endpoints:\n  - hostname: '{hostname}'\n"
    assert problems(text, resolv) == [f"probes.yaml:2: endpoint '{hostname}': key 'hostname': {message}"]


def test_hostname_longer_than_253(resolv):
    name = ".".join(["a" * 63] * 4)  # 255 characters
    clipped = f"'{name[:77]}...'"
    assert problems(f"endpoints:\n  - hostname: {name}\n", resolv) == [
        f"probes.yaml:2: endpoint {clipped}: key 'hostname': must be a DNS name of 1 to 253 characters "
        f"(got {clipped})"]
    ok = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253
    assert parse(f"endpoints:\n  - hostname: {ok}.\n", resolv)[0].hostname == ok


def test_hostname_of_wrong_type_and_missing(resolv):
    assert problems("endpoints:\n  - hostname: 42\n  - owner_team: x\n", resolv) == [
        "probes.yaml:2: endpoint #1: key 'hostname': must be a DNS name (got 42); put it in quotes to make it text",
        "probes.yaml:3: endpoint #2: key 'hostname': missing: every endpoint needs a hostname"]


def test_duplicate_hostname_names_the_first_line(resolv):
    text = ("endpoints:\n  - hostname: api.example.com\n  - hostname: www.example.com\n"
            "  - hostname: API.example.com.\n")
    assert problems(text, resolv) == [
        "probes.yaml:4: endpoint 'api.example.com': key 'hostname': duplicate: first defined at line 2"]


def test_hostname_is_not_a_default(resolv):
    assert problems("defaults:\n  hostname: x.example.com\n" + HEAD, resolv) == [
        "probes.yaml:2: defaults: key 'hostname': is set per endpoint, not in defaults"]


def test_problem_in_defaults_is_reported_once(resolv):
    text = ("defaults:\n  timeout: 0\n  http: {port: 0}\nendpoints:\n  - hostname: a.example.com\n"
            "  - hostname: b.example.com\n")
    assert problems(text, resolv) == [
        "probes.yaml:2: defaults: key 'timeout': must be more than zero (got 0)",
        "probes.yaml:3: defaults: key 'http.port': must be a port number 1..65535 (got 0)"]


@pytest.mark.parametrize("text, expected", [
    ("", ["probes.yaml: the file is empty: it needs an 'endpoints:' list"]),
    ("# only a comment\n", ["probes.yaml: the file is empty: it needs an 'endpoints:' list"]),
    ("- hostname: a.example.com\n", ["probes.yaml:1: the top level must be a mapping with 'defaults' and "
                                     "'endpoints' (got a list)"]),
    ("defaults: {timeout: 5s}\n", ["probes.yaml:1: key 'endpoints': missing: list the endpoints to probe"]),
    ("endpoints: []\n", ["probes.yaml:1: key 'endpoints': must be a list of endpoints, each a mapping with "
                         "a hostname (got an empty list)"]),
    ("endpoints:\n", ["probes.yaml:1: key 'endpoints': must be a list of endpoints, each a mapping with "
                      "a hostname (got null)"]),
    ("endpoints:\n  - api.example.com\n", ["probes.yaml:2: endpoint #1: must be a mapping like "
                                           "'hostname: www.example.com' (got 'api.example.com')"]),
    ("endpoint:\n  - hostname: a.example.com\n", [
        "probes.yaml:1: key 'endpoint': unknown key (did you mean 'endpoints'?)",
        "probes.yaml:1: key 'endpoints': missing: list the endpoints to probe"]),
    ("defaults: [1]\n" + HEAD, ["probes.yaml:1: key 'defaults': must be a mapping of defaults keys (got a list)"]),
    ("x-base: &b {<<: *b}\n" + HEAD, ["probes.yaml:1: key '<<': cannot merge a mapping into itself"]),
])
def test_file_level_problems(resolv, text, expected):
    assert problems(text, resolv) == expected


# The wording after the prefix is the YAML library's (libyaml or pure Python): not pinned here.
@pytest.mark.parametrize("text, prefix", [
    ("endpoints:\n  - hostname: a.example.com\n    http: {port: 80\n", "probes.yaml:4: YAML syntax error: "),
    ("endpoints:\n  - hostname: a.example.com\n   owner_team: x\n", "probes.yaml:3: YAML syntax error: "),
    ("endpoints:\n  - hostname: a.example.com\n    owner_team: 'x\n", "probes.yaml:4: YAML syntax error: "),
    ("endpoints:\n  - hostname: a.example.com\n---\nendpoints: []\n", "probes.yaml:3: YAML syntax error: "),
    ("endpoints:\n  - hostname: a.example.com\n    owner_team: \x07\n",
     "probes.yaml:3: YAML cannot read character '\\x07': "),
    ("endpoints:\n  - hostname: a.example.com\n    owner_team: \ud800\n",
     "probes.yaml:3: YAML cannot read character '\\ud800': "),
])
def test_yaml_errors_name_the_line(resolv, text, prefix):
    (found,) = problems(text, resolv)
    assert found.startswith(prefix) and len(found) > len(prefix) + 10


def test_deep_nesting_is_a_problem_not_a_crash(resolv):
    (found,) = problems(endpoint("http: " + "[" * 2000 + "]" * 2000 + "\n"), resolv)
    # libyaml 0.2.5 parses this and the validator rejects it; newer libyaml (PyYAML 6.0.4 wheels)
    # stops at its own nesting limit.  Either way: one line, the file and the line.
    assert found in (f"{API}: key 'http': must be a mapping of http keys (got a list)",
                     "probes.yaml:3: YAML syntax error: exceeded maximum nesting depth "
                     "(while increasing flow level)")
    (found,) = problems(endpoint("owner_team: " + "{a: " * 100 + "1" + "}" * 100 + "\n"), resolv)
    assert found == f"{API}: key 'owner_team': must be text (got a mapping)"
    (found,) = problems("endpoints: " + "[" * 40 + "]" * 40 + "\n", resolv)
    assert found.startswith("probes.yaml:1: endpoint #1: must be a mapping")


def test_all_problems_collected_in_one_pass_sorted_by_line(resolv):
    text = textwrap.dedent("""\
        defaults:
          interval: never
        endpoints:
          - hostname: a.example.com
            http: {health_path: x}
          - hostname: bad_name
            tls: {port: 70000}
          - hostname: c.example.com
            visibility: internal
        extra: 1
        """)
    found = problems(text, resolv)
    assert [p.split(":")[1] for p in found] == ["2", "5", "6", "7", "9", "10"]
    assert found[3] == "probes.yaml:7: endpoint 'bad_name': key 'tls.port': must be a port number 1..65535 (got 70000)"


# --------------------------------------------------------------------------
# Resolvers and system expansion
# --------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("1.1.1.1", ResolverSpec("1.1.1.1", "1.1.1.1", 53, "public")),
    ("8.8.4.4:53", ResolverSpec("8.8.4.4:53", "8.8.4.4", 53, "public")),
    ("2606:4700:4700::1111", ResolverSpec("2606:4700:4700::1111", "2606:4700:4700::1111", 53, "public")),
    ("[2620:fe::fe]:53", ResolverSpec("[2620:fe::fe]:53", "2620:fe::fe", 53, "public")),
    ("[2001:4860:4860:0::8888]", ResolverSpec("[2001:4860:4860:0::8888]", "2001:4860:4860::8888", 53, "public")),
    ("208.67.220.220", ResolverSpec("208.67.220.220", "208.67.220.220", 53, "public")),
    ("127.0.0.1:5353", ResolverSpec("127.0.0.1:5353", "127.0.0.1", 5353, "internal")),
    ("::1", ResolverSpec("::1", "::1", 53, "internal")),
    ("[::1]:5300", ResolverSpec("[::1]:5300", "::1", 5300, "internal")),
    ("192.0.2.53", ResolverSpec("192.0.2.53", "192.0.2.53", 53, "internal")),
    ("system", ResolverSpec("system", None, 53, "internal", system=True)),
    ({"address": "127.0.0.1:5353", "view": "public", "name": "lab-public"},
     ResolverSpec("lab-public", "127.0.0.1", 5353, "public")),
    ({"address": "1.1.1.1", "view": "internal"}, ResolverSpec("1.1.1.1", "1.1.1.1", 53, "internal")),
    ({"address": "system", "name": "node"}, ResolverSpec("node", None, 53, "internal", system=True)),
])
def test_parse_resolver_forms(value, expected):
    assert parse_resolver(value) == expected


@pytest.mark.parametrize("value, message", [
    ("dns.google", "must be system, ADDR, ADDR:PORT or [IPV6]:PORT (resolvers are dialled by IP address) "
                   "(got 'dns.google')"),
    ("1.1.1.1:0", "needs a port 1..65535 after the colon (got '1.1.1.1:0')"),
    ("[1.1.1.1]:53", "puts an IPv4 address in brackets (got '[1.1.1.1]:53')"),
    ("[::1]x", "must be system, ADDR, ADDR:PORT or [IPV6]:PORT (resolvers are dialled by IP address) "
               "(got '[::1]x')"),
    (53, "must be system, ADDR, ADDR:PORT or [IPV6]:PORT (resolvers are dialled by IP address) (got 53)"),
    ({"address": "1.1.1.1", "port": 53}, "resolver key 'port': unknown key (known keys: address, view, name)"),
    ({"view": "public"}, "a resolver mapping needs an 'address' (ADDR, ADDR:PORT or system)"),
    ({"address": "1.1.1.1", "name": ""}, "name must be non-empty text (got '')"),
])
def test_parse_resolver_rejects(value, message):
    with pytest.raises(ValueError) as info:
        parse_resolver(value)
    assert str(info.value) == message


def test_parse_address():
    assert parse_address("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_address("192.0.2.1:853", 53) == ("192.0.2.1", 853)
    assert parse_address("[2001:db8::1]:853") == ("2001:db8::1", 853)
    assert parse_address("2001:DB8::1", 0) == ("2001:db8::1", 0)


def test_system_expands_from_resolv_conf(resolv):
    assert expand_system(resolv) == (ResolverSpec("system", "127.0.0.53", 53, "internal", True),
                                     ResolverSpec("system#2", "::1", 53, "internal", True))
    (e,) = parse(endpoint("resolvers: [{address: system, name: node, view: public}, 127.0.0.1]\n"), resolv)
    assert [(r.name, r.address, r.view, r.system) for r in e.resolvers] == [
        ("node", "127.0.0.53", "public", True), ("node#2", "::1", "public", True),
        ("127.0.0.1", "127.0.0.1", "internal", False)]


def test_system_without_nameservers_is_a_problem(empty_resolv):
    with pytest.raises(ConfigError) as info:
        expand_system(empty_resolv)
    assert info.value.problems == [f"resolver 'system': {empty_resolv} lists no nameserver; "
                                   "list resolvers by address instead"]
    assert problems(endpoint("resolvers:\n  - 127.0.0.1\n  - system\n"), empty_resolv) == [
        f"probes.yaml:5: endpoint 'api.example.com': key 'resolvers': 'system' found no nameserver: "
        f"{empty_resolv} lists no nameserver; list resolvers by address"]


def test_default_system_without_nameservers_is_one_problem(empty_resolv, tmp_path):
    text = "endpoints:\n  - hostname: a.example.com\n  - hostname: b.example.com\n"
    assert problems(text, empty_resolv) == [
        f"probes.yaml:1: defaults: key 'resolvers': not set, and the default 'system' found no nameserver: "
        f"{empty_resolv} lists no nameserver; list resolvers by address"]
    missing = str(tmp_path / "absent.conf")
    assert "cannot read" in problems(text, missing)[0]
    # Nobody needs the default when every endpoint names its resolvers.
    assert parse(endpoint("resolvers: [127.0.0.1]\n"), empty_resolv)[0].resolvers[0].address == "127.0.0.1"


# --------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------
@pytest.mark.parametrize("value, seconds", [
    (10, 10.0), (1.5, 1.5), ("10s", 10.0), ("1.5s", 1.5), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0),
    ("1m30s", 90.0), ("1h2m3s", 3723.0), ("1d", 86400.0), ("10", 10.0), (" 7 ", 7.0), ("2.5", 2.5),
    (".5s", 0.5),
])
def test_parse_duration_accepts(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [
    "", "s", "10x", "10 s", "1m 30s", "30s1m", "1s1s", "-1s", -1, 0, "0s", True, None, [10],
    float("nan"), float("inf"), 10**400, "1e3s", "１０s",
])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert "\n" not in str(info.value) and "(got " in str(info.value)


def test_parse_duration_zero_when_allowed():
    assert parse_duration("0s", allow_zero=True) == 0.0


# --------------------------------------------------------------------------
# The CLI path: same rules, same messages, no line numbers
# --------------------------------------------------------------------------
def test_build_endpoint_from_flags(resolv):
    e = build_endpoint("WWW.example.com", {"timeout": "5s", "resolvers": ["127.0.0.1:5353"],
                                           "http": {"health_path": "/ready"}}, resolv_conf=resolv)
    assert (e.hostname, e.timeout, e.http.health_path, e.http.port) == ("www.example.com", 5.0, "/ready", 80)
    assert e.resolvers == (ResolverSpec("127.0.0.1:5353", "127.0.0.1", 5353, "internal"),)


def test_build_endpoint_uses_system_when_no_resolvers(resolv):
    assert [r.name for r in build_endpoint("a.example.com", {}, resolv_conf=resolv).resolvers] == [
        "system", "system#2"]


def test_build_endpoint_on_a_base_without_resolvers(resolv):
    e = build_endpoint("a.example.com", {}, base=Endpoint(hostname="", timeout=3.0), resolv_conf=resolv)
    assert e.timeout == 3.0 and [r.address for r in e.resolvers] == ["127.0.0.53", "::1"]


def test_build_endpoint_problems_use_the_same_rules(resolv):
    with pytest.raises(ConfigError) as info:
        build_endpoint("bad_host", {"timeout": "soon", "http": {"health_path": "x", "port": True}, "tmeout": 1},
                       {"visibility": "secret"}, resolv_conf=resolv)
    assert info.value.problems == [
        "<cli>: key 'hostname': must be a DNS name: each label 1 to 63 letters, digits or inner hyphens "
        "(label 'bad_host' in 'bad_host')",
        "<cli>: defaults: key 'visibility': must be public or private (got 'secret')",
        "<cli>: endpoint 'bad_host': key 'timeout': must be a duration like 10s, 500ms, 2m or 1m30s (got 'soon')",
        "<cli>: endpoint 'bad_host': key 'http.health_path': must start with '/' (got 'x')",
        "<cli>: endpoint 'bad_host': key 'http.port': must be a port number 1..65535 (got true)",
        "<cli>: endpoint 'bad_host': key 'tmeout': unknown key (did you mean 'timeout'?)"]


def test_build_endpoint_refuses_a_hostname_override_and_non_mappings(resolv):
    with pytest.raises(ConfigError) as info:
        build_endpoint("a.example.com", {"hostname": "b.example.com"}, ["timeout"], resolv_conf=resolv)
    assert info.value.problems == [
        "<cli>: defaults: must be a mapping (got a list)",
        "<cli>: endpoint 'a.example.com': key 'hostname': is the hostname argument, not an override"]


def test_build_endpoint_precedence(tmp_path, resolv):
    path = tmp_path / "probes.yaml"
    path.write_text("defaults:\n  timeout: 7s\n  resolvers: [127.0.0.9]\n  http: {port: 8080, hsts: false}\n"
                    "endpoints:\n  - hostname: listed.example.com\n    resolvers: [127.0.0.1]\n")
    template = load_defaults(str(path), resolv_conf=resolv)
    assert (template.hostname, template.timeout, template.http.port) == ("", 7.0, 8080)
    e = build_endpoint("new.example.com", {"http": {"hsts": True}}, {"interval": "2m"}, base=template,
                       resolv_conf=resolv)
    assert (e.timeout, e.interval, e.http.port, e.http.hsts) == (7.0, 120.0, 8080, True)
    assert [r.name for r in e.resolvers] == ["127.0.0.9"]
    listed = load_config(str(path), resolv_conf=resolv).by_hostname()["listed.example.com"]
    again = build_endpoint(listed.hostname, {"timeout": "3s"}, base=listed, resolv_conf=resolv)
    assert again == Endpoint(**{**{f: getattr(listed, f) for f in listed.__dataclass_fields__}, "timeout": 3.0})


def test_normalize_hostname():
    assert normalize_hostname(" Api.Example.COM. ") == "api.example.com"
    # Unicode goes through UTS #46 and IDNA 2008, as a browser would: never IDNA 2003's faß -> fass.
    assert normalize_hostname("Bücher.Example") == "xn--bcher-kva.example"
    assert normalize_hostname("faß.de") == "xn--fa-hia.de"
    assert normalize_hostname("\u212aexample.com") == "kexample.com"  # UTS #46 maps the Kelvin sign to k
    with pytest.raises(ValueError, match="IDNA 2008"):
        normalize_hostname("a\u200db.example")  # a joiner between two Latin letters


# --------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------
def test_unreadable_files(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: cannot read the file: No such file or directory"]
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.problems == [f"{tmp_path}: cannot read the file: Is a directory"]
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("endpoints:\n  - hostname: b\xfccher.example\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(str(latin1))
    assert info.value.problems == [f"{latin1}:2: is not UTF-8 text (byte 0xfc)"]


def test_load_config_reports_the_path_as_given(tmp_path, resolv, monkeypatch):
    (tmp_path / "probes.yaml").write_text("endpoints:\n  - hostname: a.example.com\n    tls: {port: 0}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("probes.yaml", resolv_conf=resolv)
    assert info.value.problems == [
        "probes.yaml:3: endpoint 'a.example.com': key 'tls.port': must be a port number 1..65535 (got 0)"]
    assert os.getcwd() == str(tmp_path)
