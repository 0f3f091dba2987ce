"""probe(endpoint) -> Report: the layers outside-in, under one deadline.

The one code path for `prober check` and `prober serve`.  Each layer gets a
share of the endpoint's timeout (and whatever an earlier layer left unused);
a hard stop slightly past the timeout backs the per-layer deadlines up, so a
hung endpoint can never hold a probe longer than its contract says.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time

from . import renewal, x509
from .layers.dns import probe_dns
from .layers.http import probe_http
from .layers.tls import Connection, client_cert_findings, probe_tls
from .model import LAYERS, DnsResult, Endpoint, Finding, HttpResult, LayerResult, Report, TlsResult, Verdict
from .hints import stale_hint
from .verdict import decide, layer_status

DNS_SHARE = 0.4
TLS_SHARE = 0.75
HARD_STOP_GRACE = 0.5


def _layer(name: str, started: float, findings: list[Finding]) -> LayerResult:
    return LayerResult(name=name, status=layer_status(findings), duration_seconds=time.monotonic() - started,
                       findings=tuple(findings))


def _skipped(name: str, reason: str) -> LayerResult:
    return LayerResult(name=name, status="skipped", duration_seconds=0.0, reason=reason)


async def _dns(endpoint: Endpoint, deadline: float) -> tuple[DnsResult, LayerResult]:
    if not endpoint.resolvers and endpoint.authoritative in ("off", "auto"):
        reason = "no resolvers configured" + (f"; dialling connect_to {endpoint.connect_to}"
                                              if endpoint.connect_to else "")
        return DnsResult(addresses=(endpoint.connect_to,) if endpoint.connect_to else ()), _skipped("dns", reason)
    started = time.monotonic()
    result, findings = await probe_dns(endpoint, endpoint.resolvers, deadline)
    return result, _layer("dns", started, findings)


def quiet_abandoned_connections(loop: asyncio.AbstractEventLoop) -> None:
    """Keep a connection error nobody could retrieve out of the log; pass every other one on.

    A handshake the probe gave up on (its deadline, or the service stopping) can still fail inside
    asyncio's start_tls afterwards, on a future that asyncio itself leaves behind: "Future exception
    was never retrieved" with a reset connection.  That connection was already abandoned.
    """
    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if (context.get("message") == "Future exception was never retrieved"
                and isinstance(context.get("exception"), OSError)):  # ssl.SSLError included
            return
        loop.default_exception_handler(context)
    loop.set_exception_handler(handler)


async def _run(endpoint: Endpoint, started_wall: float, started: float) -> Report:
    timeout = endpoint.timeout
    dns_result, dns_layer = await _dns(endpoint, started + timeout * DNS_SHARE)
    tls_result, http_result = TlsResult(), HttpResult()
    assessed = renewal.Assessment()
    connections: list[Connection] = []
    layers = [dns_layer]
    findings = list(dns_layer.findings)
    try:
        if not dns_result.addresses:
            layers += [_skipped("tls", "DNS gave no address to connect to"),
                       _skipped("http", "DNS gave no address to connect to")]
        else:
            t0 = time.monotonic()
            try:
                store = x509.TrustStore.load(endpoint.ca_file)
            except x509.TrustStoreError as err:
                reason = f"cannot load the trust store: {err}"
                layers += [LayerResult("tls", "unknown", 0.0, reason=reason),
                           LayerResult("http", "unknown", 0.0, reason=reason)]
                return _report(endpoint, started_wall, started, tuple(layers), tuple(findings),
                               dns_result, tls_result, http_result)
            tls_result, tls_findings, connections = await probe_tls(
                endpoint, dns_result.addresses, started + timeout * TLS_SHARE, store)
            tls_findings = _explain_with_dns(tls_findings, dns_result, endpoint.hostname)
            tls_layer = _layer("tls", t0, tls_findings)
            t0 = time.monotonic()
            redirect_to = connections[0].address if connections else dns_result.addresses[0]
            (http_result, http_findings), assessed = await asyncio.gather(
                probe_http(endpoint, connections, redirect_to, started + timeout),
                renewal.assess(endpoint, tls_result, dns_layer.status != "skipped", started + timeout))
            mtls = client_cert_findings(endpoint, tls_result, http_result,
                                        any(f.code == "http.health_failed" for f in http_findings))
            if mtls:  # the server wanted a client certificate: that, not the health path, is the story
                http_findings = [f for f in http_findings if f.code != "http.health_failed"]
                tls_findings = tls_findings + mtls
                tls_layer = dataclasses.replace(tls_layer, status=layer_status(tls_findings),
                                                findings=tuple(tls_findings))
            layers[0] = _extended(dns_layer, assessed.dns_findings)
            layers += [_extended(tls_layer, assessed.tls_findings), _layer("http", t0, http_findings)]
            findings = [*layers[0].findings, *layers[1].findings, *http_findings]
    finally:
        for c in connections:
            c.close()
    return _report(endpoint, started_wall, started, tuple(layers), tuple(findings),
                   dns_result, tls_result, http_result, assessed)


def _extended(layer: LayerResult, extra: tuple[Finding, ...]) -> LayerResult:
    """The layer with the renewal checks' findings added (they run alongside the HTTP layer)."""
    if not extra:
        return layer
    found = (*layer.findings, *extra)
    return dataclasses.replace(layer, findings=found, status=layer_status(list(found)))


