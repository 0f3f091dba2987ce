"""Prometheus metrics for `prober serve` (the contract is docs/metrics.md).

Endpoint series come from the latest report of each endpoint.  A report is
turned into its exposition text once, when it arrives (``build_snapshot``,
rendered by prometheus_client itself), and a scrape only joins the stored
bytes family by family (``endpoint_exposition``): a scrape of 10,000
endpoints renders nothing per endpoint, and an endpoint keeps a few kB of
bytes instead of a few dozen Sample objects with a label dict each.  An
endpoint removed by a reload is gone from the next scrape, and a renewed
certificate (new serial) replaces the old series because the old snapshot is
replaced.  Self-metrics are ordinary prometheus_client metrics in their own
registry.  ``--location`` adds ``location`` to every series of both.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..model import EXIT_CODES, EXPIRY_TIERS, LAYERS, CertInfo, Report

M = TypeVar("M", Counter, Gauge, Histogram)
RESULTS: tuple[str, ...] = ("ok", "warning", "critical", "unknown")
# Hostile certificates can carry very long names; a label value stays readable and bounded.
MAX_LABEL_CHARS = 256
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# name -> help text, in exposition order.  Every one is a gauge.
ENDPOINT_FAMILIES: dict[str, str] = {
    "prober_endpoint_info": "The endpoint contract (value 1), for joins that route alerts.",
    "prober_probe_success": "1 when the last probe's status is ok or warning.",
    "prober_probe_status": "Nagios code of the last probe: 0 ok, 1 warning, 2 critical, 3 unknown.",
    "prober_layer_success": "Per layer: 0 when the layer had a critical finding or did not run.",
    "prober_probe_duration_seconds": "Wall time of the last probe.",
    "prober_probe_last_run_timestamp_seconds": "When the last probe finished (unix seconds).",
    "prober_phase_duration_seconds": "Duration of a phase of the last probe: dns, connect, tls, first_byte.",
    "prober_finding": "One series (value 1) per active finding of the last probe.",
    "prober_expiry_threshold_days": "Effective expiry threshold per lifecycle tier, in days, of the soonest-expiring "
                                    "served certificate: min(expiry_days, expiry_fractions x its lifetime).",
    "prober_dns_resolver_up": "1 when the resolver answered (NOERROR or NXDOMAIN).",
    "prober_dns_resolver_rcode": "The resolver's response code (value 1).",
    "prober_dns_resolver_latency_seconds": "How long the resolver took to answer.",
    "prober_dns_resolver_answers": "Number of A and AAAA records the resolver returned.",
    "prober_dns_resolver_agrees_with_authoritative": "1 when the resolver's answer matches the authoritative one.",
    "prober_dns_resolver_dnssec_validated": "1 when the resolver validated the answer with DNSSEC (AD set).",
    "prober_dns_zone_serial": "SOA serial each name server of the endpoint's zone answers (at most 8 servers).",
    "prober_tls_certificate_not_after_timestamp_seconds": "notAfter of a served certificate (unix seconds).",
    "prober_tls_certificate_not_before_timestamp_seconds": "notBefore of a served certificate (unix seconds).",
    "prober_tls_earliest_expiry_timestamp_seconds": "Earliest notAfter over every served chain.",
    "prober_tls_verified": "1 when every served chain verified (trust, time, hostname).",
    "prober_tls_hostname_match": "1 when every served leaf covers the hostname.",
    "prober_tls_version_info": "Negotiated TLS protocol version (value 1).",
    "prober_tls_renewal_due_timestamp_seconds": "When the newest served leaf was due for renewal: renewal_at + "
                                                "renewal_grace of its lifetime, or its CA's window start + grace.",
    "prober_tls_ari_window_start_timestamp_seconds": "Start of the CA's suggested renewal window (ARI) for the "
                                                     "newest served leaf.",
    "prober_tls_ari_window_end_timestamp_seconds": "End of the CA's suggested renewal window (ARI) for the newest "
                                                   "served leaf.",
}


def _clip(value: str | None) -> str:
    text = "" if value is None else value
    return text if len(text) <= MAX_LABEL_CHARS else text[:MAX_LABEL_CHARS - 1] + "…"


FAMILY_INDEX: dict[str, int] = {name: i for i, name in enumerate(ENDPOINT_FAMILIES)}
# Families no shipped alert or dashboard needs: `prober serve --drop-family NAME` leaves them out of
# every snapshot, for large fleets (docs/metrics.md, "Cardinality budget").
OPTIONAL_FAMILIES: tuple[str, ...] = (
    "prober_phase_duration_seconds",
    "prober_dns_resolver_rcode",
    "prober_dns_resolver_latency_seconds",
    "prober_dns_resolver_answers",
    "prober_tls_certificate_not_before_timestamp_seconds",
    "prober_tls_version_info",
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest report of one endpoint and its series as exposition text, rendered once.

    ``lines[i]`` holds the sample lines of the i-th family of ENDPOINT_FAMILIES
    (b"" when the endpoint has none), without HELP and TYPE.
    """
    report: Report
    lines: tuple[bytes, ...]

    @property
    def hostname(self) -> str:
        return self.report.hostname


