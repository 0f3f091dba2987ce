"""`prober check | serve | validate | demo`: parse arguments, call the engine, render.

Start-up stays light (this runs during incidents): nothing heavier than
argparse is imported until a subcommand needs it.
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3
DEFAULT_LISTEN = "0.0.0.0:9716"


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrap to the terminal; the examples epilog keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """Bad usage is UNKNOWN (3) in the Nagios convention, and one line, not argparse's 2.

    A subcommand's parser reports its own unknown flags (with its own usage and the
    closest flag it has), instead of leaving them to the top-level parser.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"prober: error: {message}", file=sys.stderr)
        sys.exit(EXIT_UNKNOWN)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        known = list(self._option_string_actions)
        if self.prog != "prober" and args is not None:
            # Before argparse's own checks, so `check --jsn` is not reported as a missing HOSTNAME.
            for arg in args:
                if arg == "--":
                    break
                flag = arg.split("=", 1)[0]
                if flag.startswith("--") and not any(k.startswith(flag) for k in known):
                    self.error(_unknown(flag, known))
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != "prober":
            self.error(_unknown(extras[0], known))
        return parsed, extras


def _unknown(flag: str, known: list[str]) -> str:
    import difflib
    close = difflib.get_close_matches(flag.split("=", 1)[0], known, n=1, cutoff=0.6)
    return f"unrecognized argument {flag}" + (f"; did you mean {close[0]}?" if close else "")


def _port(text: str) -> int:
    """A TCP port; argparse names the flag in its error."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535 (got {text!r})")
    return int(text)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="probe hostnames once and print a verdict (Nagios exit codes)",
                       description="Probe each HOSTNAME outside-in (DNS, TLS, HTTP) and print a verdict. "
                                   "The first line is a Monitoring Plugins status line with perfdata. "
                                   "Exit 0 ok, 1 warning, 2 critical, 3 unknown.",
                       epilog=_examples("prober check api.example.com",
                                        "prober check api.example.com www.example.com --json",
                                        "prober check api.example.com --resolver public=1.1.1.1 "
                                        "--resolver internal=10.0.0.2",
                                        "prober check api.example.com --connect-to 203.0.113.10 --timeout 30s",
                                        "prober check api.example.com --config probes.yaml"))
    p.add_argument("hostnames", nargs="+", metavar="HOSTNAME", help="the user-facing name(s) to probe")
    p.add_argument("--config", "-c", metavar="FILE", help="probes.yaml: a hostname found there uses its contract")
    p.add_argument("--resolver", action="append", metavar="[public=|internal=]ADDR[:PORT]",
                   help="ask this resolver (repeatable); replaces the configured list; 'system' = /etc/resolv.conf")
    p.add_argument("--authoritative", metavar="ADDR[:PORT]|auto|off",
                   help="the zone's authoritative server to compare with: auto finds the zone's NS (default), "
                        "off skips the comparison")
    p.add_argument("--ca-file", metavar="PEM", help="extra trust anchors, added to the public store")
    p.add_argument("--connect-to", metavar="ADDR", help="dial this address; SNI and Host stay the hostname")
    p.add_argument("--https-port", type=_port, metavar="N", help="the TLS port (default 443)")
    p.add_argument("--http-port", type=_port, metavar="N", help="the plain-HTTP port of the redirect check (default 80)")
    p.add_argument("--health-path", metavar="PATH", help="the path requested over TLS (default /)")
    p.add_argument("--visibility", choices=("public", "private"),
                   help="public: must resolve to global addresses; private: public resolvers must not answer")
    p.add_argument("--timeout", metavar="SECONDS", help="per-hostname budget, e.g. 5 or 5s (default 10s)")
    p.add_argument("--json", action="store_true",
                   help="one JSON document per hostname (docs/json.md, docs/report.schema.json)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the status words: auto = when stdout is a terminal and NO_COLOR is unset")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="probe on a schedule and export Prometheus metrics",
                       description="Run every endpoint of the config on its interval; serve /metrics, "
                                   "/probe, /report, /-/healthy, /-/ready, /-/reload.",
                       epilog=_examples("prober serve --config probes.yaml",
                                        "prober serve --config probes.yaml --listen 127.0.0.1:9716 --log-level debug",
                                        "prober serve --config probes.yaml --shard ordinal/3 --location eu-west-1"))
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="probes.yaml: the endpoints to probe")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"where to serve (default {DEFAULT_LISTEN})")
    p.add_argument("--shard", metavar="I/N", help="probe only the endpoints of shard I of N ('ordinal/N' takes "
                                                  "I from the pod name's trailing number)")
    p.add_argument("--location", metavar="NAME", help="add location=NAME to every series")
    p.add_argument("--concurrency", type=int, default=256, metavar="N",
                   help="probes in flight at once, per worker (256)")
    p.add_argument("--workers", default="1", metavar="N|auto",
                   help="probing processes, each with its share of the endpoints ('auto': one per usable CPU; 1)")
    p.add_argument("--drop-family", action="append", metavar="NAME",
                   help="leave an optional metric family out of /metrics (repeatable; docs/metrics.md)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="info logs one line per finished probe (default info)")
    p.add_argument("--discover", metavar="PATH", help="also probe the hostnames of the Kubernetes manifests at "
                                                      "PATH (file or directory), re-read on every reload; "
                                                      "the config's own keys win (docs/discover.md)")


_DISCOVER_EPILOG = """examples:
  kubectl get ingress,gateway,httproute,grpcroute,tlsroute,svc,certificate -A -o yaml | prober discover - > probes.yaml
  prober discover manifests/ --class-visibility nginx-internal=private
  kubectl get ingress -A -o json | prober discover - --coverage probes.yaml --json

