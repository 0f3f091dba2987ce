"""The Monitoring Plugins first line: `STATUS - message | perfdata`, for Nagios, Icinga and their kin.

The format is the Monitoring Plugins development guidelines' (monitoring-plugins.org/doc/guidelines.html,
"Plugin Output" and "Performance data"): one line of text, then `|`, then space-separated
`'label'=value[UOM];[warn];[crit];[min];[max]`.  Icinga shows only this first line in its overviews,
so it carries the verdict itself; the detail follows on the next lines.
"""
from __future__ import annotations

from .model import SEVERITY_RANK, Report

PHASES: tuple[str, ...] = ("dns", "connect", "tls", "first_byte")
_ORDER: tuple[str, ...] = ("critical", "unknown", "warning", "ok")


def _number(value: float) -> str:
    """A POSIX-locale decimal, as the guidelines require: digits, '.', '-', no exponent."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _label(name: str) -> str:
    # Labels may not hold ' or =; a plain word needs no quotes.
    clean = name.replace("'", "").replace("=", "")
    return clean if clean.replace("_", "").isalnum() else f"'{clean}'"


def metric(name: str, value: float, uom: str = "", warn: str = "", crit: str = "", minimum: str = "",
           maximum: str = "") -> str:
    fields = [warn, crit, minimum, maximum]
    while fields and fields[-1] == "":
        fields.pop()
    return f"{_label(name)}={_number(value)}{uom}" + "".join(f";{f}" for f in fields)


def days_left(r: Report) -> float | None:
    """The earliest expiry over every certificate served to this probe."""
    days = [c.days_left for t in r.tls.targets for c in t.chain]
    return min(days) if days else None


def _thresholds(r: Report) -> tuple[str, str]:
    """The contract's expiry tiers: warning at the first (30 by default), critical at the third (7)."""
    tiers = r.endpoint.expiry_days
    warn = str(tiers[0]) if tiers else ""
    crit = str(tiers[2]) if len(tiers) > 2 else ""
    return warn, crit


def perfdata(r: Report) -> str:
    out = [metric(p, r.phases[p], "s", minimum="0") for p in PHASES if p in r.phases]
    out.append(metric("time", r.duration_seconds, "s", minimum="0"))
    days = days_left(r)
    if days is not None:
        warn, crit = _thresholds(r)
        out.append(f"days_left={days:.1f};{warn};{crit};0;")
    return " ".join(out)


def _text(message: str) -> str:
    """The guidelines reserve '|' for perfdata, and the first line is one line."""
    return " ".join(message.replace("|", "/").split())


def first_line(reports: list[Report]) -> str:
    if len(reports) == 1:
        r = reports[0]
        return f"{r.status.upper()} - {_text(r.verdict.message)} | {perfdata(r)}"
    counts = {s: sum(1 for r in reports if r.status == s) for s in _ORDER}
    worst = max((r.status for r in reports), key=lambda s: SEVERITY_RANK[s])
    parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    bad = [r.hostname for r in sorted(reports, key=lambda r: -SEVERITY_RANK[r.status]) if r.status != "ok"]
    named = f" ({_text(', '.join(bad[:3]))}{', ...' if len(bad) > 3 else ''})" if bad else ""
    perf = " ".join(metric(s, n, minimum="0", maximum=str(len(reports))) for s, n in counts.items())
    return f"{worst.upper()} - {len(reports)} endpoints: {parts}{named} | {perf}"