class _Rows(Collector):
    """Collects samples per family; a repeated label set keeps its first value."""

    def __init__(self, base: dict[str, str], drop: frozenset[str] = frozenset()) -> None:
        self.base = tuple(base.items())
        self.drop = drop
        self.by_family: dict[str, dict[tuple, float]] = {}

    def add(self, family: str, value: float, **labels: str | None) -> None:
        if family in self.drop:
            return
        key = self.base + tuple([(k, _clip(v)) for k, v in labels.items()])  # no call names a base label
        self.by_family.setdefault(family, {}).setdefault(key, float(value))

    def collect(self) -> Iterator[Metric]:
        """The rows as metric families (a Collector, for generate_latest)."""
        for name in ENDPOINT_FAMILIES:
            rows = self.by_family.get(name)
            if rows:
                family = GaugeMetricFamily(name, "")
                for labels, value in rows.items():
                    family.add_sample(name, dict(labels), value)
                yield family

    def render(self) -> tuple[bytes, ...]:
        """Sample lines per family, byte for byte as prometheus_client's text format writes them
        (labels sorted by name, label values escaped, Go float format), without building its
        Metric and Sample objects: this runs once per probe."""
        out: list[bytes] = []
        for name in ENDPOINT_FAMILIES:
            rows = self.by_family.get(name)
            if not rows:
                out.append(b"")
                continue
            out.append("".join([
                name + "{" + ",".join([k + '="' + _escape(v) + '"' for k, v in sorted(labels)]) + "} "
                + ("1.0" if value == 1.0 else floatToGoString(value)) + "\n" for labels, value in rows.items()]).encode())
        return tuple(out)

    def render_by_client(self) -> tuple[bytes, ...]:
        """The same lines through prometheus_client's generate_latest (what render must equal)."""
        lines: list[list[str]] = [[] for _ in ENDPOINT_FAMILIES]
        current: list[str] = lines[0]
        for line in generate_latest(self).decode().splitlines(keepends=True):
            if line.startswith("# HELP "):
                current = lines[FAMILY_INDEX[line.split(" ", 3)[2]]]
            elif not line.startswith("#"):
                current.append(line)  # a label value's newline is escaped: one sample per line
        return tuple("".join(family).encode() for family in lines)


def _escape(value: str) -> str:
    """A label value as the text format escapes it: backslash, newline and double quote."""
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def build_snapshot(report: Report, location: str | None = None, drop: frozenset[str] = frozenset()) -> Snapshot:
    """Turn a report into the samples of every endpoint family (docs/metrics.md), less the `drop`ped ones."""
    return Snapshot(report, snapshot_rows(report, location, drop).render())


def snapshot_rows(report: Report, location: str | None = None, drop: frozenset[str] = frozenset()) -> _Rows:
    base = {"hostname": report.hostname}
    if location:
        base["location"] = location
    rows = _Rows(base, drop)
    _probe_rows(rows, report)
    _dns_rows(rows, report)
    _tls_rows(rows, report)
    return rows


def _probe_rows(rows: _Rows, r: Report) -> None:
    e = r.endpoint
    rows.add("prober_endpoint_info", 1, owner_team=e.owner_team, app_owner=e.app_owner,
             visibility=e.visibility, tls_termination=e.tls_termination,
             certificate_source=e.certificate_source)
    rows.add("prober_probe_success", 1 if r.status in ("ok", "warning") else 0)
    rows.add("prober_probe_status", EXIT_CODES.get(r.status, 3))
    status = {layer.name: layer.status for layer in r.layers}
    for name in LAYERS:
        rows.add("prober_layer_success", 1 if status.get(name) in ("ok", "warning") else 0, layer=name)
    rows.add("prober_probe_duration_seconds", r.duration_seconds)
    rows.add("prober_probe_last_run_timestamp_seconds", r.started_at + r.duration_seconds)
    for phase, seconds in r.phases.items():
        rows.add("prober_phase_duration_seconds", seconds, phase=phase)
    for f in r.findings:
        rows.add("prober_finding", 1, code=f.code, severity=f.severity, layer=f.layer)
    limits = r.renewal.thresholds_days if r.renewal is not None else e.expiry_days
    for tier, days in zip(EXPIRY_TIERS, limits):
        rows.add("prober_expiry_threshold_days", days, tier=tier)


