"""probes.yaml -> frozen Endpoint contracts.

Every problem is one line that names the file, the line, the endpoint and the
dotted key, says what is wrong and shows what was given.  All problems of a
file are collected in one pass and raised together as a ``ConfigError``.

The YAML is composed (not loaded) so that every value keeps the line it was
written on.  The node tree is turned into ``_V`` values (a value plus its
line); Python dicts from the CLI become ``_V`` values without lines, so the
file and the command line share one validation path (``_parse_fields``) and
one assembly step (``_assemble``).
"""
from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import idn, tlspolicy
from .model import EXPIRY_TIERS, ClientCert, Config, DnsContract, Endpoint, HttpContract, ResolverSpec, TlsContract

__all__ = [
    "ConfigError", "load_config", "parse_config", "load_defaults", "build_endpoint",
    "parse_duration", "parse_resolver", "parse_address", "normalize_hostname", "expand_system",
    "WELL_KNOWN_PUBLIC_RESOLVERS", "TLS_VERSIONS",
]

TLS_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3")
# Anycast public resolvers: their answers are what the internet sees (view public).
WELL_KNOWN_PUBLIC_RESOLVERS: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset(
    ipaddress.ip_address(a) for a in (
        "1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9", "149.112.112.112",
        "208.67.222.222", "208.67.220.220",
        "2606:4700:4700::1111", "2606:4700:4700::1001", "2001:4860:4860::8888",
        "2001:4860:4860::8844", "2620:fe::fe", "2620:fe::9", "2620:119:35::35", "2620:119:53::53"))
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"


