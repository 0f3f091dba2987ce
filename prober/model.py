"""The data that flows through the prober: contracts in, reports out.

Everything here is a frozen dataclass.  Layers return data, the verdict is
computed from findings in one place (``verdict.py``), and the report is the
single source for text, JSON and metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["ok", "warning", "critical", "unknown"]
Status = Literal["ok", "warning", "critical", "unknown", "skipped"]
LAYERS: tuple[str, ...] = ("dns", "tls", "http")

# Nagios/Icinga plugin convention.
EXIT_CODES: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
SEVERITY_RANK: dict[str, int] = {"ok": 0, "skipped": 0, "warning": 1, "unknown": 2, "critical": 3}

# Certificate lifecycle tiers, in the order of expiry_days.
EXPIRY_TIERS: tuple[str, ...] = ("warning", "high", "urgent", "incident", "outage")


# --------------------------------------------------------------------------
# The finding catalogue.  Codes are a stable interface: alert rules and
# scripts key on them.  Never rename a code; add new ones.
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CodeInfo:
    layer: str
    severity: str  # the default; "varies" codes document their rule in `rule`
    summary: str
    rule: str = ""


CATALOGUE: dict[str, CodeInfo] = {
    "dns.nxdomain": CodeInfo("dns", "critical", "The name does not exist at a resolver (NXDOMAIN)."),
    "dns.resolver_error": CodeInfo(
        "dns", "warning", "A resolver failed: SERVFAIL, REFUSED, timeout or a bad response.",
        "warning while another resolver answered; critical when none did"),
    "dns.inconsistent": CodeInfo(
        "dns", "warning", "Resolvers return different answer sets; the label names the cause found: a stale secondary (serial drift), propagation (a resolver behind the authoritative answer) or split-horizon (the views differ)."),
    "dns.stale_resolver": CodeInfo(
        "dns", "warning", "A recursive resolver serves an answer that differs from the authoritative one."),
    "dns.unexpected_address": CodeInfo(
        "dns", "critical", "An answer holds an address outside dns.expect_addresses."),
    "dns.unexpected_cname": CodeInfo("dns", "critical", "The CNAME target differs from dns.expect_cname."),
    "dns.private_address": CodeInfo(
        "dns", "critical", "A public endpoint resolves to a non-global address (wrong load balancer scheme, or the record is in the public zone by mistake)."),
    "dns.publicly_resolvable": CodeInfo(
        "dns", "critical", "A private endpoint is answered by a resolver of view public (an internal name leaked into the public zone)."),
    "dns.ttl_above_max": CodeInfo("dns", "warning", "An answer's TTL is above dns.max_ttl."),
    "dns.dangling_cname": CodeInfo(
        "dns", "critical", "A CNAME in the chain points at a name that does not exist (NXDOMAIN at the target): "
                           "whoever creates the target takes over the name."),
    "dns.dnssec_bogus": CodeInfo(
        "dns", "critical", "Validating resolvers answer SERVFAIL while the same query with checking disabled "
                           "(CD=1) answers: the zone's DNSSEC does not validate. Validating clients get no "
                           "answer, and CAs refuse to issue or renew certificates for the name."),
    "dns.rrsig_expiring": CodeInfo(
        "dns", "warning", "An answer's RRSIG expires within min(dns.rrsig_min_hours, a tenth of the "
                          "signature's validity period)."),
    "dns.dnssec_missing": CodeInfo(
        "dns", "warning", "dns.dnssec is required, but the answer is not signed (no RRSIG, not validated)."),
    "dns.delegation_mismatch": CodeInfo(
        "dns", "warning", "The parent zone's NS set for the zone (the delegation) differs from the zone's own "
                          "apex NS set."),
    "dns.lame_delegation": CodeInfo(
        "dns", "warning", "A name server of the zone does not answer for it authoritatively (no AA, REFUSED, "
                          "SERVFAIL, a timeout, or its NS name is a CNAME)."),
    "dns.serial_drift": CodeInfo(
        "dns", "warning", "The zone's authoritative servers answer different SOA serials (a secondary that "
                          "stopped transferring, or an update still propagating)."),
    "tls.connect_failed": CodeInfo("tls", "critical", "No TCP connection to the TLS port."),
    "tls.handshake_failed": CodeInfo("tls", "critical", "The TLS handshake did not complete."),
    "tls.hostname_mismatch": CodeInfo(
        "tls", "critical", "The served certificate's SANs do not cover the hostname (RFC 6125)."),
    "tls.incomplete_chain": CodeInfo(
        "tls", "critical", "A served certificate's issuer is neither served nor a trust anchor."),
    "tls.untrusted": CodeInfo("tls", "critical", "The chain ends at a root that is not trusted, or is self-signed."),
    "tls.expired": CodeInfo("tls", "critical", "A certificate in the served chain has expired."),
    "tls.not_yet_valid": CodeInfo("tls", "critical", "A certificate in the served chain is not valid yet."),
    "tls.expiring": CodeInfo(
        "tls", "warning", "The earliest expiry in the chain is within an expiry_days tier.",
        "warning at or under the 30- and 14-day tiers; critical at or under 7 and 3 days"),
    "tls.unexpected_issuer": CodeInfo("tls", "warning", "The leaf's issuer does not contain tls.expect_issuer."),
    "tls.weak_protocol": CodeInfo("tls", "warning", "The server still accepts a protocol below tls_min_version."),
    "http.no_https_redirect": CodeInfo("http", "warning", "http:// does not redirect to https://."),
    "http.redirect_mismatch": CodeInfo(
        "http", "warning", "http:// redirects, but not to https:// on the same hostname."),
    "http.missing_hsts": CodeInfo(
        "http", "warning", "Strict-Transport-Security is missing or its max-age is under one day."),
    "http.health_failed": CodeInfo(
        "http", "critical", "The health path answered the wrong status or body, or did not answer."),
    "http.connect_failed": CodeInfo("http", "warning", "No connection to the plain-HTTP port."),
    "http.waf_blocked": CodeInfo(
        "http", "critical", "The health or redirect request was answered by a WAF or bot-protection block "
                            "page (AWS WAF, Azure WAF, Cloudflare, Akamai, Imperva), not by the application."),
}


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: str
    layer: str
    message: str
    hint: str = ""
    address: str | None = None  # "ADDR:PORT" or resolver name the finding is about
    tier: str | None = None  # tls.expiring: the lifecycle tier crossed

    def to_dict(self) -> dict:
        d = {"code": self.code, "severity": self.severity, "layer": self.layer,
             "message": self.message, "hint": self.hint}
        if self.address is not None:
            d["address"] = self.address
        if self.tier is not None:
            d["tier"] = self.tier
        return d


# --------------------------------------------------------------------------
# The endpoint contract (probes.yaml).  Durations are float seconds.
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolverSpec:
    name: str  # display name, used as the metrics label
    address: str | None  # None for "system" until expanded
    port: int = 53
    view: str = "internal"  # public | internal
    system: bool = False  # came from /etc/resolv.conf


@dataclass(frozen=True, slots=True)
class DnsContract:
    expect_addresses: tuple[str, ...] = ()
    expect_cname: str | None = None
    max_ttl: int | None = None
    dnssec: str = "auto"  # auto | required | off
    rrsig_min_hours: float = 48.0


@dataclass(frozen=True, slots=True)
class TlsContract:
    port: int = 443
    expect_issuer: str | None = None


@dataclass(frozen=True, slots=True)
class HttpContract:
    port: int = 80
    redirect: bool = True
    hsts: bool = True
    health_path: str = "/"
    expect_status: tuple[int, ...] = (200,)
    expect_body: str | None = None  # regex
    headers: tuple[tuple[str, str], ...] = ()  # sent to the health path; values redacted in output


@dataclass(frozen=True, slots=True)
class Endpoint:
    hostname: str
    timeout: float = 10.0
    interval: float = 60.0
    resolvers: tuple[ResolverSpec, ...] = ()
    authoritative: str = "auto"  # "auto" | "off" | "ADDR[:PORT]"
    ca_file: str | None = None
    expiry_days: tuple[int, ...] = (30, 14, 7, 3, 0)
    tls_min_version: str = "1.2"
    visibility: str | None = None  # public | private | None
    owner_team: str | None = None
    app_owner: str | None = None
    tls_termination: str | None = None
    certificate_source: str | None = None
    dns_provider: str | None = None
    ingress_controller: str | None = None
    connect_to: str | None = None  # ADDR (the ports stay the contract's)
    dns: DnsContract = field(default_factory=DnsContract)
    tls: TlsContract = field(default_factory=TlsContract)
    http: HttpContract = field(default_factory=HttpContract)


@dataclass(frozen=True, slots=True)
class Config:
    endpoints: tuple[Endpoint, ...]
    source: str | None = None  # the file it came from

    def by_hostname(self) -> dict[str, Endpoint]:
        return {e.hostname: e for e in self.endpoints}


# --------------------------------------------------------------------------
# Layer results
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolverAnswer:
    resolver: str  # ResolverSpec.name
    server: str  # "ADDR:PORT"
    view: str
    rcode: str  # NOERROR, NXDOMAIN, SERVFAIL, REFUSED, TIMEOUT, ERROR
    addresses: tuple[str, ...] = ()  # A and AAAA, sorted
    cnames: tuple[str, ...] = ()  # the CNAME chain, in order, without trailing dots
    ttl: int | None = None  # the minimum TTL over the answer
    latency_seconds: float = 0.0
    error: str | None = None
    authoritative: bool = False  # asked with RD=0 as one of the zone's servers
    agrees_with_authoritative: bool | None = None
    dnssec: DnssecState | None = None  # None when asked without DO (dns.dnssec: off)

    @property
    def answered(self) -> bool:
        return self.rcode in ("NOERROR", "NXDOMAIN")

    def to_dict(self) -> dict:
        return {"resolver": self.resolver, "server": self.server, "view": self.view,
                "rcode": self.rcode, "answers": list(self.addresses), "cnames": list(self.cnames),
                "ttl": self.ttl, "latency_seconds": round(self.latency_seconds, 6),
                "error": self.error, "agrees_with_authoritative": self.agrees_with_authoritative,
                "dnssec": self.dnssec.to_dict() if self.dnssec else None}


@dataclass(frozen=True, slots=True)
class DnssecState:
    """What one server's answers said about DNSSEC (asked with EDNS and DO=1)."""
    validated: bool = False  # AD set on every answer
    signed: bool = False  # RRSIGs came with the answer
    rrsig_expires: float | None = None  # the earliest RRSIG expiration (unix seconds)
    rrsig_validity: float | None = None  # that signature's expiration minus inception (seconds)
    rrsig_signer: str | None = None
    ede: tuple[str, ...] = ()  # Extended DNS Errors (RFC 8914): "Signature Expired (7): text"
    bogus: bool = False  # SERVFAIL, while the same query with CD=1 answered
    checking_disabled_rcode: str | None = None  # the CD=1 retry's rcode, when one was made
    failure: str | None = None  # which signature or key failed, from our own validation

    def to_dict(self) -> dict:
        return {"validated": self.validated, "signed": self.signed,
                "rrsig_expires_at": self.rrsig_expires, "rrsig_signer": self.rrsig_signer,
                "extended_errors": list(self.ede), "bogus": self.bogus,
                "checking_disabled_rcode": self.checking_disabled_rcode, "failure": self.failure}