def _dns_rows(rows: _Rows, r: Report) -> None:
    for a in r.dns.resolvers:
        who = {"resolver": a.resolver, "view": a.view}
        rows.add("prober_dns_resolver_up", 1 if a.answered else 0, **who)
        rows.add("prober_dns_resolver_rcode", 1, **who, rcode=a.rcode)
        rows.add("prober_dns_resolver_latency_seconds", a.latency_seconds, **who)
        rows.add("prober_dns_resolver_answers", len(a.addresses), **who)
        if a.agrees_with_authoritative is not None:
            rows.add("prober_dns_resolver_agrees_with_authoritative", 1 if a.agrees_with_authoritative else 0,
                     **who)
        if a.dnssec is not None:
            rows.add("prober_dns_resolver_dnssec_validated", 1 if a.dnssec.validated else 0, **who)
    checked = r.dns.delegation
    for server in checked.servers if checked else ():
        if server.serial is not None:  # servers are bounded by the DNS layer's MAX_AUTHORITATIVE
            rows.add("prober_dns_zone_serial", server.serial, zone=checked.zone, server=server.name)


# Label values from served certificates, kept to known values so a hostile certificate cannot
# grow the label space: anything else is "other".
_KEY_TYPES = frozenset({"RSA", "RSA-PSS", "EC", "Ed25519", "Ed448", "DSA"})
_KEY_BITS = frozenset({512, 768, 1024, 1536, 2048, 3072, 4096, 8192, 192, 224, 256, 384, 521, 456})


def _key_labels(c: CertInfo) -> dict[str, str]:
    key_type = c.key_type if c.key_type in _KEY_TYPES else "other"
    bits = str(c.key_size) if c.key_size in _KEY_BITS else "other"
    signature = c.signature_algorithm if not c.signature_algorithm[:1].isdigit() else "other"
    return {"key_type": key_type, "key_bits": bits, "signature_algorithm": signature[:40]}


def _tls_rows(rows: _Rows, r: Report) -> None:
    """Certificates of every completed handshake, verified or not; absent when none completed.
    The chains other clients get (RSA-only) count as served certificates too."""
    shaken = [t for t in r.tls.targets if t.handshake]
    if not shaken:
        return
    chains = [c for t in shaken for c in (*t.chain, *(c for alt in t.alternates for c in alt.chain))]
    for c in chains:
        cert = {"position": c.position, "subject": c.subject, "issuer": c.issuer, "serial": c.serial,
                **_key_labels(c)}
        rows.add("prober_tls_certificate_not_after_timestamp_seconds", c.not_after, **cert)
        rows.add("prober_tls_certificate_not_before_timestamp_seconds", c.not_before, **cert)
    for target in shaken:
        if target.version:
            rows.add("prober_tls_version_info", 1, version=target.version)
    not_after = [c.not_after for c in chains]
    if not_after:
        rows.add("prober_tls_earliest_expiry_timestamp_seconds", min(not_after))
    rows.add("prober_tls_verified", 1 if all(t.verdict and t.verdict.verified for t in shaken) else 0)
    rows.add("prober_tls_hostname_match", 1 if all(t.verdict and t.verdict.hostname_match for t in shaken) else 0)
    if r.renewal is not None:
        rows.add("prober_tls_renewal_due_timestamp_seconds", r.renewal.due)
        if r.renewal.ari is not None:
            rows.add("prober_tls_ari_window_start_timestamp_seconds", r.renewal.ari.start)
            rows.add("prober_tls_ari_window_end_timestamp_seconds", r.renewal.ari.end)


class SnapshotStore:
    """The latest snapshot per hostname, shared by the loop (writes) and the HTTP threads (reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, Snapshot] = {}

    def put(self, snapshot: Snapshot) -> None:
        """Keep the newer of the stored and the given snapshot (an on-demand probe may race a scheduled one)."""
        with self._lock:
            old = self._latest.get(snapshot.hostname)
            if old is None or old.report.started_at <= snapshot.report.started_at:
                self._latest[snapshot.hostname] = snapshot

    def get(self, hostname: str) -> Snapshot | None:
        with self._lock:
            return self._latest.get(hostname)

    def drop(self, hostname: str) -> None:
        with self._lock:
            self._latest.pop(hostname, None)

    def all(self) -> list[Snapshot]:
        with self._lock:
            return list(self._latest.values())


@lru_cache(maxsize=None)
def _headers() -> tuple[bytes, ...]:
    """HELP and TYPE of each endpoint family, as prometheus_client renders them."""
    class Empty(Collector):
        def __init__(self, name: str) -> None:
            self.name = name

        def collect(self) -> Iterator[Metric]:
            yield GaugeMetricFamily(self.name, ENDPOINT_FAMILIES[self.name])

    return tuple(generate_latest(Empty(name)) for name in ENDPOINT_FAMILIES)


def endpoint_exposition(snapshots: Iterable[Snapshot]) -> bytes:
    """Every endpoint family in the text format: its HELP and TYPE, then each snapshot's lines."""
    snapshots = list(snapshots)
    out: list[bytes] = []
    for i, header in enumerate(_headers()):
        out.append(header)
        out.extend(snapshot.lines[i] for snapshot in snapshots)
    return b"".join(out)