class ConfigError(Exception):
    """Bad configuration: ``problems`` holds one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# --------------------------------------------------------------------------
# Values with lines
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Unusable:
    """A value no key can take: an alias inside itself, or nesting deeper than any key reaches."""
    description: str


_MAX_DEPTH = 32  # the schema goes 6 levels deep; this bounds the recursion, whatever the YAML
_CYCLE = _Unusable("an alias that contains itself")
_TOO_DEEP = _Unusable(f"a structure nested over {_MAX_DEPTH} levels deep")


@dataclass(slots=True)
class _V:
    value: Any  # a scalar, list[_V] or dict[str, _V]
    line: int | None = None
    raw: str | None = None  # the scalar as written, to show `yes` rather than `True`
    key_lines: dict[str, int | None] = field(default_factory=dict)
    dups: list[tuple[str, int | None, int | None]] = field(default_factory=list)  # key, line, first line

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)


class _Invalid(Exception):
    """One or more problems with a value: (line or None, message)."""

    def __init__(self, message: str = "", line: int | None = None,
                 items: list[tuple[int | None, str]] | None = None) -> None:
        self.items = items if items is not None else [(line, message)]
        super().__init__(message)


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[tuple[int, int, str]] = []  # (line, order, text) so output sorts by line

    def add(self, line: int | None, where: str | None, key: str | None, message: str) -> None:
        parts = [f"{self.source}:{line}" if line else self.source]
        if where:
            parts.append(where)
        if key:
            parts.append(f"key '{key}'" if key.isprintable() and "'" not in key else f"key {_show(key)}")
        parts.append(" ".join(message.split()))  # one line, whatever the message held
        self.items.append((line or 0, len(self.items), ": ".join(parts)))

    def error(self) -> ConfigError:
        return ConfigError(text for _, _, text in sorted(self.items))

    def raise_if_any(self) -> None:
        if self.items:
            raise self.error()


def _line(node: Node) -> int:
    return node.start_mark.line + 1


_MERGE_TAG = "tag:yaml.org,2002:merge"
# Only these become Python values; anything else (dates, !!binary, custom tags) stays text.
_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}
_IN_PROGRESS = _V(None)


class _Converter:
    """YAML node tree -> _V tree.  Memoised by node, so aliases cost nothing twice."""

    def __init__(self, problems: _Problems) -> None:
        self.problems = problems
        self.memo: dict[int, _V] = {}
        self.constructor = SafeConstructor()

    def convert(self, node: Node, depth: int = 0) -> _V:
        done = self.memo.get(id(node))
        if done is _IN_PROGRESS:
            return _V(_CYCLE, _line(node))
        if done is not None:
            return done
        if depth > _MAX_DEPTH:
            return _V(_TOO_DEEP, _line(node))
        self.memo[id(node)] = _IN_PROGRESS
        if isinstance(node, MappingNode):
            result = self._mapping(node, depth + 1)
        elif isinstance(node, SequenceNode):
            result = _V([self.convert(n, depth + 1) for n in node.value], _line(node))
        else:
            result = _V(self._scalar(node), _line(node), raw=node.value)
        self.memo[id(node)] = result
        return result

    def _scalar(self, node: Node) -> Any:
        if node.tag not in _SCALAR_TAGS:
            return node.value
        try:
            return self.constructor.construct_object(node)
        except Exception:  # e.g. an int too long to convert: keep the text, validation says why
            return node.value

    def _mapping(self, node: MappingNode, depth: int) -> _V:
        out = _V({}, _line(node))
        merges: list[_V] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(self.convert(value_node, depth))
            elif not isinstance(key_node, ScalarNode):
                self.problems.add(_line(key_node), None, None,
                                  "a key must be a plain name, not a list or a mapping")
            elif key_node.value in out.value:
                out.dups.append((key_node.value, _line(key_node), out.key_lines[key_node.value]))
            else:
                out.value[key_node.value] = self.convert(value_node, depth)
                out.key_lines[key_node.value] = _line(key_node)
        for merged in merges:
            self._merge(out, merged)
        return out

    def _merge(self, out: _V, merged: _V) -> None:
        sources = merged.value if isinstance(merged.value, list) else [merged]
        for source in sources:
            if not source.is_map:
                what = ("cannot merge a mapping into itself" if source.value is _CYCLE
                        else "can only merge a mapping or a list of mappings")
                self.problems.add(source.line, None, "<<", what)
                continue
            for key, value in source.value.items():  # explicit keys, then earlier merges, win
                if key not in out.value:
                    out.value[key] = value
                    out.key_lines[key] = source.key_lines.get(key)


def _from_python(value: Any, seen: frozenset[int] = frozenset()) -> _V:
    """CLI dicts -> _V without lines, through the same validation as the file."""
    if id(value) in seen:
        return _V(_CYCLE)
    if len(seen) > _MAX_DEPTH:
        return _V(_TOO_DEEP)
    inner = seen | {id(value)}
    if isinstance(value, Mapping):
        out = _V({})
        for key, item in value.items():
            out.value[str(key)] = _from_python(item, inner)
            out.key_lines[str(key)] = None
        return out
    if isinstance(value, (list, tuple)):
        return _V([_from_python(item, inner) for item in value])
    return _V(value)


# --------------------------------------------------------------------------
# Showing values and checking their types
# --------------------------------------------------------------------------
def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(v: _V | Any) -> str:
    value = v.value if isinstance(v, _V) else v
    raw = v.raw if isinstance(v, _V) else None
    if isinstance(value, str):
        return repr(_clip(value))
    if isinstance(value, bool):
        word = "true" if value else "false"
        return word if raw in (None, word) else f"{_clip(raw)}, which YAML reads as {word}"
    if value is None:
        return "null" if raw in (None, "", "null", "~") else _clip(raw)
    if isinstance(value, (int, float)):
        return _clip(raw if raw is not None else repr(value))
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (dict, Mapping)):
        return "a mapping"
    if isinstance(value, _Unusable):
        return value.description
    return f"a value of type {type(value).__name__}"


def _bad(v: _V, what: str, hint: str = "") -> _Invalid:
    return _Invalid(f"must be {what} (got {_show(v)}){hint}", v.line)


def _str(v: _V, what: str = "text") -> str:
    if isinstance(v.value, str):
        return v.value
    scalar = isinstance(v.value, (bool, int, float))
    raise _bad(v, what, "; put it in quotes to make it text" if scalar and v.raw else "")


def _int(v: _V, what: str, low: int, high: int) -> int:
    if isinstance(v.value, bool) or not isinstance(v.value, int):
        raise _bad(v, what)
    if not low <= v.value <= high:
        raise _bad(v, what)
    return v.value


def _bool(v: _V) -> bool:
    if not isinstance(v.value, bool):
        raise _bad(v, "true or false")
    return v.value


def _list(v: _V, what: str) -> list[_V]:
    if not isinstance(v.value, list):
        raise _bad(v, what)
    return v.value


def _map(v: _V, what: str) -> dict[str, _V]:
    if v.value is None:  # `http:` with every sub-key commented out
        return {}
    if not v.is_map:
        raise _bad(v, what)
    return v.value


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown_key(key: str, known: Iterable[str]) -> str:
    known = list(known)
    hint = _suggest(key, known)
    if not hint:
        hint = f" (known keys: {', '.join(known)})" if len(known) <= 8 else " (see docs/config.md)"
    return "unknown key" + hint


def _choice(v: _V, choices: tuple[str, ...]) -> str:
    text = v.value if isinstance(v.value, str) else ""
    if text in choices:
        return text
    hint = _suggest(text.lower(), choices) if text else ""
    raise _bad(v, " or ".join(choices), hint)


def _collect(items: list[_V], parse: Callable[[_V], Any]) -> list[Any]:
    """Parse each item, reporting every bad one rather than the first."""
    out, errors = [], []
    for item in items:
        try:
            out.append(parse(item))
        except _Invalid as err:
            errors.extend(err.items)
    if errors:
        raise _Invalid(items=errors)
    return out


# --------------------------------------------------------------------------
# Public value parsers (ValueError with a one-line message)
# --------------------------------------------------------------------------
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = list(_UNIT_SECONDS)
_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"  # not \d: that also takes other scripts' digits
_DURATION_RE = re.compile(rf"(?:(?:{_NUMBER})(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
_NUMBER_RE = re.compile(_NUMBER)
_DURATION_WHAT = "a duration like 10s, 500ms, 2m or 1m30s"


def _duration_text(original: str) -> float:
    text = original.strip()
    sign, text = (-1.0, text[1:]) if text.startswith("-") else (1.0, text)
    if _NUMBER_RE.fullmatch(text):
        return sign * float(text)
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(f"must be {_DURATION_WHAT} (got {_show(original)})")
    total, last = 0.0, -1
    for number, unit in _DURATION_PART.findall(text):
        rank = _UNIT_ORDER.index(unit)
        if rank <= last:
            raise ValueError(f"must give its units largest first, each once, like 1h30m (got {_show(original)})")
        last = rank
        total += float(number) * _UNIT_SECONDS[unit]
    return sign * total


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds from 10, 1.5, '10s', '500ms', '2m', '1h', '1m30s' (also 'd')."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be {_DURATION_WHAT} (got {_show(value)})")
    try:
        seconds = _duration_text(value) if isinstance(value, str) else float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration (got {_show(value)})")
    if seconds < 0:
        raise ValueError(f"must not be negative (got {_show(value)})")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"must be more than zero (got {_show(value)})")
    return seconds


def _ip(text: str, what: str = "an IP address") -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"must be {what} (got {_show(text)})") from None


def _port_text(text: str, original: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"needs a port 1..65535 after the colon (got {_show(original)})")
    return int(text)


def parse_address(text: str, default_port: int = 53, *,
                  what: str = "ADDR, ADDR:PORT or [IPV6]:PORT") -> tuple[str, int]:
    """'ADDR', 'ADDR:PORT', '[V6]', '[V6]:PORT' or a bare IPv6 -> (normalised ADDR, PORT).

    ValueError says the address `must be {what}` when it is not an IP literal.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"must be {what} (got {_show(text)})")
        address = _ip(host, what)
        if ":" not in address:
            raise ValueError(f"puts an IPv4 address in brackets (got {_show(text)})")
        return address, _port_text(rest[1:], text) if rest else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return _ip(host, what), _port_text(port, text)
    return _ip(text, what), default_port


