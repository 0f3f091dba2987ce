"""Renewal assurance: lifetime-relative expiry tiers, renewal overdue, stale listeners, ARI and CAA.

Fixed day counts were written for 90- and 398-day certificates: a healthy
six-day certificate would sit in a critical tier half its life, and a
200-day one that failed to renew would look fine until 30 days before it
ends.  So a tier's threshold is a share of the certificate's own lifetime,
capped at the contract's days, and a leaf past the point where automation
renews it (or past the start of its CA's own renewal window) is overdue.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from . import ari, caa
from .hints import hint_for
from .model import CATALOGUE, EXPIRY_TIERS, CaaCheck, CertInfo, Endpoint, Finding, Renewal, TlsResult, TlsTarget
from .x509 import expiry_tier

_DAY = 86400.0

# What to inspect next when renewal did not happen, per certificate_source.
RENEWAL_INSPECT: dict[str, str] = {
    "cert-manager": "the cert-manager Certificate and its CertificateRequest, Order and Challenge "
                    "(kubectl describe certificate,certificaterequest,order,challenge -A)",
    "acm": "the ACM certificate's RenewalSummary and its DNS validation CNAME "
           "(aws acm describe-certificate --certificate-arn <arn>; dig CNAME of the _validation record)",
    "lets-encrypt": "the ACME client's renewal log and timer (certbot renew --dry-run; systemctl list-timers)",
    "key-vault": "the Key Vault certificate's lifetime action and its issuer (az keyvault certificate show)",
}
_DEFAULT_INSPECT = "the renewal automation's last run and logs, then the listener's certificate binding"


def lifetime_days(cert: CertInfo) -> float:
    return max(cert.not_after - cert.not_before, 0.0) / _DAY


def thresholds(endpoint: Endpoint, cert: CertInfo) -> tuple[float, ...]:
    """Effective days per tier: min(expiry_days[i], expiry_fractions[i] x lifetime)."""
    days = [float(d) for d in endpoint.expiry_days]
    life = lifetime_days(cert)
    if endpoint.expiry_fractions is None or life <= 0:
        return tuple(days)
    shares = endpoint.expiry_fractions
    return tuple(min(d, shares[i] * life) if i < len(shares) else d for i, d in enumerate(days))


def tier(endpoint: Endpoint, cert: CertInfo) -> tuple[str | None, tuple[float, ...]]:
    limits = thresholds(endpoint, cert)
    return expiry_tier(cert.days_left, limits), limits


def span(days: float) -> str:
    """'5.0 days', or hours under two days, so a six-day certificate's thresholds read naturally."""
    return f"{days * 24:.1f} hours" if abs(days) < 2 else f"{days:.1f} days"


def lifetime_text(cert: CertInfo) -> str:
    """'a 6-day certificate', 'a 45-day certificate'."""
    return f"a {round(lifetime_days(cert), 1):g}-day certificate"


