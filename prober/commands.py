"""`prober check` and `prober validate`."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .config import ConfigError, build_endpoint, load_config, load_defaults
from .model import EXIT_CODES, SEVERITY_RANK, Endpoint

EXIT_UNKNOWN = 3


def _error(message: str) -> int:
    print(f"prober: {message}", file=sys.stderr)
    return EXIT_UNKNOWN


def _resolver_flag(text: str) -> object:
    view, sep, address = text.partition("=")
    if sep and view in ("public", "internal"):
        return {"address": address, "view": view}
    if sep:
        raise ConfigError([f"--resolver {text!r}: the view before '=' must be public or internal"])
    return text


def flag_overrides(args: argparse.Namespace) -> dict:
    """The flags as contract keys, so they pass through the config's one validation path."""
    o: dict = {}
    if args.resolver:
        o["resolvers"] = [_resolver_flag(r) for r in args.resolver]
    for flag, key in (("authoritative", "authoritative"), ("ca_file", "ca_file"), ("connect_to", "connect_to"),
                      ("visibility", "visibility"), ("timeout", "timeout")):
        if getattr(args, flag) is not None:
            o[key] = getattr(args, flag)
    if args.https_port is not None:
        o["tls"] = {"port": args.https_port}
    http = {k: v for k, v in (("port", args.http_port), ("health_path", args.health_path)) if v is not None}
    if http:
        o["http"] = http
    return o


def split_target(raw: str) -> tuple[str, dict]:
    """A HOSTNAME argument, or a pasted https:// URL: (hostname, the contract keys the URL gives).

    https://host:8443/healthz is host with tls.port 8443 and health path /healthz.  Anything
    else that is not a bare name (another scheme, user info, a query) is a one-line error.
    """
    if "://" not in raw and "/" not in raw:
        return raw, {}
    from urllib.parse import urlsplit
    bare = "pass the bare hostname (e.g. www.example.com) and --https-port/--health-path"
    try:
        url = urlsplit(raw)
        port = url.port
    except ValueError as err:
        raise ConfigError([f"{raw!r} is not a hostname or a usable URL ({err}): {bare}"]) from None
    if url.scheme.lower() != "https" or not url.hostname:
        raise ConfigError([f"{raw!r} is not a hostname or an https:// URL: {bare}"])
    if url.username is not None or url.query or url.fragment:
        raise ConfigError([f"{raw!r} holds user info, a query or a fragment, which a probe does not send: {bare}"])
    if ":" in url.hostname:  # urlsplit drops the brackets of an IPv6 literal
        raise ConfigError([f"{raw!r} names an IP address: use --connect-to ADDR with the hostname"])
    keys: dict = {}
    if port is not None:
        keys["tls"] = {"port": port}
    if url.path not in ("", "/"):
        keys["http"] = {"health_path": url.path}
    return url.hostname, keys


def _with_url(overrides: dict, keys: dict) -> dict:
    """Flags win over what a pasted URL gave."""
    merged = dict(overrides)
    for section, values in keys.items():
        merged[section] = {**values, **overrides.get(section, {})}
    return merged


def endpoints_for(args: argparse.Namespace) -> list[Endpoint]:
    """A hostname in --config uses its contract, one that is not gets the file's defaults; flags win."""
    from .config import normalize_hostname
    overrides = flag_overrides(args)
    contracts = load_config(args.config).by_hostname() if args.config else {}
    fallback = load_defaults(args.config) if args.config else None
    out = []
    for raw in args.hostnames:
        host, keys = split_target(raw)
        try:
            base = contracts.get(normalize_hostname(host), fallback)
        except ValueError:
            base = fallback  # build_endpoint says what is wrong with the name
        out.append(build_endpoint(host, _with_url(overrides, keys), source="command line", base=base))
    return out


async def _probe_all(endpoints: list[Endpoint]):
    from .engine import probe
    return await asyncio.gather(*(probe(e) for e in endpoints))


def _use_colour(choice: str) -> bool:
    if choice == "always":
        return True
    return choice == "auto" and sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def check(args: argparse.Namespace) -> int:
    try:
        endpoints = endpoints_for(args)
    except ConfigError as err:
        return _error("\n".join(err.problems))
    reports = asyncio.run(_probe_all(endpoints))
    from .render import to_json, to_text
    if args.json:
        print(to_json(list(reports)))
    else:
        colour = _use_colour(args.color)
        print("\n\n".join(to_text(r, colour) for r in reports))
    worst = max((r.status for r in reports), key=lambda s: SEVERITY_RANK[s])
    return EXIT_CODES[worst]


def validate(path: str) -> int:
    try:
        load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem)
        return EXIT_UNKNOWN
    return 0
