"""Findings -> status and verdict, in one place.

The verdict is the first layer, outside-in, with a critical finding, and the
most important finding there, written as a sentence a person can act on.
"""
from __future__ import annotations

from .model import CATALOGUE, LAYERS, SEVERITY_RANK, Finding, LayerResult, Verdict

# Within a layer, the finding that explains the most comes first.
_PRIORITY = {code: i for i, code in enumerate((
    "dns.dangling_cname", "dns.nxdomain", "dns.dnssec_bogus", "dns.private_address", "dns.publicly_resolvable",
    "dns.unexpected_address", "dns.unexpected_cname", "dns.resolver_error",
    "dns.serial_drift", "dns.stale_resolver", "dns.inconsistent",  # a stale secondary explains the other two
    "dns.lame_delegation", "dns.delegation_mismatch", "dns.rrsig_expiring", "dns.dnssec_missing",
    "dns.ttl_above_max",
    "tls.connect_failed", "tls.handshake_failed", "tls.expired", "tls.hostname_mismatch", "tls.incomplete_chain",
    "tls.untrusted", "tls.not_yet_valid", "tls.expiring", "tls.unexpected_issuer", "tls.weak_protocol",
    "http.waf_blocked", "http.health_failed", "http.connect_failed", "http.no_https_redirect", "http.redirect_mismatch",
    "http.missing_hsts",
))}
_LAYER_TITLE = {"dns": "DNS", "tls": "TLS", "http": "HTTP"}


def worst(severities) -> str:
    result = "ok"
    for s in severities:
        if SEVERITY_RANK[s] > SEVERITY_RANK[result]:
            result = s
    return result


def layer_status(findings: list[Finding] | tuple[Finding, ...]) -> str:
    return worst(f.severity for f in findings)


def _rank(f: Finding) -> tuple[int, int]:
    return (-SEVERITY_RANK[f.severity], _PRIORITY.get(f.code, len(_PRIORITY)))


def decide(hostname: str, layers: tuple[LayerResult, ...], findings: tuple[Finding, ...]) -> Verdict:
    status = worst([f.severity for f in findings] + [l.status for l in layers if l.status == "unknown"])
    for severity in ("critical", "warning"):
        for layer in LAYERS:
            here = sorted((f for f in findings if f.layer == layer and f.severity == severity), key=_rank)
            if here:
                top = here[0]
                more = f" (+{len(findings) - 1} more finding{'s' if len(findings) > 2 else ''})" \
                    if len(findings) > 1 else ""
                return Verdict(status=status, layer=layer, code=top.code,
                               message=f"{_LAYER_TITLE[layer]}: {top.message}{more}", hint=top.hint)
    skipped = [l for l in layers if l.status == "skipped"]
    if skipped:
        return Verdict(status=status, layer=None, code=None,
                       message=f"{hostname}: no finding, but {', '.join(l.name for l in skipped)} did not run "
                               f"({skipped[0].reason})")
    return Verdict(status=status, layer=None, code=None,
                   message=f"{hostname}: DNS, TLS and HTTP all answer as the contract says")


def catalogue_rows() -> list[tuple[str, str, str, str]]:
    return [(code, info.layer, info.rule or info.severity, info.summary) for code, info in CATALOGUE.items()]