def _address_text(address: str, port: int | None) -> str:
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_hostname(text: str) -> str:
    """Lower case, no trailing dot; labels of 1-63 letters, digits, hyphens; <= 253 in all."""
    name = text.strip()
    name = name[:-1] if name.endswith(".") else name
    if not name.isascii():  # a Unicode name as people type it: UTS #46 then IDNA 2008, as browsers do
        try:
            name = idn.to_ascii(name)
        except ValueError as err:
            raise ValueError(f"{err} (got {_show(text)})") from None
    name = name.lower()
    if not name or len(name) > 253:
        raise ValueError(f"must be a DNS name of 1 to 253 characters (got {_show(text)})")
    bad = [label for label in name.split(".") if not _LABEL_RE.fullmatch(label)]
    if bad:
        raise ValueError("must be a DNS name: each label 1 to 63 letters, digits or inner hyphens "
                         f"(label {_show(bad[0])} in {_show(text)})")
    if "xn--" in name:
        idn.check_a_labels(name, _show(text))
    if name.rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"must be a DNS name, not an IP address: use connect_to to pin an address "
                         f"(got {_show(text)})")
    return name


def _view(view: object) -> str:
    if view not in ("public", "internal"):
        raise ValueError(f"view must be public or internal (got {_show(view)})")
    return str(view)


def parse_resolver(value: object) -> ResolverSpec:
    """'system', ADDR, ADDR:PORT, [V6]:PORT, a bare IPv6, or {address, view, name}.

    'system' comes back unexpanded (address None); see ``expand_system``.
    """
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in _RESOLVER_KEYS]
        if unknown:
            raise ValueError(f"resolver key {_show(unknown[0])}: {_unknown_key(str(unknown[0]), _RESOLVER_KEYS)}")
        if "address" not in value:
            raise ValueError("a resolver mapping needs an 'address' (ADDR, ADDR:PORT or system)")
        return _resolver(value["address"], value.get("view"), value.get("name"))
    return _resolver(value, None, None)


_RESOLVER_KEYS = ("address", "view", "name")
_RESOLVER_WHAT = "system, ADDR, ADDR:PORT or [IPV6]:PORT (resolvers are dialled by IP address)"


def _resolver(address: object, view: object, name: object) -> ResolverSpec:
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"must be {_RESOLVER_WHAT} (got {_show(address)})")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be non-empty text (got {_show(name)})")
    text = address.strip()
    if view is not None:
        view = _view(view)
    if text == "system":
        return ResolverSpec(name=(name or "system").strip(), address=None, view=view or "internal",
                            system=True)
    ip, port = parse_address(text, what=_RESOLVER_WHAT)
    public = ipaddress.ip_address(ip) in WELL_KNOWN_PUBLIC_RESOLVERS
    return ResolverSpec(name=(name or text).strip(), address=ip, port=port,
                        view=view or ("public" if public else "internal"))


