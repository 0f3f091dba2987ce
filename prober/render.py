"""Reports to text (for a terminal during an incident) and to JSON (docs/json.md)."""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import Any

from .idn import to_unicode
from .model import EXIT_CODES, Report, TlsTarget
from .renewal import span

SCHEMA_VERSION = 1
_COLOURS = {"ok": "32", "warning": "33", "critical": "31", "unknown": "35", "skipped": "90"}


def use_colour(choice: str, stream=None) -> bool:
    """--color: always, never, or auto = when the stream is a terminal and NO_COLOR is unset."""
    stream = stream if stream is not None else sys.stdout
    if choice == "always":
        return True
    return choice == "auto" and stream.isatty() and os.environ.get("NO_COLOR") is None


# ------------------------------------------------------------------------ JSON
def _chain(t: TlsTarget) -> list[dict[str, Any]]:
    return [c.to_dict() for c in t.chain]


def _target(t: TlsTarget) -> dict[str, Any]:
    v = t.verdict
    return {"address": t.address, "port": t.port, "connected": t.connected, "handshake": t.handshake,
            "error": t.error, "version": t.version, "cipher": t.cipher, "alpn": t.alpn,
            "verified": v.verified if v else False, "hostname_match": v.hostname_match if v else False,
            "verify_error": v.error if v else None, "weak_protocol": t.weak_protocol,
            "weak_cipher": t.weak_cipher[0] if t.weak_cipher else None, "weak_dh": t.weak_dh,
            "client_cert_requested": t.client_cert_requested,
            "connect_seconds": t.connect_seconds, "tls_seconds": t.tls_seconds, "chain": _chain(t),
            "alternates": [{"clients": a.clients, "version": a.version, "cipher": a.cipher,
                            "verified": a.verdict.verified if a.verdict else False,
                            "verify_error": a.verdict.error if a.verdict else None,
                            "chain": [c.to_dict() for c in a.chain]} for a in t.alternates],
            "revocation": [{"position": r.position, "subject": r.subject, "status": r.status, "source": r.source,
                            "detail": r.detail} for r in t.revocation]}


def to_dict(r: Report) -> dict[str, Any]:
    first = next((t for t in r.tls.targets if t.handshake), None)
    e = r.endpoint
    return {
        "schema_version": SCHEMA_VERSION,
        "hostname": r.hostname,
        "hostname_unicode": to_unicode(r.hostname),
        "status": r.status,
        "exit_code": EXIT_CODES[r.status],
        "verdict": {"layer": r.verdict.layer, "code": r.verdict.code, "message": r.verdict.message,
                    "hint": r.verdict.hint},
        "started_at": r.started_at,
        "duration_seconds": round(r.duration_seconds, 6),
        "contract": {"visibility": e.visibility, "owner_team": e.owner_team, "app_owner": e.app_owner,
                     "tls_termination": e.tls_termination, "certificate_source": e.certificate_source,
                     "connect_to": e.connect_to},
        "layers": [{"name": l.name, "status": l.status, "duration_seconds": round(l.duration_seconds, 6),
                    **({"reason": l.reason} if l.reason else {})} for l in r.layers],
        "findings": [f.to_dict() for f in r.findings],
        "phases": {k: round(v, 6) for k, v in r.phases.items()},
        "dns": {"zone": r.dns.zone, "addresses": list(r.dns.addresses),
                "resolvers": [a.to_dict() for a in r.dns.resolvers],
                "authoritative": [a.to_dict() for a in r.dns.authoritative],
                "delegation": r.dns.delegation.to_dict() if r.dns.delegation else None},
        "tls": {"version": first.version if first else None, "cipher": first.cipher if first else None,
                "alpn": first.alpn if first else None,
                "verified": bool(r.tls.targets) and all(t.verdict and t.verdict.verified for t in r.tls.targets),
                "chain": _chain(first) if first else [],
                "targets": [_target(t) for t in r.tls.targets]},
        "http": {"redirect": r.http.redirect.to_dict() if r.http.redirect else None,
                 "health": r.http.health[0].to_dict() if r.http.health else None,
                 "health_by_address": [h.to_dict() for h in r.http.health],
                 "hsts": r.http.hsts},
        "renewal": r.renewal.to_dict() if r.renewal else None,
        "caa": r.caa.to_dict() if r.caa else None,
        "notes": list(r.notes),
    }


def to_json(reports: list[Report]) -> str:
    docs = [to_dict(r) for r in reports]
    return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2, sort_keys=False)


# ------------------------------------------------------------------------ text
class _Paint:
    def __init__(self, colour: bool):
        self.colour = colour

    def __call__(self, status: str, text: str | None = None) -> str:
        text = text if text is not None else status.upper()
        return f"\x1b[{_COLOURS.get(status, '0')}m{text}\x1b[0m" if self.colour else text