exit codes: 0 endpoints printed (or coverage complete), 1 nothing found (or coverage incomplete),
3 bad usage or malformed input."""


def _add_discover(sub) -> None:
    p = sub.add_parser("discover", help="write endpoint contracts from Kubernetes objects; --coverage finds "
                                        "unmonitored hostnames",
                       description="Read Kubernetes objects (Ingress; Gateway API Gateway, HTTPRoute, GRPCRoute,\n"
                                   "TLSRoute; LoadBalancer Services with an ExternalDNS hostname; cert-manager\n"
                                   "Certificates) as YAML or JSON and print a probes.yaml with one endpoint per\n"
                                   "hostname.  Keys are set only where the objects say so (docs/discover.md).",
                       epilog=_DISCOVER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", metavar="PATH|-",
                   help="manifest files or directories (*.yaml, *.yml, *.json, recursive); '-' reads stdin "
                        "(the default)")
    p.add_argument("--owner-label", default="team", metavar="KEY",
                   help="the label (or annotation) that names the owning team (default: team)")
    p.add_argument("--class-visibility", action="append", metavar="CLASS=public|private",
                   help="the visibility of an ingress or gateway class (repeatable)")
    p.add_argument("--coverage", metavar="PROBES_YAML",
                   help="compare with this contract file: unmonitored, stale, mismatches, wildcards")
    p.add_argument("--json", action="store_true", help="with --coverage: the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prober", description="Outside-in synthetic endpoint prober: DNS -> TLS -> HTTP, "
                                                "from the user-facing name inward.",
                     epilog=_examples("prober check api.example.com", "prober demo",
                                      "prober serve --config probes.yaml", "prober COMMAND --help"))
    parser.add_argument("--version", action="version", version="prober 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_check(sub)
    _add_serve(sub)
    _add_discover(sub)
    v = sub.add_parser("validate", help="check a probes.yaml; print each problem, or nothing",
                       description="Load a probes.yaml as `prober serve` would and print one line per problem "
                                   "(file:line, endpoint, key). Exit 0 when it is valid, 3 when it is not.",
                       epilog=_examples("prober validate probes.yaml"))
    v.add_argument("config", metavar="FILE", help="the probes.yaml to check")
    d = sub.add_parser("demo", help="start a self-contained lab on loopback and serve it (no root, no internet)",
                       description="Start a lab on loopback (DNS servers, a demo CA, one TLS/HTTP endpoint per "
                                   "failure mode), print one round of verdicts, then serve them like "
                                   "`prober serve` until Ctrl-C. Nothing is left behind on exit.",
                       epilog=_examples("prober demo", "prober demo --once", "prober demo --listen 127.0.0.1:9716"))
    d.add_argument("--listen", default="127.0.0.1:0", metavar="ADDR:PORT",
                   help="where to serve on loopback (default: a free port)")
    d.add_argument("--once", action="store_true", help="print the verdict table and exit")
    d.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the status column: auto = when stdout is a terminal and NO_COLOR is unset")
    return parser


def _skip_unused_imports() -> None:
    """httpcore imports trio whenever it is installed (80-130 ms here); prober never runs on trio."""
    if "trio" not in sys.modules and "httpcore" not in sys.modules:
        sys.modules["trio"] = None  # type: ignore[assignment]  # `import trio` now raises ImportError


class OutputLost(Exception):
    """stdout refused the report (not a closed pipe: a full disk, say)."""


# Commands that hold nothing a finalizer must release once main() returns: no child processes, no
# temporary directories, no open files of their own.  See run().
_NOTHING_TO_RELEASE = frozenset({"check", "validate", "discover"})
_command: str | None = None


def _output_lost(why: str) -> int:
    print(f"prober: could not write the output: {why}", file=sys.stderr)
    return EXIT_UNKNOWN


def main(argv: list[str] | None = None) -> int:
    global _command
    args = build_parser().parse_args(argv)
    _command = args.command
    _skip_unused_imports()
    if args.command is None:
        build_parser().print_help()
        return EXIT_UNKNOWN
    try:
        if args.command == "check":
            from .commands import check
            return check(args)
        if args.command == "validate":
            from .commands import validate
            return validate(args.config)
        if args.command == "serve":
            from .service.app import serve_main
            return serve_main(args)
        if args.command == "discover":
            from .discover import discover_main
            return discover_main(args)
        if args.command == "demo":
            from .lab.demo import demo_main
            return demo_main(args)
    except KeyboardInterrupt:
        print("prober: interrupted (Ctrl-C)" + (" before a verdict" if args.command == "check" else ""),
              file=sys.stderr)
        return EXIT_UNKNOWN
    except OutputLost as err:  # the result is unknown to whoever reads stdout
        return _output_lost(str(err))
    except BrokenPipeError:  # the reader went away (`| head`): no traceback
        from .commands import quiet_stdout
        quiet_stdout()
        return EXIT_OK if args.command == "demo" else EXIT_UNKNOWN
    return EXIT_UNKNOWN


def run() -> None:
    """The `prober` command: main(), then the exit code.

    A one-shot command's output is complete when main() returns; what remains is the interpreter
    tearing down every module (cryptography's, dnspython's, asyncio's), about 80 ms of a 450 ms
    `prober check`.  For the commands that hold nothing to release, stdout and stderr are flushed
    and the process ends at once.  serve and demo stop their workers, servers and lab directory
    inside main() and still exit the ordinary way.
    """
    code = main()
    if _command not in _NOTHING_TO_RELEASE:
        sys.exit(code)
    try:
        sys.stdout.flush()
    except OSError as err:  # the reader went away (quietly), or a full disk: then the result is unknown
        from .commands import quiet_stdout
        quiet_stdout()
        if not isinstance(err, BrokenPipeError):
            code = _output_lost(err.strerror or str(err))
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