@dataclass(frozen=True, slots=True)
class ServerCheck:
    """One name server of a zone, asked for the zone's SOA with RD=0."""
    name: str  # the NS target
    address: str | None
    rcode: str  # NOERROR, REFUSED, SERVFAIL, TIMEOUT, ERROR, NOADDRESS
    authoritative: bool = False  # AA set on a NOERROR answer
    serial: int | None = None
    problem: str | None = None  # why it is lame, in words

    def to_dict(self) -> dict:
        return {"name": self.name, "address": self.address, "rcode": self.rcode,
                "authoritative": self.authoritative, "serial": self.serial, "problem": self.problem}


@dataclass(frozen=True, slots=True)
class Delegation:
    """A zone's delegation and its servers, checked on a per-zone cadence."""
    zone: str
    parent: str | None = None
    parent_ns: tuple[str, ...] | None = None  # None when the parent did not answer
    child_ns: tuple[str, ...] = ()
    servers: tuple[ServerCheck, ...] = ()
    parent_error: str | None = None
    ns_total: int = 0  # NS records before the fan-out bound
    checked_at: float = 0.0  # unix seconds

    def to_dict(self) -> dict:
        return {"zone": self.zone, "parent": self.parent,
                "parent_ns": list(self.parent_ns) if self.parent_ns is not None else None,
                "child_ns": list(self.child_ns), "servers": [s.to_dict() for s in self.servers],
                "parent_error": self.parent_error, "ns_total": self.ns_total, "checked_at": self.checked_at}


