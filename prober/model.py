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
    "tls.weak_key": CodeInfo(
        "tls", "critical", "A served certificate's key is below the floor: RSA under tls.min_rsa_bits (2048), DSA, "
        "or an EC curve outside tls.ec_curves (P-256/P-384/P-521)."),
    "tls.weak_signature": CodeInfo(
        "tls", "critical", "A served certificate other than a trust anchor is signed with SHA-1 or MD5 "
        "(SHA-1 allowed by tls.allow_sha1)."),
    "tls.profile_violation": CodeInfo(
        "tls", "warning", "The chain reaches a trust anchor under an OpenSSL-style path check but breaks the strict "
        "Web PKI certificate profile (e.g. basicConstraints not critical): some clients refuse it."),
    "tls.revoked": CodeInfo("tls", "critical", "A served certificate is revoked (CRL, OCSP or a stapled OCSP response)."),
    "tls.revocation_unknown": CodeInfo(
        "tls", "warning", "The revocation status could not be determined: CRL unreachable, oversized, past its "
        "nextUpdate or badly signed, or an OCSP error."),
    "tls.weak_cipher": CodeInfo(
        "tls", "warning", "The server accepts a weak cipher suite: static-RSA key exchange, CBC with SHA-1, 3DES, "
        "RC4, NULL or anonymous.",
        "critical when default clients refuse the connection because it offers only such suites; warning otherwise"),
    "tls.weak_dh": CodeInfo(
        "tls", "warning", "The server uses a Diffie-Hellman group under 2048 bits.",
        "critical when default clients refuse the connection because of it; warning otherwise"),
    "tls.client_cert_required": CodeInfo(
        "tls", "critical", "The server requires a client certificate (mTLS).",
        "critical when the contract gives no tls.client_cert (the probe cannot see past it); warning when the "
        "one given is refused"),
    # Renewal assurance (prober/renewal.py, prober/ari.py, prober/caa.py)
    "tls.renewal_overdue": CodeInfo(
        "tls", "warning", "The served leaf is past its expected renewal point (a share of its lifetime, or the "
        "CA's own renewal window) and has not been replaced.",
        "warning past renewal_at + renewal_grace of the lifetime or the CA's window start; critical once the CA's "
        "renewal window (ARI) has ended"),
    "tls.mixed_certificates": CodeInfo(
        "tls", "warning", "The addresses of one hostname serve different leaves, and one is stale: past its "
        "renewal point, or in a worse expiry tier than the newest."),
    "dns.caa_forbids_issuer": CodeInfo(
        "dns", "warning", "The CAA records relevant to the hostname do not permit the CA that issued the served "
        "leaf, or the one certificate_source implies: the next renewal will fail."),
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
class ClientCert:
    """tls.client_cert: the certificate the probe presents to an mTLS endpoint."""
    cert_file: str
    key_file: str


@dataclass(frozen=True, slots=True)
class TlsContract:
    port: int = 443
    expect_issuer: str | None = None
    renewal_at: float = 2 / 3  # share of the lifetime after which automation renews
    renewal_grace: float = 0.1  # share of the lifetime allowed past renewal_at before it is overdue
    ari: str = "auto"  # auto | off | URL of an ACME directory
    caa_identities: tuple[str, ...] = ()  # CAA issuer domains of the CA that issues this certificate
    # Key and signature floors (defaults: prober/tlspolicy.py, the public Web PKI's).
    min_rsa_bits: int = 2048
    ec_curves: tuple[str, ...] = ("P-256", "P-384", "P-521")
    allow_sha1: bool = False
    revocation: str = "auto"  # auto | off
    client_cert: ClientCert | None = None


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
    # A tier's threshold is min(expiry_days[i], expiry_fractions[i] x lifetime); None: plain days.
    expiry_fractions: tuple[float, ...] | None = (1 / 3, 1 / 6, 1 / 12, 1 / 30)
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
    authority_key_id: str = ""  # hex keyIdentifier of the AuthorityKeyIdentifier, "" when absent
    curve: str | None = None  # EC keys: P-256, P-384, ... (tlspolicy.CURVE_NAMES)
    signature_hash: str | None = None  # sha256, sha1, md5, ...; None for EdDSA

    def to_dict(self) -> dict:
        from datetime import datetime, timezone

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        return {"position": self.position, "subject": self.subject, "issuer": self.issuer,
                "sans": list(self.sans), "serial": self.serial, "not_before": iso(self.not_before),
                "not_after": iso(self.not_after), "days_left": round(self.days_left, 2),
                "key_type": self.key_type, "key_size": self.key_size,
                "signature_algorithm": self.signature_algorithm,
                "fingerprint_sha256": self.fingerprint_sha256, "curve": self.curve}


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
    error: str | None = None  # why strict verification failed, in words
    anchored: bool = False  # an OpenSSL-style path check (signatures, CA:TRUE, names) reaches an anchor
    profile_defect: str | None = None  # anchored, but the strict profile refuses: what is wrong, in words
    strict_cause: str | None = None  # weak_signature | weak_key | profile, when anchored but not trusted
    path: tuple[int, ...] = ()  # indices of the served certificates on the anchored path, leaf first
    anchor: str | None = None  # SHA-256 fingerprint of the store's anchor ending that path, if not served
    revocable: tuple[int, ...] = ()  # positions on that path whose revocation status can be asked


