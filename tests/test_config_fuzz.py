"""Whatever the input, the config either parses or says why in one-line problems.

Never any other exception: a traceback from `prober validate` is a bug.
"""
from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from prober.config import ConfigError, build_endpoint, parse_config
from prober.model import Config, Endpoint

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

KEYS = ["defaults", "endpoints", "hostname", "timeout", "interval", "resolvers", "authoritative", "ca_file",
        "expiry_days", "tls_min_version", "visibility", "owner_team", "app_owner", "connect_to", "dns", "tls",
        "http", "expect_addresses", "expect_cname", "max_ttl", "port", "expect_issuer", "redirect", "hsts",
        "health_path", "expect_status", "expect_body", "headers", "address", "view", "name", "<<", "x-a"]
WORDS = ["system", "auto", "off", "yes", "no", "on", "null", "~", "true", "1.2", "1.3", "10s", "-1s", "0",
         "1m30s", "500ms", "1e400", "0x1bb", "1:30", "2001-13-45", "public", "private", "internal",
         "a.example.com", "API.Example.com.", "bad_host", "127.0.0.1", "127.0.0.1:5353", "[::1]:53", "::1",
         "1.1.1.1", "192.0.2.300", "/healthz", "healthz", "([", ".*", "200", "700", "65536", "!!binary",
         "!!omap", "!custom", "&a", "*a", "<<: *a", "'", '"', "|", ">", "#", "%", "@", "`", "\t", "\x00",
         "\ufeff", "\u212a", "bücher", "9" * 40]
TOKENS = KEYS + WORDS + [":", ": ", "- ", "-", "[", "]", "{", "}", ",", "\n", "  ", "    ", "---", "?"]


@pytest.fixture(scope="module")
def resolv(tmp_path_factory) -> str:
    """'system' expands from this file, never from the machine's own resolv.conf."""
    path = tmp_path_factory.mktemp("fuzz") / "resolv.conf"
    path.write_text("nameserver 127.0.0.53\n")
    return str(path)


def check(text: str, resolv: str) -> Config | None:
    """The property: a Config whose contracts hold, or a ConfigError of one-line problems."""
    try:
        config = parse_config(text, "fuzz.yaml", resolv_conf=resolv, base_dir="/nonexistent-dir")
    except ConfigError as err:
        assert err.problems and all(len(p.splitlines()) == 1 for p in err.problems)
        assert all(p.startswith("fuzz.yaml") for p in err.problems)
        event("rejected")
        return None
    event("parsed")
    for endpoint in config.endpoints:
        check_endpoint(endpoint)
    assert len({e.hostname for e in config.endpoints}) == len(config.endpoints)
    return config


def check_endpoint(e: Endpoint) -> None:
    assert e.hostname == e.hostname.lower().rstrip(".") and e.hostname
    assert e.resolvers and all(r.address for r in e.resolvers)
    assert len({r.name for r in e.resolvers}) == len(e.resolvers)
    assert 0 < e.timeout <= e.interval and math.isfinite(e.interval)
    assert 1 <= e.tls.port <= 65535 and 1 <= e.http.port <= 65535
    assert e.http.health_path.startswith("/")
    assert all(100 <= s <= 599 for s in e.http.expect_status) and e.http.expect_status
    assert list(e.expiry_days) == sorted(set(e.expiry_days), reverse=True) and len(e.expiry_days) == 5
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in e.http.headers)


@FUZZ
@given(st.text(max_size=300))
@example("endpoints: " + "[" * 3000)
@example("endpoints: " + "{a: " * 3000 + "1" + "}" * 3000)
@example("a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\n"
         "d: &d [*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d]\nendpoints: *e\n")
@example("x-a: &a {<<: *a}\nendpoints: [{<<: *a, hostname: a.example.com}]")
@example("endpoints:\n - &e {hostname: a.example.com, http: *e, dns: [*e]}")
@example("endpoints:\n - hostname: !!binary aGVsbG8=\n   tls: !!omap x\n   http: !!set {a, b}\n   dns: !x 1\n")
@example("endpoints:\n - hostname: a.example.com\n   timeout: " + "9" * 5000 + "\n")
@example("endpoints:\n - {hostname: a.example.com, resolvers: [system, system]}")
@example("endpoints:\n - {hostname: a.example.com, http: {headers: {a: b, a: c}}}")
@example("\ufeffendpoints: [{hostname: a.example.com}]\n---\n")
@example("endpoints: [{? [a] : b, hostname: a.example.com}]")
def test_arbitrary_text(resolv, text):
    check(text, resolv)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_yaml_ish_token_soup(resolv, text):
    check(text, resolv)


SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
           | st.sampled_from(WORDS) | st.text(max_size=12))


def nested(keys: list[str]):
    return st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), inner, max_size=5),
                        max_leaves=6)


# Valid values, so that the generator also reaches the "it parsed" side of the property.
GOOD = {
    "timeout": ["5s", 2, 0.5, "1m"], "interval": ["60s", "2m", 120],
    "resolvers": [["127.0.0.1"], ["system", "1.1.1.1"], [{"address": "[::1]:53", "name": "lab"}]],
    "authoritative": ["auto", "off", False, "127.0.0.1:53"], "ca_file": [None],
    "expiry_days": [[30, 14, 7, 3, 0], [5, 4, 3, 2, 1]], "tls_min_version": ["1.2", 1.3],
    "visibility": ["public", "private", None], "owner_team": ["edge", None], "app_owner": ["orders"],
    "connect_to": ["127.0.0.1", "::1", None],
    "dns": [{"expect_addresses": ["192.0.2.1"], "expect_cname": "Edge.example.net.", "max_ttl": 300}, {}],
    "tls": [{"port": 8443, "expect_issuer": "Example CA"}, None],
    "http": [{"port": 8080, "redirect": False, "hsts": True, "health_path": "/h?x=1",
              "expect_status": [200, 204], "expect_body": "ok|up", "headers": {"X-A": "b"}}],
}


def value_for(key: str):
    return st.sampled_from(GOOD[key]) | nested(KEYS) if key in GOOD else nested(KEYS)


def some_keys(keys: list[str], max_size: int):
    """A few keys, each with a value drawn for that key."""
    pair = st.sampled_from(keys).flatmap(lambda k: st.tuples(st.just(k), value_for(k)))
    return st.lists(pair, max_size=max_size).map(dict)


def good_keys(max_size: int):
    """A few keys, each with a valid value."""
    pair = st.sampled_from(sorted(GOOD)).flatmap(lambda k: st.tuples(st.just(k), st.sampled_from(GOOD[k])))
    return st.lists(pair, max_size=max_size).map(dict)


ENDPOINT_KEYS = [k for k in KEYS if k not in ("defaults", "endpoints")]


def endpoint_dicts():
    hostname = st.sampled_from(["a.example.com", "B.example.com.", "bad_host"])
    keys = good_keys(6) | some_keys(ENDPOINT_KEYS, 6)
    return st.tuples(hostname, keys).map(lambda t: {"hostname": t[0], **t[1]})


SHAPED = st.fixed_dictionaries({"endpoints": st.lists(endpoint_dicts(), min_size=1, max_size=3)},
                               optional={"defaults": good_keys(4) | some_keys(KEYS, 4), "x-anchors": nested(KEYS)})
LOOSE = st.fixed_dictionaries({}, optional={"defaults": some_keys(KEYS, 4), "endpoints": nested(KEYS),
                                            "extra": nested(KEYS)}) | nested(KEYS)
DOCUMENTS = SHAPED | LOOSE


@FUZZ
@given(DOCUMENTS, st.sampled_from(["block", "flow"]))
def test_arbitrary_structures_dumped_to_yaml(resolv, document, style):
    text = yaml.safe_dump(document, default_flow_style=(style == "flow"), allow_unicode=True)
    check(text, resolv)


@FUZZ
@given(st.sampled_from(["a.example.com", "BAD HOST", "x" * 300]) | st.text(max_size=20),
       good_keys(6) | some_keys(ENDPOINT_KEYS, 6) | st.dictionaries(st.text(max_size=5), nested(KEYS), max_size=3),
       st.none() | good_keys(4))
def test_cli_dicts(resolv, hostname, overrides, defaults):
    try:
        endpoint = build_endpoint(hostname, overrides, defaults, resolv_conf=resolv, base_dir="/nonexistent-dir")
    except ConfigError as err:
        assert err.problems and all(p.startswith("<cli>") and len(p.splitlines()) == 1 for p in err.problems)
        event("rejected")
        return
    event("built")
    check_endpoint(endpoint)


def test_a_well_formed_document_from_the_generator_does_parse(resolv):
    """The property above is not vacuous: its generator's valid corner parses."""
    document = {"defaults": {k: v[0] for k, v in GOOD.items()},
                "endpoints": [{"hostname": "B.example.com.", **{k: v[-1] for k, v in GOOD.items()}}]}
    config = parse_config(yaml.safe_dump(document), resolv_conf=resolv)
    check_endpoint(config.endpoints[0])
    assert config.endpoints[0].hostname == "b.example.com"
