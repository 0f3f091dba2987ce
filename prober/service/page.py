"""The status page of `prober serve`: server-rendered HTML from the latest reports.

``index`` lists every configured endpoint (status, verdict, layer badges),
filterable by status and owner team with plain query parameters; ``detail``
shows one report with the facts of ``prober check``'s text: per-resolver
answers, the chain served by each address, the HTTP exchanges and the hint.

The page works offline and under a strict Content-Security-Policy: no script
at all, one inline stylesheet allowed by its hash, no external fetch of any
kind, and it refreshes itself with ``<meta http-equiv=refresh>``.  Everything
a probed server can influence (certificate names, headers, bodies, error
text) reaches the page only through ``_e``, which escapes for both text and
attribute context.
"""
from __future__ import annotations

import base64
import hashlib
import html
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

from ..model import SEVERITY_RANK, Endpoint, HttpExchange, Report, TlsTarget

PENDING = "pending"  # configured, not probed yet
STATUSES: tuple[str, ...] = ("critical", "unknown", "warning", "ok", PENDING)
NO_TEAM = "(none)"  # the filter value for endpoints without owner_team
MIN_REFRESH, MAX_REFRESH = 5, 60  # seconds; the page refreshes at the shortest interval within these

CSS = """\
:root{color-scheme:light;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;background:#f6f7f9}
body{margin:0 auto;max-width:1280px;padding:12px 20px 40px}
h1{font-size:20px;margin:8px 0 4px}h2{font-size:16px;margin:22px 0 6px}h3{font-size:14px;margin:14px 0 4px}
a{color:#1b5fb4}code,pre,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;font-size:12.5px}
pre{background:#fff;border:1px solid #d9dde3;padding:8px;white-space:pre-wrap;word-break:break-all;margin:4px 0}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d9dde3;margin:4px 0 10px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e9ee;vertical-align:top}
th{background:#eef1f5;font-weight:600;font-size:12.5px}td.v{word-break:break-word}
.b{display:inline-block;white-space:nowrap;min-width:4.6em;text-align:center;border-radius:3px;padding:1px 6px;font-weight:600;
font-size:12px;color:#fff;background:#6b7280}
.l{min-width:2.6em;margin-right:3px}
.ok{background:#1f883d}.warning{background:#b7791f}.critical{background:#c62828}.unknown{background:#7b3fa0}
.pending,.skipped{background:#8a929e}
.meta{color:#5b6472;font-size:12.5px}.counts a{margin-right:12px}.counts .b{min-width:2em}
form{margin:10px 0;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
select,button{font:inherit;padding:2px 6px}
.hint{background:#fff8e1;border:1px solid #f0d48a;padding:6px 8px}
.kv td:first-child{width:13em;color:#5b6472}.nw{white-space:nowrap}.empty{color:#5b6472;padding:12px}
"""
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CSP = ("default-src 'none'; " f"style-src 'sha256-{_CSS_HASH}'; "
       "img-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# Sent with every page (and every other answer of the service: they cost nothing there).
HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Row:
    """One configured endpoint and its latest report (None until its first probe finishes)."""
    endpoint: Endpoint
    report: Report | None

    @property
    def status(self) -> str:
        return self.report.status if self.report is not None else PENDING

    @property
    def team(self) -> str:
        return self.endpoint.owner_team or NO_TEAM


@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None = None
    team: str | None = None

    def keep(self, row: Row) -> bool:
        return (self.status is None or row.status == self.status) and (self.team is None or row.team == self.team)


def _e(value: object) -> str:
    """Escape for HTML text and quoted attributes; None is an empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


def endpoint_url(hostname: str) -> str:
    return "/endpoint?" + urlencode({"hostname": hostname})


def refresh_seconds(endpoints: Iterable[Endpoint]) -> int:
    shortest = min((e.interval for e in endpoints), default=MAX_REFRESH)
    return int(max(MIN_REFRESH, min(MAX_REFRESH, shortest)))


def _badge(status: str, text: str | None = None, extra: str = "") -> str:
    cls = status if status in (*STATUSES, "skipped") else "unknown"
    return f'<span class="b {cls}{extra}">{_e(text if text is not None else status.upper())}</span>'


def _page(title: str, refresh: int, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<meta http-equiv="refresh" content="{refresh}">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def _ago(started_at: float, duration: float, now: float) -> str:
    finished = started_at + duration
    at = datetime.fromtimestamp(finished, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<span title="{at}">{max(0, int(now - finished))} s ago</span>'


# ------------------------------------------------------------------ the index
def index(rows: Sequence[Row], filters: Filters, refresh: int, now: float | None = None) -> str:
    now = time.time() if now is None else now
    shown = sorted((r for r in rows if filters.keep(r)),
                   key=lambda r: (-SEVERITY_RANK.get(r.status, -1), r.endpoint.hostname))
    body = [f"<h1>prober: {len(rows)} endpoints</h1>", _counts(rows), _filter_form(rows, filters)]
    if not shown:
        body.append('<p class="empty">No endpoint matches these filters. <a href="/">Show all</a>.</p>')
    else:
        body.append("<table><thead><tr><th>Status</th><th>Endpoint</th><th>Owner team</th><th>Layers</th>"
                    "<th>Verdict</th><th>Checked</th></tr></thead><tbody>")
        body += [_index_row(r, now) for r in shown]
        body.append("</tbody></table>")
    body.append(f'<p class="meta">Refreshes every {refresh} s. <a href="/metrics">/metrics</a> · '
                f"JSON and text per endpoint from its page.</p>")
    counts = Counter(r.status for r in rows)
    title = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]) or "no endpoints"
    return _page(f"{title} · prober", refresh, "\n".join(body))


def _counts(rows: Sequence[Row]) -> str:
    counts = Counter(r.status for r in rows)
    links = [f'<a href="/?{urlencode({"status": s})}">{_badge(s, str(counts[s]))} {s}</a>'
             for s in STATUSES if counts[s]]
    return f'<p class="counts">{"".join(links)}</p>'


def _options(name: str, values: Iterable[str], chosen: str | None, label: str) -> str:
    opts = [f'<option value="">{_e(label)}</option>']
    opts += [f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(v)}</option>' for v in values]
    return f'<select name="{name}" aria-label="{_e(label)}">{"".join(opts)}</select>'


def _filter_form(rows: Sequence[Row], filters: Filters) -> str:
    teams = sorted({r.team for r in rows})
    return ('<form method="get" action="/">'
            + _options("status", STATUSES, filters.status, "every status")
            + _options("team", teams, filters.team, "every owner team")
            + '<button type="submit">Filter</button> <a href="/">Clear</a></form>')


def _index_row(row: Row, now: float) -> str:
    e, r = row.endpoint, row.report
    link = f'<a href="{_e(endpoint_url(e.hostname))}">{_e(e.hostname)}</a>'
    if r is None:
        return (f"<tr><td>{_badge(PENDING)}</td><td>{link}</td><td>{_e(row.team)}</td><td></td>"
                f'<td class="v">not probed yet</td><td></td></tr>')
    layers = "".join(_badge(l.status, l.name.upper(), " l") for l in r.layers)
    return (f'<tr><td>{_badge(r.status)}</td><td>{link}</td><td class="nw">{_e(row.team)}</td>'
            f'<td class="nw">{layers}</td><td class="v">{_e(r.verdict.message)}</td>'
            f'<td class="nw">{_ago(r.started_at, r.duration_seconds, now)}</td></tr>')


# ------------------------------------------------------------------ one endpoint
def detail(report: Report, refresh: int, now: float | None = None) -> str:
    now = time.time() if now is None else now
    r = report
    host = _e(r.hostname)
    query = urlencode({"hostname": r.hostname})
    body = ['<p class="meta"><a href="/">All endpoints</a></p>',
            f"<h1>{_badge(r.status)} {host}</h1>",
            f'<p class="v">{_e(r.verdict.message)}</p>']
    if r.verdict.hint:
        body.append(f'<div class="hint">next: <code>{_e(r.verdict.hint)}</code></div>')
    body.append(f'<p class="meta">checked {_ago(r.started_at, r.duration_seconds, now)} in '
                f"{r.duration_seconds:.2f} s · " + " · ".join(
                    f"{_e(k)} {v * 1000:.0f} ms" for k, v in r.phases.items())
                + f' · <a href="/report?{_e(query)}&amp;format=text">text</a>'
                f' · <a href="/report?{_e(query)}">JSON</a></p>')
    body.append(_contract(r.endpoint))
    for layer in r.layers:
        took = _e(layer.reason) if layer.reason else f"{layer.duration_seconds * 1000:.0f} ms"
        body.append(f"<h2>{_badge(layer.status, layer.name.upper(), ' l')} {_e(layer.name.upper())} "
                    f'<span class="meta">{took}</span></h2>')
        if layer.findings:
            body.append(_table(("Severity", "Code", "Finding", "Next"),
                               [(_badge(f.severity), f'<code class="nw">{_e(f.code)}</code>', _e(f.message),
                                 f"<code>{_e(f.hint)}</code>" if f.hint else "") for f in layer.findings]))
        body.append({"dns": _dns, "tls": _tls, "http": _http}.get(layer.name, lambda _: "")(r))
    return _page(f"{r.status.upper()} {r.hostname}", refresh, "\n".join(body))


def _table(heads: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of cells that are already escaped HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    lines = "".join("<tr>" + "".join(f'<td class="v">{c}</td>' for c in row) + "</tr>" for row in rows)
    return f'<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>'


def _kv(facts: Iterable[tuple[str, str]]) -> str:
    """A two-column table of (escaped) facts."""
    lines = "".join(f'<tr><td>{k}</td><td class="v">{v}</td></tr>' for k, v in facts)
    return f'<table class="kv"><tbody>{lines}</tbody></table>'


def _contract(e: Endpoint) -> str:
    facts = (("owner team", e.owner_team), ("app owner", e.app_owner), ("visibility", e.visibility),
             ("TLS termination", e.tls_termination), ("certificate source", e.certificate_source),
             ("connect to", e.connect_to), ("ports", f"tls {e.tls.port}, http {e.http.port}"),
             ("health path", e.http.health_path), ("interval", f"{e.interval:g} s"),
             ("timeout", f"{e.timeout:g} s"))
    return _kv((_e(k), _e(v)) for k, v in facts if v)


def _dns(r: Report) -> str:
    answers = (*r.dns.resolvers, *r.dns.authoritative)
    if not answers:
        return ""
    agree = {True: "= authoritative", False: "STALE", None: ""}
    rows = [(_e(a.resolver + (" (authoritative)" if a.authoritative else "")),
             f'<span class="mono">{_e(a.server)}</span>', _e(a.view), _e(a.rcode),
             _e(" ".join(a.addresses) or ("-> " + " -> ".join(a.cnames) if a.cnames else "-")),
             "" if a.ttl is None else f"{a.ttl} s", f"{a.latency_seconds * 1000:.0f} ms",
             _e(agree[a.agrees_with_authoritative]), _e(a.error)) for a in answers]
    zone = f'<p class="meta">zone {_e(r.dns.zone)}</p>' if r.dns.zone else ""
    return zone + _table(("Resolver", "Server", "View", "Rcode", "Answer", "TTL", "Latency", "Agrees", "Error"),
                         rows)


def _tls(r: Report) -> str:
    return "".join(_target(t) for t in r.tls.targets)


def _target(t: TlsTarget) -> str:
    head = f'<h3 class="mono">{_e(t.endpoint)}</h3>'
    if not t.handshake:
        return head + f"<pre>{_e(t.error or 'no handshake')}</pre>"
    v = t.verdict
    state = "verified" if v and v.verified else "NOT verified" + (f": {v.error}" if v and v.error else "")
    facts = [f"{_e(t.version)} {_e(t.cipher)}", f"alpn {_e(t.alpn or '-')}", _e(state)]
    if t.weak_protocol:
        facts.append(f"still accepts {_e(t.weak_protocol)}")
    rows = [(_e(c.position), _e(c.subject), _e(", ".join(c.sans)), _e(c.issuer), f"{c.days_left:.1f}",
             _e(datetime.fromtimestamp(c.not_after, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
             _e(f"{c.key_type}{c.key_size or ''} {c.signature_algorithm}"),
             f'<span class="mono">{_e(c.serial)}</span>') for c in t.chain]
    return (head + f'<p class="meta">{" · ".join(facts)}</p>'
            + _table(("Position", "Subject", "SANs", "Issuer", "Days left", "Not after", "Key", "Serial"), rows))


def _http(r: Report) -> str:
    parts = []
    if r.http.redirect is not None:
        parts.append(_exchange("redirect", r.http.redirect))
    parts += [_exchange("health", h) for h in r.http.health]
    if r.http.health:
        parts.append(f'<p>HSTS: <code>{_e(r.http.hsts or "absent")}</code></p>')
    return "".join(parts)


def _exchange(kind: str, x: HttpExchange) -> str:
    got = str(x.status) if x.status is not None else (x.error or "no answer")
    facts = [("answer", _e(got))]
    if x.location:
        facts.append(("location", _e(x.location)))
    if x.edge:
        facts.append(("answered by", _e(x.edge)))
    if x.first_byte_seconds is not None:
        facts.append(("first byte", f"{x.first_byte_seconds * 1000:.0f} ms"))
    if x.status is not None and x.error:
        facts.append(("error", _e(x.error)))
    facts += [(f"header {_e(k)}", _e(v)) for k, v in x.headers]
    via = f" via {_e(x.address)}" if x.address else ""
    body = (f"<pre>{_e(x.body_excerpt)}</pre>" if x.body_excerpt else "")
    return (f'<h3>{_e(kind)} <span class="mono">{_e(x.url)}</span>{via}</h3>' + _kv(facts)
            + (f'<p class="meta">body ({x.body_bytes} bytes), first bytes:</p>{body}' if body else ""))