def _date(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def lifetime_due(endpoint: Endpoint, cert: CertInfo) -> float:
    share = endpoint.tls.renewal_at + endpoint.tls.renewal_grace
    return cert.not_before + share * (cert.not_after - cert.not_before)


def _shaken(result: TlsResult) -> list[TlsTarget]:
    return [t for t in result.targets if t.handshake and t.chain]


def _newest(targets: list[TlsTarget]) -> CertInfo:
    return max((t.chain[0] for t in targets), key=lambda c: (c.not_before, c.not_after))


def _finding(endpoint: Endpoint, code: str, message: str, address: str | None = None,
             severity: str | None = None) -> Finding:
    info = CATALOGUE[code]
    return Finding(code=code, severity=severity or info.severity, layer=info.layer, message=message,
                   hint=hint_for(code, endpoint), address=address)


# ------------------------------------------------------------------ the assessment
@dataclass(frozen=True, slots=True)
class Assessment:
    renewal: Renewal | None = None
    caa: CaaCheck | None = None
    tls_findings: tuple[Finding, ...] = ()
    dns_findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()


async def assess(endpoint: Endpoint, result: TlsResult, dns_ran: bool, deadline: float) -> Assessment:
    """Judge renewal for the served leaves; asks the CA (ARI) and DNS (CAA) through their caches."""
    targets = _shaken(result)
    if not targets:
        return Assessment()
    newest = _newest(targets)
    caa_job = caa.check(endpoint, newest, deadline) if dns_ran else _nothing()
    (window, ari_note), (caa_found, forbidden, caa_note) = await asyncio.gather(
        ari.window_for(endpoint, newest, deadline), caa_job)
    soonest = min((c for t in targets for c in t.chain), key=lambda c: c.not_after)
    life = newest.not_after - newest.not_before
    due = lifetime_due(endpoint, newest)
    if window is not None:
        due = min(due, window.start + endpoint.tls.renewal_grace * life, window.end)
    state = Renewal(serial=newest.serial, not_before=newest.not_before, not_after=newest.not_after,
                    lifetime_days=lifetime_days(newest), thresholds_days=thresholds(endpoint, soonest),
                    lifetime_due=lifetime_due(endpoint, newest), due=due, ari=window)
    now = time.time()
    expired = now >= soonest.not_after  # tls.expired says it, and the outage alert fires instead
    overdue = [] if expired else _overdue(endpoint, newest, state, now)
    tls_findings = [*overdue, *_mixed(endpoint, targets, newest, now)]
    dns_findings = [_caa_finding(endpoint, caa_found, why, name, ids) for why, name, ids in forbidden]
    notes = tuple(n for n in (ari_note, caa_note) if n)
    return Assessment(state, caa_found, tuple(tls_findings), tuple(dns_findings), notes)


async def _nothing() -> tuple[None, list, None]:
    return None, [], None


def _overdue(endpoint: Endpoint, leaf: CertInfo, state: Renewal, now: float) -> list[Finding]:
    if now < state.due:
        return []
    host, window = endpoint.hostname, state.ari
    inspect = RENEWAL_INSPECT.get((endpoint.certificate_source or "").lower(), _DEFAULT_INSPECT)
    head = f"the leaf served for {host} (serial {leaf.serial}, {lifetime_text(leaf)}) has not been renewed"
    if window is not None and now >= window.end:
        return [_finding(endpoint, "tls.renewal_overdue",
                         f"{head}: its CA's renewal window ended {_date(window.end)}, so the CA asked for it to "
                         f"be replaced and may revoke it; it expires in {span(leaf.days_left)}. "
                         f"Renew it now and inspect {inspect}", severity="critical")]
    if window is not None and state.due < state.lifetime_due:
        why = f"its CA's renewal window opened {_date(window.start)}"
    else:
        why = (f"automation renews at {endpoint.tls.renewal_at:.0%} of its lifetime, "
               f"{endpoint.tls.renewal_grace:.0%} grace")
    return [_finding(endpoint, "tls.renewal_overdue",
                     f"{head}: renewal was due by {_date(state.due)} ({why}) and it expires in "
                     f"{span(leaf.days_left)}; inspect {inspect}")]


def _rank(endpoint: Endpoint, cert: CertInfo) -> int:
    name, _ = tier(endpoint, cert)
    return -1 if name is None else EXPIRY_TIERS.index(name)


def _mixed(endpoint: Endpoint, targets: list[TlsTarget], newest: CertInfo, now: float) -> list[Finding]:
    """Addresses still serving an older leaf than the newest one, once that older one is stale."""
    by_leaf: dict[str, list[TlsTarget]] = {}
    for t in targets:
        by_leaf.setdefault(t.chain[0].fingerprint_sha256, []).append(t)
    if len(by_leaf) < 2:
        return []
    fresh = by_leaf[newest.fingerprint_sha256]
    out = []
    for fingerprint, lagging in by_leaf.items():
        old = lagging[0].chain[0]
        if fingerprint == newest.fingerprint_sha256 or old.not_before >= newest.not_before:
            continue
        past_due = now >= lifetime_due(endpoint, old)
        worse = _rank(endpoint, old) > _rank(endpoint, newest)
        if not (past_due or worse):
            continue  # a different certificate that is not stale (per region, say): legitimate
        why = "past its renewal point" if past_due else f"in expiry tier {tier(endpoint, old)[0]}"
        where = ", ".join(t.endpoint for t in lagging)
        others = ", ".join(t.endpoint for t in fresh)
        out.append(_finding(endpoint, "tls.mixed_certificates",
                            f"{where} still serve{'s' if len(lagging) == 1 else ''} an older leaf for "
                            f"{endpoint.hostname} (serial {old.serial}, expires {_date(old.not_after)}), {why}, "
                            f"while {others} serve{'s' if len(fresh) == 1 else ''} the renewed one (serial "
                            f"{newest.serial}, expires {_date(newest.not_after)}): that listener did not pick up "
                            "the new certificate", lagging[0].endpoint))
    return out


def _caa_finding(endpoint: Endpoint, found: CaaCheck | None, why: str, ca_name: str,
                 identities: tuple[str, ...]) -> Finding:
    assert found is not None  # forbidden entries only come with a record set
    tag = "issuewild" if found.wildcard else "issue"
    return _finding(endpoint, "dns.caa_forbids_issuer",
                    f"the CAA records at {found.found_at} (relevant for {found.name}) permit only "
                    f"{caa.allowed_text(found.records, found.wildcard)} to {tag}, not {ca_name} "
                    f"({', '.join(identities)}), which {why}: the next renewal will fail")
