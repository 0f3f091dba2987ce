"""The nginx edge of the e2e tier: one nginx, one server block per failure mode, a test PKI.

Every site is a hostname under e2e.test that nginx serves (or, for
`unknown-sni`, does not: its default_server answers), with the finding
codes, status and alerts the prober and the shipped rules must produce for
it.  The certificates come from prober.lab.pki: a root and an intermediate
backdated like a real CA's, so an expired leaf still chains to valid issuers.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from harness import Service, free_port, tcp_open, tool
from prober.lab.catalogue import nginx_conf
from prober.lab.pki import CA, Issued
from prober.lab.runner import LabLoop
from prober.lab.webserver import PlainHttpServer

DOMAIN = "e2e.test"
HSTS = "max-age=31536000; includeSubDomains"
SLOW_SECONDS = 30.0  # the slow upstream's delay: far past any probe timeout here


@dataclass(frozen=True)
class Site:
    name: str
    description: str
    expect: tuple[str, ...]  # the finding codes `prober check` must report, exactly
    status: str
    cert: str = "good"  # good | expired | days:N | leaf_only | none (nginx's default_server answers)
    plain: str = "redirect"  # port 80: redirect | no_redirect | elsewhere
    health: str = "ok"  # /healthz: ok | 503 | slow (proxied to an upstream that answers too late)
    hsts: bool = True
    tier: str | None = None  # tls.expiring's tier
    listen: tuple[str, ...] = ("edge",)  # which of Edge.addresses the site's server blocks listen on
    alerts: tuple[str, ...] = ()  # the alerts the shipped rules must raise for it, exactly

    @property
    def hostname(self) -> str:
        return f"{self.name}.{DOMAIN}"


SITES: tuple[Site, ...] = (
    Site("healthy", "full chain, https redirect, HSTS, /healthz 200", (), "ok"),
    Site("unknown-sni", "no server block: the default_server answers with another name's certificate",
         ("tls.hostname_mismatch",), "critical", cert="none", alerts=("ProberTLSHostnameMismatch",)),
    Site("leaf-only", "ssl_certificate holds the leaf without its intermediate", ("tls.incomplete_chain",),
         "critical", cert="leaf_only", alerts=("ProberTLSChainNotVerified",)),
    Site("expired", "the leaf expired two days ago", ("tls.expired",), "critical", cert="expired",
         alerts=("ProberCertificateExpiryOutage",)),
    Site("expiring", "a 90-day leaf with 10 days left (tier high), past its renewal point",
         ("tls.expiring", "tls.renewal_overdue"), "warning", cert="days:10", tier="high",
         alerts=("ProberCertificateExpiryHigh", "ProberCertificateRenewalOverdue")),
    Site("no-redirect", "port 80 answers 200 instead of redirecting", ("http.no_https_redirect",), "warning",
         plain="no_redirect", alerts=("ProberHTTPNoHTTPSRedirect",)),
    Site("wrong-redirect", "port 80 redirects to another host", ("http.redirect_mismatch",), "warning",
         plain="elsewhere", alerts=("ProberHTTPNoHTTPSRedirect",)),
    Site("down", "/healthz answers 503", ("http.health_failed",), "critical", health="503",
         alerts=("ProberEndpointDownHTTP",)),
    Site("slow", "/healthz is proxied to an upstream slower than the probe timeout", ("http.health_failed",),
         "critical", health="slow", alerts=("ProberEndpointDownHTTP",)),
    Site("no-hsts", "no Strict-Transport-Security header", ("http.missing_hsts",), "warning", hsts=False,
         alerts=("ProberHTTPMissingHSTS",)),
)
# The name whose A record moves from the old load balancer to the new one (test_dns_propagation).
WWW = Site("www", "served on the edge and on both load balancers; its DNS record moves", (), "ok",
           listen=("edge", "old-lb", "new-lb"))
BY_NAME: dict[str, Site] = {s.name: s for s in (*SITES, WWW)}


def _days(n: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=n)


class Edge:
    """nginx on loopback serving every Site, plus the slow upstream and the PKI it needs."""

    def __init__(self, workdir: Path, subnet: str) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.addresses = {"edge": f"{subnet}.1", "old-lb": f"{subnet}.10", "new-lb": f"{subnet}.20"}
        self.address = self.addresses["edge"]
        all_addresses = tuple(self.addresses.values())
        self.tls_port = free_port(*all_addresses)
        self.http_port = free_port(*all_addresses)
        self.root = CA.root("e2e root", not_before=_days(-400), not_after=_days(3650))
        self.issuer = self.root.intermediate("e2e intermediate", not_before=_days(-365), not_after=_days(1825))
        self.ca_file = self.root.write_bundle(workdir / "pki" / "root.pem")
        self.loop = LabLoop()
        self.upstream: PlainHttpServer | None = None
        self.nginx: Service | None = None

    # ----------------------------------------------------------------- servers
    def start(self) -> Edge:
        self.upstream = self.loop.start(PlainHttpServer(self.address, 0, mode="no_redirect"))
        self.upstream.route("/healthz", 200, b"too late", delay=SLOW_SECONDS)
        conf = self.dir / "nginx.conf"
        conf.write_text(self.nginx_conf())
        self.nginx = Service("nginx", [tool("nginx"), "-p", f"{self.dir}/", "-c", conf, "-g", "daemon off;"],
                             self.dir, extra_logs=[self.dir / "access.log"])
        self.nginx.start(lambda: all(tcp_open(a, p) for a in self.addresses.values()
                                     for p in (self.tls_port, self.http_port)))
        return self

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        self.loop.stop()

    # --------------------------------------------------------------------- PKI
    def _issue(self, site: Site) -> Issued:
        host = [site.hostname]
        if site.cert == "good":
            return self.issuer.issue(host, days_valid=90)
        if site.cert == "expired":
            return self.issuer.issue(host, not_before=_days(-92), not_after=_days(-2))
        if site.cert.startswith("days:"):
            left = float(site.cert[5:])  # days left on a 90-day certificate
            return self.issuer.issue(host, not_before=_days(left - 90), not_after=_days(left))
        if site.cert == "leaf_only":
            return self.issuer.issue(host, include_chain=False)
        raise ValueError(f"site {site.name}: unknown cert kind {site.cert!r}")

    # ------------------------------------------------------------------- nginx
    def nginx_conf(self) -> str:
        blocks = [self._default_servers()] + [self._site_servers(s) for s in (*SITES, WWW) if s.cert != "none"]
        return nginx_conf(self.dir, "tests/e2e/edge.py", "".join(blocks),
                          f"    proxy_read_timeout {SLOW_SECONDS * 2:g}s;\n")

    def _listen(self, names: tuple[str, ...], port: int, extra: str = "") -> str:
        return "".join(f"        listen {self.addresses[n]}:{port}{extra};\n" for n in names)

    def _default_servers(self) -> str:
        """What answers a name nginx has no server block for: a redirect, and an unrelated certificate."""
        cert, key = self.issuer.issue(["default.other.test"]).write(self.dir / "pki", "default")
        names = tuple(self.addresses)
        return f"""
    server {{
{self._listen(names, self.http_port, ' default_server')}        server_name _;
        return 301 https://$host:{self.tls_port}$request_uri;
    }}
    server {{
{self._listen(names, self.tls_port, ' ssl default_server')}        server_name _;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        add_header Strict-Transport-Security "{HSTS}" always;
        location = /healthz {{ return 200 "default\\n"; }}
    }}