def render_snapshot(snapshot: Snapshot) -> bytes:
    """One endpoint's series in the text exposition format (for /probe)."""
    return endpoint_exposition((snapshot,))


class SelfMetrics:
    """The prober's own metrics; with a location, every one carries location=NAME.

    A worker process of `prober serve --workers N` labels its own with worker="I" too.
    """

    def __init__(self, registry: CollectorRegistry, location: str | None, worker: str | None = None) -> None:
        base = {k: v for k, v in (("location", location), ("worker", worker)) if v}
        loc, names = tuple(base.values()), tuple(base)

        def one(metric: M) -> M:  # the one child of a metric labelled by location and worker only
            return metric.labels(*loc) if loc else metric

        runs = Counter("prober_probe_runs", "Probes run, by result.", (*names, "result"), registry=registry)
        self.runs = {result: runs.labels(*loc, result) for result in RESULTS}
        self.run_duration = one(Histogram("prober_probe_run_duration_seconds", "Probe wall time.", names,
                                          buckets=RUN_BUCKETS, registry=registry))
        self.lag = one(Histogram("prober_scheduler_lag_seconds", "Actual probe start minus planned start.",
                                 names, buckets=LAG_BUCKETS, registry=registry))
        self.skipped = one(Counter("prober_probe_runs_skipped",
                                   "Runs skipped because the previous run of that endpoint was still going.",
                                   names, registry=registry))
        self.concurrency_limit = one(Gauge(
            "prober_concurrency_limit", "Probes allowed in flight at once: --concurrency, less while the event loop "
            "is starved of CPU.", names, registry=registry))
        self.loop_late = one(Gauge("prober_event_loop_late_seconds",
                                   "How late the event loop woke from its last half-second sleep.", names,
                                   registry=registry))
        self.endpoints = one(Gauge("prober_endpoints_configured",
                                   "Endpoints in the loaded config (after sharding).", names, registry=registry))
        if worker is None:  # a worker gets its config from the supervisor, which reports the reloads
            self.reload_ok, self.reload_time = reload_gauges(registry, location)

    def observe_run(self, report: Report) -> None:
        self.runs.get(report.status, self.runs["unknown"]).inc()
        self.run_duration.observe(report.duration_seconds)


def reload_gauges(registry: CollectorRegistry, location: str | None) -> tuple[Gauge, Gauge]:
    """prober_config_last_reload_successful and its timestamp: one process per service reports them."""
    loc, names = ((location,), ("location",)) if location else ((), ())
    ok = Gauge("prober_config_last_reload_successful", "1 when the last config (re)load succeeded.", names,
               registry=registry)
    when = Gauge("prober_config_last_reload_success_timestamp_seconds",
                 "When the config was last loaded successfully (unix seconds).", names, registry=registry)
    return (ok.labels(*loc), when.labels(*loc)) if loc else (ok, when)


def join_expositions(parts: Iterable[bytes]) -> bytes:
    """Several processes' /metrics as one: each family's HELP and TYPE once, then every part's samples.

    A family starts at a line "# HELP name ..." followed by its TYPE line (prometheus_client
    always writes both, and escapes a newline inside a label value or help text, so such a
    line never starts inside a sample).  Families keep the order in which they first appear.
    """
    headers: dict[bytes, memoryview] = {}
    samples: dict[bytes, list[memoryview]] = {}
    for text in parts:
        view = memoryview(text)
        start = 0 if text.startswith(b"# HELP ") else text.find(b"\n# HELP ") + 1
        while 0 <= start < len(text) and text.startswith(b"# HELP ", start):
            end = text.find(b"\n# HELP ", start) + 1 or len(text)
            name = text[start + 7:text.index(b" ", start + 7)]
            body = text.index(b"\n", text.index(b"\n", start) + 1) + 1  # past the HELP and TYPE lines
            headers.setdefault(name, view[start:body])
            samples.setdefault(name, []).append(view[body:end])
            start = end
    return b"".join(piece for name, header in headers.items() for piece in (header, *samples[name]))