def _read_nameservers(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read(1 << 20).splitlines()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    found = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append(str(ipaddress.ip_address(words[1])))
            except ValueError:
                continue  # the C resolver ignores such lines too
    if not found:
        raise ValueError(f"{path} lists no nameserver")
    return found


def _expand(spec: ResolverSpec, nameservers: list[str]) -> tuple[ResolverSpec, ...]:
    return tuple(ResolverSpec(name=spec.name if i == 0 else f"{spec.name}#{i + 1}", address=address,
                              view=spec.view, system=True)
                 for i, address in enumerate(nameservers))


def expand_system(resolv_conf_path: str = DEFAULT_RESOLV_CONF, *, name: str = "system",
                  view: str = "internal") -> tuple[ResolverSpec, ...]:
    """One ResolverSpec per nameserver of resolv.conf: 'system', 'system#2', ..."""
    try:
        nameservers = _read_nameservers(resolv_conf_path)
    except ValueError as err:
        raise ConfigError([f"resolver 'system': {err}; list resolvers by address instead"]) from None
    return _expand(ResolverSpec(name=name, address=None, view=view, system=True), nameservers)


# --------------------------------------------------------------------------
# Field parsers: (_V, _Env) -> value, raising _Invalid
# --------------------------------------------------------------------------
@dataclass
class _Env:
    base_dir: str
    resolv_conf: str
    nameservers: list[str] | str | None = None  # cached list, or why there are none

    def system(self) -> list[str]:
        if self.nameservers is None:
            try:
                self.nameservers = _read_nameservers(self.resolv_conf)
            except ValueError as err:
                self.nameservers = str(err)
        if isinstance(self.nameservers, str):
            raise ValueError(f"'system' found no nameserver: {self.nameservers}; list resolvers by address")
        return self.nameservers


_Parser = Callable[[_V, _Env], Any]


def _checked(parse: Callable[[Any], Any], value: Any, line: int | None) -> Any:
    """Run a ValueError-raising parser; its message becomes a problem at `line`."""
    try:
        return parse(value)
    except ValueError as err:
        raise _Invalid(str(err), line) from None


def _wrap(parse: Callable[[Any], Any]) -> _Parser:
    return lambda v, env: _checked(parse, v.value, v.line)


def _optional(parse: _Parser) -> _Parser:
    return lambda v, env: None if v.value is None else parse(v, env)


def _text_field(v: _V, env: _Env) -> str:
    text = _str(v).strip()
    if not text or not text.isprintable():
        raise _bad(v, "non-empty text on one line")
    return text


def _hostname_field(v: _V, env: _Env) -> str:
    return _checked(normalize_hostname, _str(v, "a DNS name"), v.line)


def _ip_field(v: _V, env: _Env) -> str:
    text = _str(v, "an IP address").strip()
    if text.count(":") == 1 or text.startswith("["):
        raise _Invalid(f"must be an IP address without a port (got {_show(text)})", v.line)
    return _checked(_ip, text, v.line)


def _port_field(v: _V, env: _Env) -> int:
    return _int(v, "a port number 1..65535", 1, 65535)


def _authoritative_field(v: _V, env: _Env) -> str:
    if v.value is False:  # YAML 1.1 reads a bare `off` as false
        return "off"
    what = "auto, off or ADDR[:PORT] of an authoritative server"
    if not isinstance(v.value, str):
        raise _bad(v, what)
    text = v.value.strip()
    if text in ("auto", "off"):
        return text
    address, port = _checked(lambda t: parse_address(t, 0, what=what), text, v.line)
    return _address_text(address, port or None)


def _ca_file_field(v: _V, env: _Env) -> str:
    return _pem_file(v, env, b"-----BEGIN CERTIFICATE-----", "certificate", 16 << 20)


def _expiry_days_field(v: _V, env: _Env) -> tuple[int, ...]:
    what = (f"{len(EXPIRY_TIERS)} whole numbers of days >= 0, strictly decreasing, for the tiers "
            f"{'/'.join(EXPIRY_TIERS)}, like [30, 14, 7, 3, 0]")
    items = v.value if isinstance(v.value, list) else None
    days = [i.value for i in items or ()]
    if (items is None or len(days) != len(EXPIRY_TIERS)
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in days)
            or any(a <= b for a, b in zip(days, days[1:]))):
        shown = "[" + ", ".join(i.raw or _show(i) for i in items) + "]" if items is not None else _show(v)
        raise _Invalid(f"must be {what} (got {_clip(shown)})", v.line)
    return tuple(days)


def _fraction(v: _V, what: str, low: float, high: float, low_open: bool = True) -> float:
    value = v.value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(v, what)
    if value < low or value > high or (low_open and value == low):
        raise _bad(v, what)
    return float(value)


def _expiry_fractions_field(v: _V, env: _Env) -> tuple[float, ...]:
    count = len(EXPIRY_TIERS) - 1  # the outage tier stays at its days
    what = (f"null, or {count} shares of the lifetime in (0, 1], strictly decreasing, for the tiers "
            f"{'/'.join(EXPIRY_TIERS[:count])}, like [0.333, 0.167, 0.083, 0.033]")
    items = v.value if isinstance(v.value, list) else None
    try:
        shares = [_fraction(i, what, 0.0, 1.0) for i in items or ()]
    except _Invalid:
        shares = []
    if items is None or len(shares) != count or any(a <= b for a, b in zip(shares, shares[1:])):
        shown = "[" + ", ".join(i.raw or _show(i) for i in items) + "]" if items is not None else _show(v)
        raise _Invalid(f"must be {what} (got {_clip(shown)})", v.line)
    return tuple(shares)


def _ari_field(v: _V, env: _Env) -> str:
    """auto, off, or an ACME directory URL: https://, or http:// on a loopback address only."""
    if v.value is False:  # YAML 1.1 reads a bare `off` as false
        return "off"
    what = "auto, off, or the https:// URL of an ACME directory"
    text = _str(v, what).strip()
    if text in ("auto", "off"):
        return text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _bad(v, what) from None
    loopback = host == "localhost" or _is_loopback(host)
    if not host or parts.scheme not in ("https", "http") or (parts.scheme == "http" and not loopback):
        raise _bad(v, what + " (plain http:// only on a loopback address)")
    return text


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _caa_identities_field(v: _V, env: _Env) -> tuple[str, ...]:
    items = _list(v, "a list of CAA issuer domain names, like [pki.example.com]")
    return tuple(dict.fromkeys(_collect(items, lambda item: _hostname_field(item, env))))


def _tls_version_field(v: _V, env: _Env) -> str:
    text = repr(v.value) if isinstance(v.value, float) else v.value  # YAML reads 1.2 as a float
    if text in TLS_VERSIONS:
        return text
    raise _bad(v, "one of " + ", ".join(f'"{t}"' for t in TLS_VERSIONS))


def _resolvers_field(v: _V, env: _Env) -> tuple[ResolverSpec, ...]:
    items = _list(v, "a list of resolvers, like [system, 1.1.1.1]")
    if not items:
        raise _Invalid("must list at least one resolver", v.line)
    specs = [s for group in _collect(items, lambda item: _resolver_item(item, env)) for s in group]
    first: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.name in first:
            raise _Invalid(f"two resolvers are named {spec.name!r}; give one a distinct name", v.line)
        first[spec.name] = index
    return tuple(specs)


