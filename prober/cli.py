"""`prober check | serve | validate | demo`: parse arguments, call the engine, render.

Start-up stays light (this runs during incidents): nothing heavier than
argparse is imported until a subcommand needs it.
"""
from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3
DEFAULT_LISTEN = "0.0.0.0:9716"


class _Parser(argparse.ArgumentParser):
    """Bad usage is UNKNOWN (3) in the Nagios convention, and one line, not argparse's 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"prober: error: {message}", file=sys.stderr)
        sys.exit(EXIT_UNKNOWN)


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="probe hostnames once and print a verdict (Nagios exit codes)",
                       description="Probe each HOSTNAME outside-in (DNS, TLS, HTTP) and print a verdict. "
                                   "Exit 0 ok, 1 warning, 2 critical, 3 unknown.")
    p.add_argument("hostnames", nargs="+", metavar="HOSTNAME")
    p.add_argument("--config", "-c", help="probes.yaml: a hostname found there uses its contract")
    p.add_argument("--resolver", action="append", metavar="[public=|internal=]ADDR[:PORT]",
                   help="ask this resolver (repeatable); replaces the configured list; 'system' = /etc/resolv.conf")
    p.add_argument("--authoritative", metavar="ADDR[:PORT]|auto|off")
    p.add_argument("--ca-file", metavar="PEM", help="extra trust anchors, added to the public store")
    p.add_argument("--connect-to", metavar="ADDR", help="dial this address; SNI and Host stay the hostname")
    p.add_argument("--https-port", type=int, metavar="N")
    p.add_argument("--http-port", type=int, metavar="N")
    p.add_argument("--health-path", metavar="PATH")
    p.add_argument("--visibility", choices=("public", "private"))
    p.add_argument("--timeout", metavar="SECONDS", help="per-hostname budget, e.g. 5 or 5s")
    p.add_argument("--json", action="store_true", help="one JSON document per hostname (docs/json-schema.md)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="probe on a schedule and export Prometheus metrics",
                       description="Run every endpoint of the config on its interval; serve /metrics, "
                                   "/probe, /report, /-/healthy, /-/ready, /-/reload.")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"where to serve (default {DEFAULT_LISTEN})")
    p.add_argument("--shard", metavar="I/N", help="probe only the endpoints of shard I of N ('ordinal/N' takes "
                                                  "I from the pod name's trailing number)")
    p.add_argument("--location", metavar="NAME", help="add location=NAME to every series")
    p.add_argument("--concurrency", type=int, default=256, metavar="N", help="probes in flight at once (256)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
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
                                                "from the user-facing name inward.")
    parser.add_argument("--version", action="version", version="prober 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_check(sub)
    _add_serve(sub)
    _add_discover(sub)
    v = sub.add_parser("validate", help="check a probes.yaml; print each problem, or nothing")
    v.add_argument("config")
    d = sub.add_parser("demo", help="start a self-contained lab on loopback and serve it (no root, no internet)")
    d.add_argument("--listen", default="127.0.0.1:0", metavar="ADDR:PORT")
    d.add_argument("--once", action="store_true", help="print the verdict table and exit")
    return parser


def _skip_unused_imports() -> None:
    """httpcore imports trio whenever it is installed (80-130 ms here); prober never runs on trio."""
    if "trio" not in sys.modules and "httpcore" not in sys.modules:
        sys.modules["trio"] = None  # type: ignore[assignment]  # `import trio` now raises ImportError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        return EXIT_UNKNOWN
    return EXIT_UNKNOWN


if __name__ == "__main__":
    sys.exit(main())