@dataclass(frozen=True, slots=True)
class AltChain:
    """A chain the listener serves to another kind of client than the main handshake's."""
    clients: str  # e.g. "RSA-only clients"
    version: str | None
    cipher: str | None
    chain: tuple[CertInfo, ...]
    verdict: ChainVerdict | None


@dataclass(frozen=True, slots=True)
class Revocation:
    """The revocation status of one served certificate."""
    position: str
    subject: str
    status: str  # good | revoked | unknown
    source: str  # crl | ocsp | stapled
    detail: str = ""  # a sentence: the reason it is unknown, or the revocation date and reason


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
    alternates: tuple[AltChain, ...] = ()  # chains other clients get (RSA-only), when they differ
    weak_cipher: tuple[str, str] | None = None  # (suite, protocol) accepted from the weak-only offer
    weak_dh: bool = False  # DHE with a group under 2048 bits
    client_cert_requested: bool = False  # the server sent a CertificateRequest
    revocation: tuple[Revocation, ...] = ()

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
    renewal: Renewal | None = None  # the renewal state of the newest served leaf
    caa: CaaCheck | None = None
    notes: tuple[str, ...] = ()  # facts that are not findings (an ARI fetch that failed, a CAA not checked)


@dataclass(frozen=True, slots=True)
class AriWindow:
    """The CA's suggested renewal window for one certificate (RFC 9773)."""
    start: float  # unix seconds
    end: float
    url: str  # the renewalInfo URL asked
    explanation_url: str | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """When the served leaf should have been renewed, and the thresholds it is judged by."""
    serial: str
    not_before: float
    not_after: float
    lifetime_days: float
    thresholds_days: tuple[float, ...]  # effective, per EXPIRY_TIERS, of the soonest-expiring served certificate
    lifetime_due: float  # not_before + (renewal_at + renewal_grace) x lifetime
    due: float  # the earlier of lifetime_due and the CA window's start + grace
    ari: AriWindow | None = None

    def to_dict(self) -> dict:
        from datetime import datetime, timezone

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        return {"serial": self.serial, "lifetime_days": round(self.lifetime_days, 4),
                "thresholds_days": dict(zip(EXPIRY_TIERS, (round(t, 4) for t in self.thresholds_days))),
                "lifetime_due": iso(self.lifetime_due), "due": iso(self.due),
                "ari": None if self.ari is None else {"start": iso(self.ari.start), "end": iso(self.ari.end),
                                                      "url": self.ari.url,
                                                      "explanation_url": self.ari.explanation_url}}


@dataclass(frozen=True, slots=True)
class CaaCheck:
    """The relevant CAA record set for the hostname (RFC 8659), as found."""
    name: str  # the hostname asked about
    found_at: str | None  # the name the relevant RRset sits at; None when there is none
    records: tuple[tuple[int, str, str], ...] = ()  # (flags, tag, value)
    wildcard: bool = False  # judged by issuewild

    def to_dict(self) -> dict:
        return {"name": self.name, "found_at": self.found_at, "wildcard": self.wildcard,
                "records": [{"flags": f, "tag": t, "value": v} for f, t, v in self.records]}