def _resolver_item(item: _V, env: _Env) -> tuple[ResolverSpec, ...]:
    if item.is_map:
        unknown = [k for k in item.value if k not in _RESOLVER_KEYS]
        if unknown:
            key = unknown[0]
            raise _Invalid(f"resolver key '{key}': {_unknown_key(key, _RESOLVER_KEYS)}", item.key_lines[key])
        if item.dups:
            raise _Invalid(f"resolver key '{item.dups[0][0]}' is given twice", item.dups[0][1])
        plain = {k: sub.value for k, sub in item.value.items()}
    elif isinstance(item.value, str):
        plain = item.value
    else:
        raise _bad(item, f"{_RESOLVER_WHAT}, or a mapping with address, view and name")
    spec = _checked(parse_resolver, plain, item.line)
    if not spec.system:
        return (spec,)
    return _expand(spec, _checked(lambda _: env.system(), None, item.line))


def _addresses_field(v: _V, env: _Env) -> tuple[str, ...]:
    items = _list(v, "a list of IP addresses")
    return tuple(dict.fromkeys(_collect(items, lambda item: _ip_field(item, env))))


def _dnssec_field(v: _V, env: _Env) -> str:
    if v.value is False:  # YAML 1.1 reads a bare `off` as false
        return "off"
    return _choice(v, ("auto", "required", "off"))


def _hours_field(v: _V, env: _Env) -> float:
    what = "a number of hours 0..8760, like 48"
    if isinstance(v.value, bool) or not isinstance(v.value, (int, float)) or not 0 <= v.value <= 8760:
        raise _bad(v, what)
    return float(v.value)


def _max_ttl_field(v: _V, env: _Env) -> int:
    return _int(v, "a whole number of seconds 0..2147483647", 0, 2**31 - 1)


def _health_path_field(v: _V, env: _Env) -> str:
    path = _str(v, "a path starting with '/'")
    if not path.startswith("/"):
        raise _Invalid(f"must start with '/' (got {_show(path)})", v.line)
    if any(c.isspace() or not c.isprintable() for c in path):
        raise _Invalid(f"must not hold spaces or control characters; percent-encode them (got {_show(path)})",
                       v.line)
    return path


def _status_field(v: _V, env: _Env) -> tuple[int, ...]:
    what = "a list of HTTP status codes 100..599, like [200]"
    items = _list(v, what)
    if not items:
        raise _Invalid(f"must be {what} (got an empty list)", v.line)
    return tuple(dict.fromkeys(_collect(items, lambda item: _int(item, "an HTTP status 100..599", 100, 599))))


def _regex_field(v: _V, env: _Env) -> str:
    pattern = _str(v, "a regular expression")
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as err:
        raise _Invalid(f"is not a valid regular expression: {err} (got {_show(pattern)})", v.line) from None
    return pattern


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _headers_field(v: _V, env: _Env) -> tuple[tuple[str, str], ...]:
    mapping = _map(v, "a mapping of header name to value")
    errors = [(line, f"header {name!r} is given twice (first at line {first})") for name, line, first in v.dups]
    seen: dict[str, str] = {}
    for name, value in mapping.items():
        line = v.key_lines.get(name)
        if not _TOKEN_RE.fullmatch(name):
            errors.append((line, f"header name {_show(name)} is not a valid HTTP token"))
        elif name.lower() in seen:
            errors.append((line, f"header {name!r} is given twice (also as {seen[name.lower()]!r})"))
        elif not isinstance(value.value, str):
            errors.append((value.line, f"header {name!r} must have a text value (got {_show(value)}); "
                                       "put it in quotes"))
        elif "\r" in value.value or "\n" in value.value:
            errors.append((value.line, f"header {name!r} value must not contain line breaks"))
        seen.setdefault(name.lower(), name)
    if errors:
        raise _Invalid(items=errors)
    return tuple((name, value.value) for name, value in mapping.items())


def _pem_file(v: _V, env: _Env, marker: bytes, what: str, limit: int = 1 << 20) -> str:
    """A readable file holding `marker`, relative paths from the config's directory."""
    path = os.path.normpath(os.path.join(env.base_dir, os.path.expanduser(_str(v, "a path to a PEM file").strip())))
    if not os.path.isfile(path):
        raise _Invalid(f"is not a file: {_show(path)} (relative paths start at the directory of the config file)",
                       v.line)
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit)  # a bounded read also keeps a FIFO or a device from blocking the load
    except OSError as err:
        raise _Invalid(f"cannot read {_show(path)}: {err.strerror or err}", v.line) from None
    if marker not in data:
        raise _Invalid(f"{path} holds no PEM {what} ({marker.decode()})", v.line)
    return path


def _client_cert_field(v: _V, env: _Env) -> ClientCert:
    mapping = _map(v, "a mapping with cert_file and key_file")
    keys = ("cert_file", "key_file")
    errors = [(v.key_lines.get(k), f"client_cert key '{k}': {_unknown_key(k, keys)}") for k in mapping if k not in keys]
    errors += [(v.line, f"needs {k} (a PEM file)") for k in keys if k not in mapping]
    if errors:
        raise _Invalid(items=errors)
    return ClientCert(_pem_file(mapping["cert_file"], env, b"-----BEGIN CERTIFICATE-----", "certificate"),
                      _pem_file(mapping["key_file"], env, b"PRIVATE KEY-----", "private key"))


def _on_off_field(v: _V, env: _Env) -> str:
    return "off" if v.value is False else _choice(v, ("auto", "off"))  # YAML 1.1 reads a bare off as false