@dataclass(frozen=True, slots=True)
class DnsResult:
    resolvers: tuple[ResolverAnswer, ...] = ()
    authoritative: tuple[ResolverAnswer, ...] = ()
    addresses: tuple[str, ...] = ()  # what the TLS layer dials, in order
    zone: str | None = None
    duration_seconds: float = 0.0
    delegation: Delegation | None = None


@dataclass(frozen=True, slots=True)
class CertInfo:
    position: str  # leaf | intermediate | root
    subject: str
    issuer: str
    sans: tuple[str, ...]
    serial: str  # hex, lower case
    not_before: float  # unix seconds
    not_after: float
    days_left: float
    key_type: str
    key_size: int | None
    signature_algorithm: str
    fingerprint_sha256: str
    self_signed: bool = False

    def to_dict(self) -> dict:
        from datetime import datetime, timezone

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        return {"position": self.position, "subject": self.subject, "issuer": self.issuer,
                "sans": list(self.sans), "serial": self.serial, "not_before": iso(self.not_before),
                "not_after": iso(self.not_after), "days_left": round(self.days_left, 2),
                "key_type": self.key_type, "key_size": self.key_size,
                "signature_algorithm": self.signature_algorithm,
                "fingerprint_sha256": self.fingerprint_sha256}


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """What x509.verify_chain concluded about one served chain."""
    verified: bool  # trusted, valid now, and covers the hostname
    hostname_match: bool
    trusted: bool  # builds to a trust anchor (ignoring hostname and time)
    incomplete: bool  # a served cert's issuer is neither served nor an anchor
    self_signed_leaf: bool
    expired: tuple[str, ...] = ()  # positions/subjects of expired certs
    not_yet_valid: tuple[str, ...] = ()
    error: str | None = None  # the verifier's own words, when it failed


