"""A lab of endpoints on loopback, one per failure mode of the finding catalogue.

Used by the tests (every finding code made to happen for real), by
`prober demo`, and by the benchmark.  Everything listens on 127.0.0.0/8 on
ephemeral ports; no root, no internet.  Hostnames live under the reserved
`.test` TLD, and addresses that must look public or private in a DNS answer
are data only: such endpoints dial loopback through `connect_to`.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from .dnsserver import DnsServer
from .pki import CA, Issued, self_signed
from .runner import LabLoop
from .webserver import PlainHttpServer, TlsHttpServer

DOMAIN = "lab.test"
HSTS = "max-age=31536000; includeSubDomains"
LOOPBACK = "127.0.0.1"
UNUSED_LOOPBACK = "127.0.0.3"  # "the old load balancer": nothing listens there


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    expect: tuple[str, ...]  # finding codes the probe must report
    status: str  # the overall status the probe must reach
    cert: str = "good"  # good | expired | not_yet_valid | wrong_host | no_intermediate | self_signed | days:N
    tls_mode: str = "normal"  # a TlsHttpServer mode, or "closed" for nothing listening
    tls_min: str | None = None
    plain_mode: str = "redirect"  # a PlainHttpServer mode, or "closed"
    hsts: str | None = HSTS
    health: tuple[int, bytes, dict[str, str]] = (200, b"ok", {})
    dns: dict[str, Any] = field(default_factory=dict)  # per-view answer overrides, see _publish
    contract: dict[str, Any] = field(default_factory=dict)  # extra probes.yaml keys

    @property
    def hostname(self) -> str:
        return f"{self.name}.{DOMAIN}"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("healthy", "full chain, https redirect, HSTS, /healthz 200", (), "ok"),
    Scenario("expiring-20d", "a 90-day leaf with 20 days left (tier warning), past the point where automation "
             "renews", ("tls.expiring", "tls.renewal_overdue"), "warning", cert="days:20"),
    Scenario("expiring-5d", "a 90-day leaf with 5 days left (tier urgent)", ("tls.expiring", "tls.renewal_overdue"),
             "critical", cert="days:5"),
    Scenario("expired", "leaf expired two days ago", ("tls.expired",), "critical", cert="expired"),
    Scenario("not-yet-valid", "leaf valid from next week", ("tls.not_yet_valid",), "critical",
             cert="not_yet_valid"),
    Scenario("wrong-host", "the listener serves another name's certificate",
             ("tls.hostname_mismatch",), "critical", cert="wrong_host"),
    Scenario("missing-intermediate", "leaf served without its intermediate", ("tls.incomplete_chain",),
             "critical", cert="no_intermediate"),
    Scenario("self-signed", "a self-signed leaf", ("tls.untrusted",), "critical", cert="self_signed"),
    Scenario("unexpected-issuer", "issued by the lab CA, the contract expects Let's Encrypt",
             ("tls.unexpected_issuer",), "warning", contract={"tls": {"expect_issuer": "Let's Encrypt"}}),
    Scenario("weak-tls", "still accepts TLS 1.1, and static-RSA suites at security level 0",
             ("tls.weak_protocol", "tls.weak_cipher"), "warning", tls_min="1.0"),
    Scenario("tls-down", "nothing listens on the TLS port", ("tls.connect_failed",), "critical",
             tls_mode="closed"),
    Scenario("tls-garbage", "the TLS port answers garbage", ("tls.handshake_failed",), "critical",
             tls_mode="garbage"),
    Scenario("no-redirect", "http:// answers 200 instead of redirecting", ("http.no_https_redirect",), "warning",
             plain_mode="no_redirect"),
    Scenario("wrong-redirect", "http:// redirects to another host", ("http.redirect_mismatch",), "warning",
             plain_mode="wrong_host"),
    Scenario("no-http", "nothing listens on port 80's stand-in", ("http.connect_failed",), "warning",
             plain_mode="closed"),
    Scenario("no-hsts", "no Strict-Transport-Security header", ("http.missing_hsts",), "warning", hsts=None),
    Scenario("health-503", "the ALB has no healthy targets", ("http.health_failed",), "critical",
             health=(503, b"<html>503 Service Temporarily Unavailable</html>", {"server": "awselb/2.0"})),
    Scenario("waf-blocked", "AWS WAF on the ALB blocks the health check: its block page, no HSTS on it",
             ("http.waf_blocked",), "critical", hsts=None,
             health=(403, b"<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n"
                          b"<center><h1>403 Forbidden</h1></center>\r\n</body>\r\n</html>\r\n",
                     {"server": "awselb/2.0", "content-type": "text/html"})),
    Scenario("stale-dns", "the public resolver still serves the old load balancer",
             ("dns.stale_resolver", "dns.inconsistent", "tls.connect_failed"), "critical",
             dns={"public": {"A": [UNUSED_LOOPBACK], "ttl": 86400}}),
    Scenario("nxdomain", "the name does not exist", ("dns.nxdomain",), "critical", dns={"all": None}),
    Scenario("high-ttl", "TTL of a day on a record that must be able to move fast", ("dns.ttl_above_max",),
             "warning", dns={"all": {"A": [LOOPBACK], "ttl": 86400}}, contract={"dns": {"max_ttl": 300}}),
    Scenario("unexpected-address", "an answer outside the contract's addresses", ("dns.unexpected_address",),
             "critical", dns={"all": {"A": ["127.0.0.9"]}},
             contract={"dns": {"expect_addresses": [LOOPBACK]}, "connect_to": LOOPBACK}),
    Scenario("unexpected-cname", "the name points at the wrong load balancer", ("dns.unexpected_cname",),
             "critical", dns={"all": {"CNAME": f"old-lb.{DOMAIN}"}},
             contract={"dns": {"expect_cname": f"new-lb.{DOMAIN}"}}),
    Scenario("public-internal", "a public name resolving to a private address",
             ("dns.private_address",), "critical", dns={"all": {"A": ["10.20.30.40"]}},
             contract={"visibility": "public", "connect_to": LOOPBACK}),
    Scenario("internal-public", "an internal name answered by a public resolver",
             ("dns.publicly_resolvable",), "critical", dns={"public": {"A": ["203.0.113.50"]}},
             contract={"visibility": "private", "connect_to": LOOPBACK}),
)

DEMO = ("healthy", "expiring-20d", "expiring-5d", "expired", "wrong-host", "missing-intermediate",
        "no-redirect", "health-503", "stale-dns")


def _days(n: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=n)


class Lab:
    """Starts the scenarios' servers on a LabLoop and writes the probes.yaml that describes them."""

    def __init__(self, scenarios: tuple[Scenario, ...] = SCENARIOS, workdir: str | None = None,
                 timeout: float = 3.0, interval: float = 60.0) -> None:
        self.scenarios = {s.name: s for s in scenarios}
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="prober-lab-"))
        self.timeout = timeout
        self.interval = interval
        self.loop = LabLoop()
        # Backdated like a real CA's, so a leaf that expired last week still chains to a valid issuer.
        self.root = CA.root("prober lab root", not_before=_days(-400), not_after=_days(3650))
        self.issuer = self.root.intermediate("prober lab intermediate", not_before=_days(-365),
                                             not_after=_days(1825))
        self.bundle = self.root.write_bundle(self.dir / "lab-root.pem")
        self.resolvers: dict[str, DnsServer] = {}
        self.tls: dict[str, TlsHttpServer] = {}
        self.plain: dict[str, PlainHttpServer] = {}
        self.ports: dict[str, tuple[int, int]] = {}

    # ----------------------------------------------------------------- servers
    def start(self) -> Lab:
        for view in ("internal", "public", "authoritative"):
            self.resolvers[view] = self.loop.start(DnsServer(LOOPBACK, 0))
        for s in self.scenarios.values():
            tls_port = self._start_tls(s)
            self.ports[s.name] = (tls_port, self._start_plain(s, tls_port))
            self._publish(s)
        return self

    def stop(self) -> None:
        self.loop.stop()

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _issue(self, s: Scenario) -> Issued:
        host = [s.hostname]
        if s.cert == "good":
            return self.issuer.issue(host, days_valid=90)
        if s.cert.startswith("days:"):
            left = float(s.cert[5:])  # days left on a 90-day certificate
            return self.issuer.issue(host, not_before=_days(left - 90), not_after=_days(left))
        return {
            "expired": lambda: self.issuer.issue(host, not_before=_days(-92), not_after=_days(-2)),
            "not_yet_valid": lambda: self.issuer.issue(host, not_before=_days(7), not_after=_days(97)),
            "wrong_host": lambda: self.issuer.issue(["www.other.test", "*.other.test"]),
            "no_intermediate": lambda: self.issuer.issue(host, include_chain=False),
            "self_signed": lambda: self_signed(host),
        }[s.cert]()

    def _closed_port(self) -> int:
        """A port nothing listens on: bind, note the number, close."""
        import socket
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            return sock.getsockname()[1]

    def _start_tls(self, s: Scenario) -> int:
        if s.tls_mode == "closed":
            return self._closed_port()
        cert, key = self._issue(s).write(self.dir, s.name)
        server = TlsHttpServer(cert, key, LOOPBACK, 0, mode=s.tls_mode, hsts=s.hsts, min_version=s.tls_min)
        status, body, headers = s.health
        server.route("/healthz", status, body, headers=headers)
        self.tls[s.name] = self.loop.start(server)
        return server.port

    def _start_plain(self, s: Scenario, tls_port: int) -> int:
        if s.plain_mode == "closed":
            return self._closed_port()
        server = self.loop.start(PlainHttpServer(LOOPBACK, 0, mode=s.plain_mode, https_port=tls_port))
        self.plain[s.name] = server
        return server.port

    def _publish(self, s: Scenario) -> None:
        """Put the scenario's name into each view's DNS server: loopback unless the scenario says otherwise."""
        for view, server in self.resolvers.items():
            answer = s.dns.get(view, s.dns.get("all", {"A": [LOOPBACK]}))
            if answer is None:
                continue  # NXDOMAIN in this view
            ttl = answer.get("ttl", 60)
            if "CNAME" in answer:
                server.set(s.hostname, "CNAME", [answer["CNAME"] + "."], ttl=ttl)
                server.set(answer["CNAME"], "A", [LOOPBACK], ttl=ttl)
            else:
                server.set(s.hostname, "A", answer["A"], ttl=ttl)

    # ------------------------------------------------------------------ config
    def defaults(self) -> dict[str, Any]:
        return {
            "timeout": f"{self.timeout:g}s",
            "interval": f"{self.interval:g}s",
            "resolvers": [
                {"address": f"{LOOPBACK}:{self.resolvers['internal'].port}", "view": "internal",
                 "name": "lab-internal"},
                {"address": f"{LOOPBACK}:{self.resolvers['public'].port}", "view": "public", "name": "lab-public"},
            ],
            "authoritative": f"{LOOPBACK}:{self.resolvers['authoritative'].port}",
            "ca_file": self.bundle,
        }

    def endpoint(self, s: Scenario) -> dict[str, Any]:
        tls_port, http_port = self.ports[s.name]
        entry: dict[str, Any] = {"hostname": s.hostname, "owner_team": "lab-team", "app_owner": s.name,
                                 "tls": {"port": tls_port},
                                 "http": {"port": http_port, "health_path": "/healthz"}}
        for key, value in s.contract.items():
            entry[key] = {**entry.get(key, {}), **value} if isinstance(value, dict) else value
        return entry

    def config(self) -> dict[str, Any]:
        return {"defaults": self.defaults(), "endpoints": [self.endpoint(s) for s in self.scenarios.values()]}

    def write_config(self, path: str | Path | None = None) -> str:
        path = Path(path or self.dir / "probes.yaml")
        path.write_text("# generated by prober's lab: every endpoint listens on loopback\n"
                        + yaml.safe_dump(self.config(), sort_keys=False))
        return str(path)