def _curves_field(v: _V, env: _Env) -> tuple[str, ...]:
    items = _list(v, "a list of curve names, like [P-256, P-384]")
    names = []
    for item in items:
        if item.value not in tlspolicy.KNOWN_CURVES:
            raise _Invalid(f"unknown curve {_show(item)}; use some of {', '.join(tlspolicy.KNOWN_CURVES)}",
                           item.line or v.line)
        names.append(item.value)
    return tuple(dict.fromkeys(names))


def _refuse(message: str) -> _Parser:
    def refuse(v: _V, env: _Env) -> Any:
        raise _Invalid(message, v.line)
    return refuse


_ENDPOINT_SPEC: dict[str, Any] = {
    "hostname": _hostname_field,
    "timeout": _wrap(parse_duration),
    "interval": _wrap(parse_duration),
    "resolvers": _resolvers_field,
    "authoritative": _authoritative_field,
    "ca_file": _optional(_ca_file_field),
    "expiry_days": _expiry_days_field,
    "expiry_fractions": _optional(_expiry_fractions_field),
    "tls_min_version": _tls_version_field,
    "visibility": _optional(lambda v, env: _choice(v, ("public", "private"))),
    "owner_team": _optional(_text_field),
    "app_owner": _optional(_text_field),
    "tls_termination": _optional(_text_field),
    "certificate_source": _optional(_text_field),
    "dns_provider": _optional(_text_field),
    "ingress_controller": _optional(_text_field),
    "connect_to": _optional(_ip_field),
    "dns": {"expect_addresses": _addresses_field, "expect_cname": _optional(_hostname_field),
            "max_ttl": _optional(_max_ttl_field), "dnssec": _dnssec_field, "rrsig_min_hours": _hours_field},
    "tls": {"port": _port_field, "expect_issuer": _optional(_text_field),
            "renewal_at": lambda v, env: _fraction(v, "a share of the lifetime in (0, 1), like 0.667", 0.0, 0.999),
            "renewal_grace": lambda v, env: _fraction(v, "a share of the lifetime in [0, 1), like 0.1", 0.0,
                                                      0.999, low_open=False),
            "ari": _ari_field, "caa_identities": _caa_identities_field,
            "min_rsa_bits": lambda v, env: _int(v, "a number of bits 512..16384", 512, 16384),
            "ec_curves": _curves_field, "allow_sha1": lambda v, env: _bool(v),
            "revocation": _on_off_field,
            "client_cert": _optional(_client_cert_field)},
    "http": {"port": _port_field, "redirect": lambda v, env: _bool(v), "hsts": lambda v, env: _bool(v),
             "health_path": _health_path_field, "expect_status": _status_field,
             "expect_body": _optional(_regex_field), "headers": _headers_field},
}
_DEFAULTS_SPEC: dict[str, Any] = {**_ENDPOINT_SPEC, "hostname": _refuse("is set per endpoint, not in defaults")}
_OVERRIDES_SPEC: dict[str, Any] = {**_ENDPOINT_SPEC, "hostname": _refuse("is the hostname argument, not an override")}
_SECTIONS: dict[str, type] = {"dns": DnsContract, "tls": TlsContract, "http": HttpContract}

# A parsed layer: key -> (value, line), sections nested one level.
_Layer = dict[str, Any]


def _parse_fields(v: _V, spec: dict[str, Any], env: _Env, problems: _Problems, where: str,
                  prefix: str = "") -> _Layer:
    """The one validation path: every key of a mapping checked against `spec`."""
    for key, line, first in v.dups:
        problems.add(line, where, prefix + key, f"is given twice (first at line {first})")
    out: _Layer = {}
    for key, item in v.value.items():
        dotted, rule = prefix + key, spec.get(key)
        if rule is None:
            problems.add(v.key_lines.get(key), where, dotted, _unknown_key(key, spec))
        elif isinstance(rule, dict):
            section = _section(item, dotted, where, problems)
            if section is not None:
                out[key] = _parse_fields(section, rule, env, problems, where, dotted + ".")
        else:
            try:
                out[key] = (rule(item, env), item.line)
            except _Invalid as err:
                for line, message in err.items:
                    problems.add(line or item.line or v.key_lines.get(key), where, dotted, message)
    return out


def _section(item: _V, dotted: str, where: str, problems: _Problems) -> _V | None:
    if item.value is None:
        return _V({}, item.line)
    if not item.is_map:
        problems.add(item.line, where, dotted, f"must be a mapping of {dotted} keys (got {_show(item)})")
        return None
    return item


# --------------------------------------------------------------------------
# Assembly: model defaults <- base <- defaults <- endpoint, sections key by key
# --------------------------------------------------------------------------
def _layer_of(endpoint: Endpoint) -> _Layer:
    layer: _Layer = {}
    for f in fields(endpoint):
        value = getattr(endpoint, f.name)
        if f.name in _SECTIONS:
            layer[f.name] = {s.name: (getattr(value, s.name), None) for s in fields(value)}
        elif f.name != "hostname":
            layer[f.name] = (value, None)
    return layer


def _merge(layers: Iterable[_Layer]) -> _Layer:
    merged: _Layer = {}
    for layer in layers:
        for key, value in layer.items():
            if key in _SECTIONS:
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged


def _assemble(hostname: str, merged: _Layer) -> Endpoint:
    sections = {name: cls(**{k: val for k, (val, _) in merged.get(name, {}).items()})
                for name, cls in _SECTIONS.items()}
    plain = {k: v[0] for k, v in merged.items() if k not in _SECTIONS and k != "hostname"}
    return Endpoint(hostname=hostname, **plain, **sections)


_MODEL_LAYER: _Layer = _layer_of(Endpoint(hostname=""))


