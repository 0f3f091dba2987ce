"""`prober check` and `prober validate`."""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys

from .config import ConfigError, build_endpoint, load_config, load_defaults, parse_duration
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


# The contract keys the flags of `check` set, so a problem with one is reported by its flag.
_FLAG_OF_KEY = {"resolvers": "--resolver", "authoritative": "--authoritative", "ca_file": "--ca-file",
                "connect_to": "--connect-to", "visibility": "--visibility", "timeout": "--timeout",
                "tls.port": "--https-port", "http.port": "--http-port", "http.health_path": "--health-path"}
_KEY_PROBLEM = re.compile(r"^command line: endpoint [^:]+: key '([a-z_.]+?)(?:\[\d+\][a-z_.]*)?': ")
MAX_CHECK_TIMEOUT = 3600.0  # a one-shot check may wait long; not for ever


def _name_flags(problems: list[str]) -> list[str]:
    out = []
    for problem in problems:
        m = _KEY_PROBLEM.match(problem)
        flag = _FLAG_OF_KEY.get(m.group(1)) if m else None
        out.append(f"{flag}: {problem[m.end():]}" if flag and m else problem)
    return out


def _check_timeout(text: str) -> float:
    """`check` runs once, so no interval bounds its timeout: only sanity does."""
    try:
        seconds = parse_duration(text)
    except ValueError as err:
        raise ConfigError([f"--timeout: {err}"]) from None
    if seconds > MAX_CHECK_TIMEOUT:
        raise ConfigError([f"--timeout: must be at most {MAX_CHECK_TIMEOUT:g}s (got {text!r})"])
    return seconds


def flag_overrides(args: argparse.Namespace) -> dict:
    """The flags as contract keys, so they pass through the config's one validation path."""
    o: dict = {}
    if args.resolver:
        o["resolvers"] = [_resolver_flag(r) for r in args.resolver]
    for flag, key in (("authoritative", "authoritative"), ("ca_file", "ca_file"), ("connect_to", "connect_to"),
                      ("visibility", "visibility")):
        if getattr(args, flag) is not None:
            o[key] = getattr(args, flag)
    if args.timeout is not None:
        o["timeout"] = o["interval"] = _check_timeout(args.timeout)
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
    from .engine import probe, quiet_abandoned_connections
    quiet_abandoned_connections(asyncio.get_running_loop())
    return await asyncio.gather(*(probe(e) for e in endpoints))


def _emit(text: str) -> None:
    """Print, and stay quiet when the reader has gone (`| head -1`): the exit code still tells."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
    except OSError as err:  # a full disk, say: the report is lost
        quiet_stdout()
        from .cli import OutputLost
        raise OutputLost(err.strerror or str(err)) from None


def quiet_stdout() -> None:
    """After a closed pipe: later writes and flushes (at exit too) must not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def check(args: argparse.Namespace) -> int:
    try:
        endpoints = endpoints_for(args)
    except ConfigError as err:
        return _error("\n".join(_name_flags(err.problems)))
    reports = list(asyncio.run(_probe_all(endpoints)))
    worst = max((r.status for r in reports), key=lambda s: SEVERITY_RANK[s])
    from .render import to_json, to_text, use_colour
    if args.json:
        _emit(to_json(reports))
    else:
        from .nagios import first_line
        colour = use_colour(args.color)
        # A `|` on any line starts perfdata for Nagios and Icinga: one in server-sent text (a subject,
        # an error) must not turn the rest of the report into garbage perfdata.
        detail = "\n\n".join(to_text(r, colour) for r in reports).replace("|", "/")
        _emit(first_line(reports) + "\n" + detail)
    return EXIT_CODES[worst]


def validate(path: str) -> int:
    try:
        load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem)
        return EXIT_UNKNOWN
    return 0