@dataclass(frozen=True, slots=True)
class TlsTarget:
    address: str  # the IP dialled
    port: int
    connected: bool = False
    handshake: bool = False
    error: str | None = None
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    chain: tuple[CertInfo, ...] = ()
    verdict: ChainVerdict | None = None
    weak_protocol: str | None = None  # the lowest protocol below tls_min_version it accepted
    connect_seconds: float | None = None
    tls_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsResult:
    targets: tuple[TlsTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpExchange:
    url: str
    address: str | None = None
    status: int | None = None
    location: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # selected response headers, redacted where needed
    body_excerpt: str | None = None
    body_bytes: int = 0
    error: str | None = None
    edge: str | None = None  # which layer answered, when its signature is recognised
    ok: bool = False
    first_byte_seconds: float | None = None
    blocked_by: str | None = None  # the WAF or bot protection whose block page answered

    def to_dict(self) -> dict:
        return {"url": self.url, "address": self.address, "status": self.status,
                "location": self.location, "ok": self.ok, "error": self.error, "edge": self.edge,
                "blocked_by": self.blocked_by,
                "body_bytes": self.body_bytes,
                "first_byte_seconds": None if self.first_byte_seconds is None
                else round(self.first_byte_seconds, 6)}


@dataclass(frozen=True, slots=True)
class HttpResult:
    redirect: HttpExchange | None = None
    health: tuple[HttpExchange, ...] = ()  # one per address probed over TLS
    hsts: str | None = None  # the header value, from the primary address


@dataclass(frozen=True, slots=True)
class LayerResult:
    name: str
    status: str  # ok | warning | critical | skipped
    duration_seconds: float
    findings: tuple[Finding, ...] = ()
    reason: str | None = None  # why it was skipped


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str
    layer: str | None
    code: str | None
    message: str
    hint: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    hostname: str
    endpoint: Endpoint
    started_at: float  # unix seconds
    duration_seconds: float
    status: str
    verdict: Verdict
    layers: tuple[LayerResult, ...]
    findings: tuple[Finding, ...]
    dns: DnsResult
    tls: TlsResult
    http: HttpResult
    phases: dict[str, float] = field(default_factory=dict)  # dns, connect, tls, first_byte