def _check_timing(merged: _Layer, own: _Layer, where: str, problems: _Problems) -> None:
    """A probe that outlives its interval overlaps the next run of the same target."""
    if "timeout" not in own and "interval" not in own:
        return  # judged once where it was set, not again for every endpoint that inherits it
    timeout, interval = merged["timeout"][0], merged["interval"][0]
    line = (own.get("timeout") or own["interval"])[1]
    if timeout > interval:
        problems.add(line, where, "timeout",
                     f"must not exceed interval ({timeout:g}s > {interval:g}s): probes would overlap")


def _check_renewal(merged: _Layer, own: _Layer, where: str, problems: _Problems) -> None:
    """Renewal due at or past the end of the lifetime would never be overdue."""
    tls = own.get("tls", {})
    if "renewal_at" not in tls and "renewal_grace" not in tls:
        return
    at, grace = merged["tls"]["renewal_at"][0], merged["tls"]["renewal_grace"][0]
    if at + grace >= 1:
        line = (tls.get("renewal_at") or tls["renewal_grace"])[1]
        problems.add(line, where, "tls.renewal_at",
                     f"plus tls.renewal_grace must stay under 1 ({at:g} + {grace:g}): renewal would be due "
                     "only once the certificate has expired")


def _system_default(env: _Env, problems: _Problems, line: int | None, where: str) -> _Layer:
    """Resolvers not set anywhere default to 'system', expanded once per load."""
    try:
        specs = _expand(ResolverSpec("system", None, system=True), env.system())
    except ValueError as err:
        problems.add(line, where, "resolvers", f"not set, and the default {err}")
        return {}
    return {"resolvers": (specs, None)}


# --------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------
# libyaml when present: much faster on hostile input, and it composes deep nesting without
# recursing in Python.  Both keep the marks that give every problem its line.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str, problems: _Problems) -> _V | None:
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as err:
        problems.add(*_yaml_error(err))
        return None
    except yaml.reader.ReaderError as err:
        char = chr(err.character) if isinstance(err.character, int) else str(err.character)
        problems.add(_line_of(text, char), None, None, f"YAML cannot read character {char!r}: {err.reason}")
        return None
    except UnicodeEncodeError as err:  # a lone surrogate in a str handed to libyaml
        problems.add(_line_of(text, text[err.start]), None, None,
                     f"YAML cannot read character {text[err.start]!r}: not valid Unicode text")
        return None
    except yaml.YAMLError as err:
        problems.add(None, None, None, f"YAML error: {err}")
        return None
    except RecursionError:  # the pure-Python composer recurses once per level
        problems.add(None, None, None, "YAML is nested too deeply")
        return None
    if node is None:
        problems.add(None, None, None, "the file is empty: it needs an 'endpoints:' list")
        return None
    return _Converter(problems).convert(node)


def _line_of(text: str, char: str) -> int | None:
    index = text.find(char) if char else -1
    return text.count("\n", 0, index) + 1 if index >= 0 else None


def _yaml_error(err: yaml.MarkedYAMLError) -> tuple[int | None, None, None, str]:
    mark = err.problem_mark or err.context_mark
    line = mark.line + 1 if mark else None
    context = err.context or ""
    if context and err.context_mark and err.context_mark.line + 1 != line:
        context += f" at line {err.context_mark.line + 1}"
    if not context:
        text = str(err.problem)
    elif str(err.problem).startswith("but "):  # "expected a single document, but found another"
        text = f"{context}, {err.problem}"
    else:
        text = f"{err.problem} ({context})"
    return line, None, None, f"YAML syntax error: {text}"


def _endpoint_name(item: _V, index: int) -> tuple[str | None, str]:
    raw = item.value.get("hostname")
    if raw is not None and isinstance(raw.value, str):
        try:
            host = normalize_hostname(raw.value)
            return host, f"endpoint '{host}'"
        except ValueError:
            return None, f"endpoint {_show(raw.value)}"
    return None, f"endpoint #{index}"


def _parse_endpoint(item: _V, index: int, seen: dict[str, int | None], env: _Env,
                    problems: _Problems) -> tuple[str, str, _Layer] | None:
    """(hostname, where, parsed keys) of one entry, or None when it has problems."""
    if not item.is_map:
        problems.add(item.line, f"endpoint #{index}", None,
                     f"must be a mapping like 'hostname: www.example.com' (got {_show(item)})")
        return None
    before = len(problems.items)
    host, where = _endpoint_name(item, index)
    own = _parse_fields(item, _ENDPOINT_SPEC, env, problems, where)
    if "hostname" not in item.value:
        problems.add(item.line, where, "hostname", "missing: every endpoint needs a hostname")
    elif host is not None and host in seen:
        problems.add(item.value["hostname"].line, where, "hostname",
                     f"duplicate: first defined at line {seen[host]}")
    elif host is not None:
        seen[host] = item.value["hostname"].line
    if len(problems.items) > before or host is None:
        return None
    return host, where, own


def _endpoint_items(root: _V, problems: _Problems) -> list[_V]:
    items = root.value["endpoints"]
    if isinstance(items.value, list) and items.value:
        return items.value
    got = "an empty list" if items.value == [] else _show(items)
    problems.add(items.line, None, "endpoints",
                 f"must be a list of endpoints, each a mapping with a hostname (got {got})")
    return []


def _check_top(root: _V, problems: _Problems) -> bool:
    if not root.is_map:
        problems.add(root.line, None, None,
                     f"the top level must be a mapping with 'defaults' and 'endpoints' (got {_show(root)})")
        return False
    for key, line, first in root.dups:
        problems.add(line, None, key, f"is given twice (first at line {first})")
    for key in root.value:
        if key not in ("defaults", "endpoints") and not key.startswith("x-"):  # x-*: room for anchors
            problems.add(root.key_lines.get(key), None, key, _unknown_key(key, ("defaults", "endpoints")))
    if "endpoints" not in root.value:
        problems.add(root.line, None, "endpoints", "missing: list the endpoints to probe")
    return True