"""

    def _site_servers(self, site: Site) -> str:
        cert, key = self._issue(site).write(self.dir / "pki", site.name)
        hsts = f'        add_header Strict-Transport-Security "{HSTS}" always;\n' if site.hsts else ""
        assert self.upstream is not None, "start() starts the slow upstream before writing nginx.conf"
        health = {"ok": 'return 200 "ok\\n";', "503": 'return 503 "no healthy upstream\\n";',
                  "slow": f"proxy_pass http://{self.upstream.address};"}
        plain = {"redirect": f"return 301 https://$host:{self.tls_port}$request_uri;",
                 "no_redirect": 'return 200 "plain http\\n";',
                 "elsewhere": f"return 301 https://elsewhere.{DOMAIN}:{self.tls_port}/;"}
        return f"""
    server {{
{self._listen(site.listen, self.http_port)}        server_name {site.hostname};
        {plain[site.plain]}
    }}
    server {{
{self._listen(site.listen, self.tls_port, ' ssl')}        server_name {site.hostname};
        ssl_certificate {cert};
        ssl_certificate_key {key};
{hsts}        location = /healthz {{ {health[site.health]} }}
        location / {{ return 200 "{site.name}\\n"; }}
    }}
"""

    # ------------------------------------------------------------------ config
    def entry(self, site: Site, timeout: float, dns: dict[str, Any], connect: bool = True) -> dict[str, Any]:
        """The site's probes.yaml entry: every key that matters is explicit, never a default.

        `dns` holds `resolvers` and `authoritative` (the unbound instances and
        knot).  With `connect` the probe dials the edge whatever DNS says
        (connect_to); without it, it dials the addresses DNS answers.
        """
        entry: dict[str, Any] = {
            "hostname": site.hostname, "owner_team": f"team-{site.name}", "app_owner": f"app-{site.name}",
            "timeout": f"{timeout:g}s", "ca_file": self.ca_file, **dns,
            "tls": {"port": self.tls_port},
            "http": {"port": self.http_port, "health_path": "/healthz"},
        }
        if connect:
            entry["connect_to"] = self.address
        return entry

    def write_config(self, path: Path, entries: list[dict[str, Any]], interval: float) -> Path:
        # Each entry sets its own timeout; the default only has to be valid (no more than the interval).
        doc = {"defaults": {"interval": f"{interval:g}s", "timeout": f"{interval:g}s"}, "endpoints": entries}
        path.write_text("# generated by tests/e2e: every address is on loopback\n"
                        + yaml.safe_dump(doc, sort_keys=False))
        return path