def _stale_only(dns: DnsResult) -> dict[str, list[str]]:
    """Addresses that only resolvers disagreeing with the authoritative answer hand out."""
    fresh = {a for r in (*dns.resolvers, *dns.authoritative) if r.agrees_with_authoritative is not False
             for a in r.addresses}
    stale: dict[str, list[str]] = {}
    for r in dns.resolvers:
        if r.agrees_with_authoritative is False:
            for a in r.addresses:
                if a not in fresh:
                    stale.setdefault(a, []).append(r.resolver)
    return stale


def _explain_with_dns(findings: list[Finding], dns: DnsResult, hostname: str) -> list[Finding]:
    """A TLS failure at an address only a stale resolver returns is a DNS problem (DNS still points at the old load balancer): say so."""
    stale = _stale_only(dns)
    if not stale:
        return findings
    out = []
    for f in findings:
        address = (f.address or "").rsplit(":", 1)[0].strip("[]")
        if address in stale:
            names = ", ".join(stale[address])
            f = dataclasses.replace(
                f, message=f"{f.message}; only {names} still answer{'s' if len(stale[address]) == 1 else ''} "
                           f"{address}, which the authoritative servers no longer do (stale cache: the old "
                           "load balancer?)",
                hint=stale_hint(hostname, dns, stale[address]))
        out.append(f)
    return out


def _phases(dns: DnsResult, tls: TlsResult, http: HttpResult) -> dict[str, float]:
    phases: dict[str, float] = {}
    if dns.resolvers:
        phases["dns"] = dns.duration_seconds
    first = next((t for t in tls.targets if t.connected), None)
    if first is not None:
        phases["connect"] = first.connect_seconds or 0.0
        if first.tls_seconds is not None:
            phases["tls"] = first.tls_seconds
    fb = next((h.first_byte_seconds for h in http.health if h.first_byte_seconds is not None), None)
    if fb is not None:
        phases["first_byte"] = fb
    return phases


def _report(endpoint: Endpoint, started_wall: float, started: float, layers: tuple[LayerResult, ...],
            findings: tuple[Finding, ...], dns: DnsResult, tls: TlsResult, http: HttpResult,
            assessed: renewal.Assessment = renewal.Assessment()) -> Report:
    verdict = decide(endpoint.hostname, layers, findings)
    return Report(hostname=endpoint.hostname, endpoint=endpoint, started_at=started_wall,
                  duration_seconds=time.monotonic() - started, status=verdict.status, verdict=verdict,
                  layers=layers, findings=findings, dns=dns, tls=tls, http=http,
                  phases=_phases(dns, tls, http), renewal=assessed.renewal, caa=assessed.caa,
                  notes=assessed.notes)


def unknown_report(endpoint: Endpoint, started_wall: float, started: float, message: str) -> Report:
    """An UNKNOWN report for a run that did not finish: every layer unknown, with `message` as the reason."""
    layers = tuple(LayerResult(name=n, status="unknown", duration_seconds=0.0, reason=message) for n in LAYERS)
    verdict = Verdict(status="unknown", layer=None, code=None, message=f"{endpoint.hostname}: {message}")
    return Report(hostname=endpoint.hostname, endpoint=endpoint, started_at=started_wall,
                  duration_seconds=time.monotonic() - started, status="unknown", verdict=verdict,
                  layers=layers, findings=(), dns=DnsResult(), tls=TlsResult(), http=HttpResult())


async def probe(endpoint: Endpoint) -> Report:
    """Probe one endpoint; never raises (except cancellation)."""
    started_wall, started = time.time(), time.monotonic()
    try:
        async with asyncio.timeout(endpoint.timeout + HARD_STOP_GRACE):  # in this task: no task of its own
            return await _run(endpoint, started_wall, started)
    except TimeoutError:
        return unknown_report(endpoint, started_wall, started,
                              f"the probe did not finish within its {endpoint.timeout:g}s timeout and was stopped")