def _parse_defaults(root: _V, env: _Env, problems: _Problems) -> tuple[_Layer, set[str]]:
    """The parsed defaults, and the keys written there (valid or not)."""
    section = _section(root.value["defaults"], "defaults", "", problems) if "defaults" in root.value else None
    if section is None:
        return {}, set()
    defaults = _parse_fields(section, _DEFAULTS_SPEC, env, problems, "defaults")
    _check_timing(_merge([_MODEL_LAYER, defaults]), defaults, "defaults", problems)
    _check_renewal(_merge([_MODEL_LAYER, defaults]), defaults, "defaults", problems)
    return defaults, set(section.value)


def _parse_document(text: str, source: str, resolv_conf: str, base_dir: str | None
                    ) -> tuple[Config, _Layer]:
    """The Config, and the defaults merged over the model's (for load_defaults)."""
    problems = _Problems(source)
    env = _Env(base_dir=base_dir if base_dir is not None else os.getcwd(), resolv_conf=resolv_conf)
    root = _compose(text, problems)
    if root is None or not _check_top(root, problems):
        raise problems.error()
    defaults, written = _parse_defaults(root, env, problems)
    items = _endpoint_items(root, problems) if "endpoints" in root.value else []
    seen: dict[str, int | None] = {}
    parsed = [p for p in (_parse_endpoint(item, index, seen, env, problems)
                          for index, item in enumerate(items, 1)) if p is not None]
    fallback: _Layer = {}
    if "resolvers" not in written and any("resolvers" not in own for _, _, own in parsed):
        fallback = _system_default(env, problems, root.line, "defaults")
    base = _merge([_MODEL_LAYER, fallback, defaults])
    endpoints = []
    for host, where, own in parsed:
        merged = _merge([base, own])
        _check_timing(merged, own, where, problems)
        _check_renewal(merged, own, where, problems)
        endpoints.append(_assemble(host, merged))
    problems.raise_if_any()
    return Config(endpoints=tuple(endpoints), source=source), base


def parse_config(text: str, source: str = "<string>", *, resolv_conf: str = DEFAULT_RESOLV_CONF,
                 base_dir: str | None = None) -> Config:
    """Parse probes.yaml text.  Relative ca_file paths start at base_dir (default: cwd)."""
    return _parse_document(text, source, resolv_conf, base_dir)[0]


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read the file: {err.strerror or err}"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: is not UTF-8 text (byte 0x{data[err.start]:02x})"]) from None


def load_config(path: str, *, resolv_conf: str = DEFAULT_RESOLV_CONF) -> Config:
    """Read and parse a probes.yaml; relative ca_file paths start at its directory."""
    return parse_config(_read(path), path, resolv_conf=resolv_conf,
                        base_dir=os.path.dirname(os.path.abspath(path)))


def load_defaults(path: str, *, resolv_conf: str = DEFAULT_RESOLV_CONF) -> Endpoint:
    """The file's defaults as an Endpoint template (hostname ''): pass it as
    build_endpoint(base=...) to probe a hostname the file does not list."""
    _, base = _parse_document(_read(path), path, resolv_conf, os.path.dirname(os.path.abspath(path)))
    if not base["resolvers"][0]:  # every endpoint named its own, so 'system' was never expanded
        base = {**base, "resolvers": (expand_system(resolv_conf), None)}
    return _assemble("", base)


def build_endpoint(hostname: str, overrides: Mapping[str, Any] | None = None,
                   defaults: Mapping[str, Any] | None = None, source: str = "<cli>", *,
                   base: Endpoint | None = None, resolv_conf: str = DEFAULT_RESOLV_CONF,
                   base_dir: str | None = None) -> Endpoint:
    """An Endpoint for `hostname` from dicts of the same keys as probes.yaml.

    Precedence: model defaults < base (an Endpoint, e.g. from load_defaults or the
    file's own entry) < defaults < overrides.  Leave out keys that were not given:
    null means "unset" for the optional keys.  Raises ConfigError like the file does.
    """
    problems = _Problems(source)
    env = _Env(base_dir=base_dir if base_dir is not None else os.getcwd(), resolv_conf=resolv_conf)
    host = _parse_fields(_from_python({"hostname": hostname}), _ENDPOINT_SPEC, env, problems, "")
    where = f"endpoint {_show(host['hostname'][0] if host else hostname)}"
    given: list[_Layer] = []
    written: set[str] = set()
    for name, raw, spec in (("defaults", defaults, _DEFAULTS_SPEC), (where, overrides, _OVERRIDES_SPEC)):
        v = _from_python(raw if raw is not None else {})
        if not v.is_map:
            problems.add(None, name, None, f"must be a mapping (got {_show(v)})")
            continue
        written |= set(v.value)
        given.append(_parse_fields(v, spec, env, problems, name))
    fallback: _Layer = {}
    if "resolvers" not in written and (base is None or not base.resolvers):
        fallback = _system_default(env, problems, None, where)
    # The fallback sits above base: it exists only when base has no resolvers of its own.
    merged = _merge([_MODEL_LAYER, _layer_of(base) if base is not None else {}, fallback, *given])
    _check_timing(merged, _merge(given), where, problems)
    _check_renewal(merged, _merge(given), where, problems)
    problems.raise_if_any()
    return _assemble(host["hostname"][0], merged)