def to_text(r: Report, colour: bool = False) -> str:
    paint = _Paint(colour)
    shown = to_unicode(r.hostname)
    name = r.hostname if shown == r.hostname else f"{shown} ({r.hostname})"
    lines = [f"{paint(r.status)} {name}  ({r.duration_seconds:.2f}s)",
             f"  verdict: {r.verdict.message}"]
    if r.verdict.hint:
        lines.append(f"  next:    {r.verdict.hint}")
    for layer in r.layers:
        head = f"  [{layer.name:<4}] {paint(layer.status, layer.status.upper().ljust(8))}"
        lines.append(head + (f" {layer.reason}" if layer.reason else f" {layer.duration_seconds * 1000:.0f} ms"))
        for f in layer.findings:
            lines.append(f"         {paint(f.severity, f.severity[:4])} {f.code}: {f.message}")
        lines += _details(r, layer.name)
    lines += [f"  note:    {note}" for note in r.notes]
    return "\n".join(lines)


def _details(r: Report, layer: str) -> list[str]:
    if layer == "dns":
        return _dns_table(r)
    if layer == "tls":
        return _tls_lines(r)
    if layer == "http":
        return _http_lines(r)
    return []


def _dns_table(r: Report) -> list[str]:
    rows = [(a.resolver + (" (auth)" if a.authoritative else ""), a.view, a.rcode,
             " ".join(a.addresses) or ("-> " + " -> ".join(a.cnames) if a.cnames else "-"),
             "" if a.ttl is None else f"{a.ttl}s", f"{a.latency_seconds * 1000:.0f}ms",
             {True: "=auth", False: "STALE", None: ""}[a.agrees_with_authoritative], _dnssec_cell(a))
            for a in (*r.dns.resolvers, *r.dns.authoritative)]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return (["         " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
            + _delegation_lines(r))


def _dnssec_cell(a) -> str:
    d = a.dnssec
    if d is None:
        return ""
    word = "BOGUS" if d.bogus else "AD" if d.validated else "signed" if d.signed else ""
    return " ".join(x for x in (word, "; ".join(d.ede)) if x)


def _delegation_lines(r: Report) -> list[str]:
    d = r.dns.delegation
    if d is None:
        return []
    parent = ", ".join(d.parent_ns) if d.parent_ns is not None else (d.parent_error or "not asked")
    out = [f"         zone {d.zone}: parent {d.parent or '-'} delegates to {parent}; apex NS {', '.join(d.child_ns)}"]
    for s in d.servers:
        out.append(f"           ns {s.name} {s.address or '-'} {s.rcode}{' AA' if s.authoritative else ''}"
                   f" serial {s.serial if s.serial is not None else '-'}")
    return out


def _tls_lines(r: Report) -> list[str]:
    out = []
    for t in r.tls.targets:
        if not t.handshake:
            out.append(f"         {t.endpoint}: {t.error}")
            continue
        state = "verified" if t.verdict and t.verdict.verified else "NOT verified"
        out.append(f"         {t.endpoint}: {t.version} {t.cipher} alpn={t.alpn or '-'} {state}")
        for c in t.chain:
            sans = ",".join(c.sans[:4]) + ("..." if len(c.sans) > 4 else "")
            out.append(f"           {c.position:<12} {c.subject}  {c.days_left:7.1f}d"
                       + (f"  SAN {sans}" if sans else "") + f"  issuer {c.issuer}")
    return out + _renewal_lines(r)


def _renewal_lines(r: Report) -> list[str]:
    n = r.renewal
    if n is None:
        return []
    limits = "/".join(span(t) for t in n.thresholds_days[:-1])
    out = [f"         renewal: serial {n.serial}, {span(n.lifetime_days)} lifetime, due {_when(n.due)}; "
           f"tiers at {limits}"]
    if n.ari is not None:
        out.append(f"         CA renewal window (ARI): {_when(n.ari.start)} .. {_when(n.ari.end)}")
    return out


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _http_lines(r: Report) -> list[str]:
    out = []
    rd = r.http.redirect
    if rd is not None:
        if rd.status is None:
            got = rd.error or "no answer"
        elif rd.location:
            got = f"{rd.status} -> {rd.location}"
        else:
            got = f"{rd.status}, no redirect (no Location header)"
        out.append(f"         redirect {rd.url}: {got}")
    for h in r.http.health:
        got = str(h.status) if h.status is not None else h.error
        edge = f"  answered by {h.edge}" if h.edge else ""
        fb = f"  first byte {h.first_byte_seconds * 1000:.0f}ms" if h.first_byte_seconds is not None else ""
        out.append(f"         health {h.url} via {h.address}: {got}{fb}{edge}")
    if r.http.health:
        out.append(f"         hsts: {r.http.hsts or 'absent'}")
    return out
