"""`prober discover`: endpoint contracts from Kubernetes objects, and a coverage report.

Objects come as YAML or JSON (`kubectl get ... -o yaml|json`, manifests on disk, stdin).
Every object that serves a hostname makes a *claim* about it: the contract keys its
annotations, class and status decide (prober/discover_rules.py).  Claims about one
hostname are merged; where they disagree the key is left out and the conflict reported.
Nothing is invented: a key is set only when an object says so, or when a controller's
documented default decides it (docs/discover.md lists which).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import idna
import yaml

from . import discover_rules as rules
from .config import ConfigError, load_config, normalize_hostname, parse_config
from .discover_input import (LOADER, NON_KUBERNETES, Inputs, K8sObject, ManifestError, ShapeError, annotation_of,
                             list_at, mapping_at, read_inputs, text_at)

__all__ = ["ManifestError", "Options", "Discovery", "discover", "read_inputs", "normalize_discovered",
           "to_probes_yaml", "coverage", "merged_config", "discover_main"]

EXIT_OK, EXIT_INCOMPLETE, EXIT_UNKNOWN = 0, 1, 3
GATEWAY_GROUP = "gateway.networking.k8s.io"
# The contract keys discovery can set, in output order.
KEYS: tuple[str, ...] = ("visibility", "owner_team", "ingress_controller", "tls_termination", "certificate_source",
                         "dns.expect_cname", "dns.expect_addresses", "http.health_path")


# --------------------------------------------------------------------------
# Hostnames
# --------------------------------------------------------------------------
# An ASCII label that IDNA leaves as it is, lower-cased: no hyphen at either end or in the
# third and fourth places (so no xn-- A-label, which idna must check).
_PLAIN_LABEL = r"(?!..--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_NAME = re.compile(rf"{_PLAIN_LABEL}(?:\.{_PLAIN_LABEL})*")


def normalize_discovered(raw: Any) -> tuple[str, bool]:
    """(IDNA A-label form, is_wildcard); ValueError with the reason when it is no DNS name."""
    if not isinstance(raw, str):
        raise ValueError("is not text")
    text = raw.strip()
    text = text[:-1] if text.endswith(".") else text
    if not text or text.endswith("."):
        raise ValueError("is not a DNS name (an empty label)")
    wildcard = text.startswith("*.")
    body = text[2:] if wildcard else text
    if _PLAIN_NAME.fullmatch(body):  # letters, digits, inner hyphens: UTS #46 only lower-cases these
        ascii_name = body.lower()
    else:
        try:
            ascii_name = idna.encode(body, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as err:
            raise ValueError(f"is not a DNS name ({err})") from None
    name = normalize_hostname(ascii_name)
    return ("*." + name if wildcard else name), wildcard


def _covers(wildcard: str, name: str) -> bool:
    """A Gateway API wildcard: *.example.com is a suffix match of one or more labels."""
    return name.endswith(wildcard[1:]) and name != wildcard[2:]


def _cert_covers(pattern: str, name: str) -> bool:
    """A certificate's wildcard covers exactly one label (RFC 6125)."""
    if not pattern.startswith("*."):
        return pattern == name
    head, _, rest = name.partition(".")
    return bool(head) and rest == pattern[2:]


def intersect(route: str, listener: str | None) -> str | None:
    """The hostname a listener accepts for a route hostname (Gateway API intersection), or None."""
    if listener is None or route == listener:
        return route
    if listener.startswith("*.") and route.startswith("*."):
        if route.endswith(listener[1:]):
            return route
        return listener if listener.endswith(route[1:]) else None
    if listener.startswith("*."):
        return route if _covers(listener, route) else None
    if route.startswith("*."):
        return listener if _covers(route, listener) else None
    return None


# --------------------------------------------------------------------------
# Claims: what one object says about one hostname
# --------------------------------------------------------------------------
@dataclass
class Claim:
    source: str
    facts: dict[str, Any]
    weak: frozenset[str] = frozenset()  # keys another object's claim overrides (a Gateway's owner)


@dataclass
class Options:
    owner_label: str = "team"
    class_visibility: dict[str, str] = field(default_factory=dict)


@dataclass
class Discovery:
    inputs: Inputs
    claims: dict[str, list[Claim]] = field(default_factory=dict)
    wildcards: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (name, source, reason)
    notes: list[str] = field(default_factory=list)
    certificate_wildcards: list[tuple[str, str]] = field(default_factory=list)  # (*.name, Certificate ref)

    def normalized(self, raw: Any, obj: K8sObject, what: str) -> tuple[str, bool] | None:
        """(name, is_wildcard), or None after reporting a name that is no DNS name as skipped."""
        if not isinstance(raw, str):
            raise ShapeError(f"{what} must be text")
        try:
            return normalize_discovered(raw)
        except ValueError as err:
            self.skipped.append((raw, obj.ref, str(err)))
            return None

    def add_name(self, raw: Any, obj: K8sObject, facts: dict[str, Any], weak: frozenset[str] = frozenset(),
                 what: str = "a hostname") -> None:
        found = self.normalized(raw, obj, what)
        if found is None:
            return
        name, wildcard = found
        if wildcard:
            sources = self.wildcards.setdefault(name, [])
            if obj.ref not in sources:
                sources.append(obj.ref)
            return
        self.claims.setdefault(name, []).append(Claim(obj.ref, facts, weak))

    def endpoints(self) -> dict[str, tuple[dict[str, Any], list[str]]]:
        """hostname -> (agreed facts, sources), sorted by hostname."""
        out = {}
        for host in sorted(self.claims):
            facts, _ = _merge(self.claims[host])
            out[host] = facts, sorted({c.source for c in self.claims[host]})
        return out

    def conflicts(self) -> list[tuple[str, str, dict[Any, list[str]]]]:
        found = []
        for host in sorted(self.claims):
            found += [(host, key, values) for key, values in _merge(self.claims[host])[1]]
        return found


def _merge(claims: list[Claim]) -> tuple[dict[str, Any], list[tuple[str, dict[Any, list[str]]]]]:
    facts: dict[str, Any] = {}
    conflicts = []
    for key in KEYS:
        strong = [(c.facts[key], c.source) for c in claims if key in c.facts and key not in c.weak]
        said = strong or [(c.facts[key], c.source) for c in claims if key in c.facts]
        values: dict[Any, list[str]] = {}
        for value, source in said:
            values.setdefault(value, [])
            if source not in values[value]:
                values[value].append(source)
        if len(values) == 1:
            facts[key] = next(iter(values))
        elif values:
            conflicts.append((key, values))
    return facts, conflicts


def _owner(obj: K8sObject, options: Options) -> dict[str, Any]:
    value = obj.meta("labels").get(options.owner_label)
    if value is None:
        value = obj.annotation(options.owner_label)
    text = str(value).strip() if value is not None and not isinstance(value, (dict, list)) else ""
    return {"owner_team": text} if text and text.isprintable() else {}


_UNDECIDED = ""  # an annotation with a value no controller takes: no default may fill in for it


def _visibility_annotation(obj: K8sObject, discovery: Discovery, annotations: dict | None = None) -> str | None:
    """public/private from the first scheme annotation present; None when there is none."""
    for key, table in rules.VISIBILITY_ANNOTATIONS:
        value = annotation_of(obj.meta("annotations") if annotations is None else annotations, key)
        if value is None:
            continue
        decided = table.get(value.lower(), table.get("*"))
        if decided is None:
            discovery.notes.append(f"{obj.ref}: {key}: {value!r} is none of {', '.join(table)}: visibility left out")
            return _UNDECIDED
        return decided
    return None


def _visibility(decided: str | None, *fallbacks: str | None) -> dict[str, Any]:
    if decided is None:
        decided = next((f for f in fallbacks if f), None)
    return {"visibility": decided} if decided else {}


def _targets(values: Iterable[str], obj: K8sObject, discovery: Discovery) -> dict[str, Any]:
    """What DNS should answer: one LB hostname -> expect_cname; IPs -> expect_addresses."""
    names, addresses = [], []
    for value in values:
        try:
            addresses.append(str(ipaddress.ip_address(value.strip())))
            continue
        except ValueError:
            pass
        try:
            name, wildcard = normalize_discovered(value)
        except ValueError as err:
            discovery.skipped.append((value, obj.ref, f"load balancer target {err}"))
            continue
        if not wildcard and name not in names:
            names.append(name)
    out: dict[str, Any] = {}
    if addresses:
        out["dns.expect_addresses"] = tuple(sorted(set(addresses)))
    if len(names) == 1:
        out["dns.expect_cname"] = names[0]
    elif names:
        discovery.notes.append(f"{obj.ref}: several load balancer hostnames ({', '.join(names)}): "
                               "dns.expect_cname left out, a name has one CNAME")
    return out


def _external_dns_target(obj: K8sObject) -> list[str] | None:
    for key in rules.TARGET_ANNOTATIONS:
        value = obj.annotation(key)
        if value:
            return [v for v in (p.strip() for p in value.split(",")) if v]
    return None


def _lb_status_targets(obj: K8sObject) -> list[str]:
    lb = mapping_at(obj.status().get("loadBalancer"), "status.loadBalancer")
    out = []
    for entry in list_at(lb.get("ingress"), "status.loadBalancer.ingress"):
        entry = mapping_at(entry, "status.loadBalancer.ingress[]")
        for key in ("hostname", "ip"):
            value = text_at(entry.get(key), f"status.loadBalancer.ingress[].{key}")
            if value:
                out.append(value)
    return out


def _dns_facts(obj: K8sObject, status_targets: list[str], discovery: Discovery) -> dict[str, Any]:
    target = _external_dns_target(obj)
    return _targets(target if target is not None else status_targets, obj, discovery)


def _health_path(obj: K8sObject, discovery: Discovery) -> dict[str, Any]:
    for key in rules.HEALTH_PATH_ANNOTATIONS:
        path = obj.annotation(key)
        if path is None:
            continue
        if path.startswith("/") and all(c.isprintable() and not c.isspace() for c in path):
            return {"http.health_path": path}
        discovery.notes.append(f"{obj.ref}: {key} {path!r} is not a path starting with '/': left out")
    return {}


def _csv_annotation(obj: K8sObject, keys: Iterable[str]) -> list[str]:
    out = []
    for key in keys:
        value = obj.annotation(key)
        if value:
            out += [v for v in (p.strip() for p in value.split(",")) if v]
    return out


# --------------------------------------------------------------------------
# Kinds
# --------------------------------------------------------------------------
def _ingress(obj: K8sObject, cluster: _Cluster, discovery: Discovery, options: Options) -> None:
    spec = obj.spec()
    cls = text_at(spec.get("ingressClassName"), "spec.ingressClassName") or obj.annotation(rules.INGRESS_CLASS_ANNOTATION)
    controller, params = cluster.ingress_classes.get(cls or "", ("", None))
    known = rules.INGRESS_CLASSES.get(rules.INGRESS_CONTROLLERS.get(controller, cls or ""))
    facts: dict[str, Any] = {**_owner(obj, options), **_health_path(obj, discovery),
                             **_dns_facts(obj, _lb_status_targets(obj), discovery)}
    # An IngressClassParams scheme binds every Ingress of the class, whatever its annotation says.
    scheme = rules.LBC_SCHEMES.get(cluster.class_params.get(params or "", ""))
    facts.update(_visibility(scheme or _visibility_annotation(obj, discovery),
                             options.class_visibility.get(cls or ""), known[1] if known else None))
    if cls:
        facts["ingress_controller"] = cls
        facts["tls_termination"] = known[0] if known else cls
    for key, source in rules.INGRESS_CERTIFICATE_ANNOTATIONS:
        if obj.annotation(key):
            facts["certificate_source"] = source
    tls_hosts: set[str | None] = set()
    for entry in list_at(spec.get("tls"), "spec.tls"):
        for host in list_at(mapping_at(entry, "spec.tls[]").get("hosts"), "spec.tls[].hosts"):
            tls_hosts.add(text_at(host, "spec.tls[].hosts[]"))
    cert_manager = any(obj.annotation(k) for k in rules.CERT_MANAGER_ANNOTATIONS)
    names = [text_at(mapping_at(rule, "spec.rules[]").get("host"), "spec.rules[].host")
             for rule in list_at(spec.get("rules"), "spec.rules")]
    names += sorted(tls_hosts, key=str) + _csv_annotation(obj, rules.INGRESS_HOSTNAME_ANNOTATIONS)
    for raw in dict.fromkeys(n for n in names if n is not None):
        own = dict(facts)
        if cert_manager and raw in tls_hosts and "certificate_source" not in own:
            own["certificate_source"] = "cert-manager"
        discovery.add_name(raw, obj, own)


def _lbc_service(obj: K8sObject, spec: dict) -> bool:
    return (spec.get("loadBalancerClass") == rules.LBC_SERVICE_CLASS
            or (obj.annotation(rules.LBC_SERVICE_TYPE_ANNOTATION) or "") in rules.LBC_SERVICE_TYPES)


def _service(obj: K8sObject, discovery: Discovery, options: Options) -> bool:
    spec = obj.spec()
    names = _csv_annotation(obj, rules.SERVICE_HOSTNAME_ANNOTATIONS)
    if spec.get("type") != "LoadBalancer" or not names:
        return False
    facts: dict[str, Any] = {**_owner(obj, options), **_dns_facts(obj, _lb_status_targets(obj), discovery)}
    facts.update(_visibility(_visibility_annotation(obj, discovery),
                             rules.LBC_SERVICE_DEFAULT_VISIBILITY if _lbc_service(obj, spec) else None))
    for key, source in rules.SERVICE_CERTIFICATE_ANNOTATIONS:
        if obj.annotation(key):
            facts["certificate_source"] = source
            facts["tls_termination"] = rules.NLB_TLS_TERMINATION
    for raw in dict.fromkeys(names):
        discovery.add_name(raw, obj, facts)
    return True


def _certificate(obj: K8sObject, discovery: Discovery, options: Options) -> None:
    names = list_at(obj.spec().get("dnsNames"), "spec.dnsNames")
    facts = {**_owner(obj, options), "certificate_source": "cert-manager"}
    for raw in names:
        found = discovery.normalized(raw, obj, "spec.dnsNames[]")
        if found is None:
            continue
        if found[1]:
            discovery.certificate_wildcards.append((found[0], obj.ref))
        discovery.add_name(found[0], obj, facts, weak=frozenset({"owner_team"}))


def _wildcard_certificates(discovery: Discovery) -> None:
    """A Certificate for *.example.com covers foo.example.com, whatever serves that name."""
    for host, claims in discovery.claims.items():
        for pattern, ref in discovery.certificate_wildcards:
            if _cert_covers(pattern, host):
                claims.append(Claim(ref, {"certificate_source": "cert-manager"}))


@dataclass
class _Listener:
    name: str
    hostname: str | None  # normalised; None accepts any
    protocol: str
    port: Any
    facts: dict[str, Any]
    allowed_from: str
    allowed_kinds: frozenset[str] | None
    selector: dict


def _gateway_facts(obj: K8sObject, discovery: Discovery, options: Options) -> dict[str, Any]:
    cls = text_at(obj.spec().get("gatewayClassName"), "spec.gatewayClassName")
    status_targets = []
    for entry in list_at(obj.status().get("addresses"), "status.addresses"):
        entry = mapping_at(entry, "status.addresses[]")
        value = text_at(entry.get("value"), "status.addresses[].value")
        if value and entry.get("type", "IPAddress") in ("IPAddress", "Hostname"):  # not a NamedAddress
            status_targets.append(value)
    facts: dict[str, Any] = _dns_facts(obj, status_targets, discovery)
    # spec.infrastructure.annotations go onto the load balancer Service the controller creates.
    infrastructure = mapping_at(obj.spec().get("infrastructure"), "spec.infrastructure")
    annotations = mapping_at(infrastructure.get("annotations"), "spec.infrastructure.annotations")
    facts.update(_visibility(_visibility_annotation(obj, discovery, annotations),
                             options.class_visibility.get(cls or "")))
    if cls:
        facts["ingress_controller"] = cls
    return facts


def _own_secrets(listener: dict, gateway: K8sObject) -> bool:
    """cert-manager's gateway-shim skips listeners whose certificateRefs are missing or in another namespace."""
    refs = list_at(mapping_at(listener.get("tls"), "spec.listeners[].tls").get("certificateRefs"),
                "spec.listeners[].tls.certificateRefs")
    return bool(refs) and all(mapping_at(r, "certificateRefs[]").get("namespace") in (None, gateway.namespace)
                              for r in refs)


def _listeners(obj: K8sObject, discovery: Discovery, options: Options) -> list[_Listener]:
    base = _gateway_facts(obj, discovery, options)
    cert_manager = any(obj.annotation(k) for k in rules.CERT_MANAGER_ANNOTATIONS)
    out = []
    for raw in list_at(obj.spec().get("listeners"), "spec.listeners"):
        raw = mapping_at(raw, "spec.listeners[]")
        protocol = str(raw.get("protocol") or "")
        mode = str(mapping_at(raw.get("tls"), "spec.listeners[].tls").get("mode") or "Terminate")
        facts = dict(base)
        if protocol in ("HTTPS", "TLS") and mode == "Terminate" and "ingress_controller" in base:
            facts["tls_termination"] = base["ingress_controller"]
        elif protocol == "TLS" and mode == "Passthrough":
            facts["tls_termination"] = rules.PASSTHROUGH_TLS_TERMINATION
        if cert_manager and protocol == "HTTPS" and mode == "Terminate" and _own_secrets(raw, obj):
            facts["certificate_source"] = "cert-manager"
        hostname = None
        if raw.get("hostname") is not None:
            found = discovery.normalized(raw["hostname"], obj, "spec.listeners[].hostname")
            if found is None:
                continue
            hostname = found[0]
            discovery.add_name(raw["hostname"], obj, {**facts, **_owner(obj, options)}, weak=frozenset({"owner_team"}))
        allowed = mapping_at(raw.get("allowedRoutes"), "spec.listeners[].allowedRoutes")
        namespaces = mapping_at(allowed.get("namespaces"), "allowedRoutes.namespaces")
        kinds = allowed.get("kinds")
        out.append(_Listener(str(raw.get("name") or ""), hostname, protocol, raw.get("port"), facts,
                             str(namespaces.get("from") or "Same"),
                             frozenset(str(mapping_at(k, "allowedRoutes.kinds[]").get("kind"))
                                       for k in list_at(kinds, "allowedRoutes.kinds")) if kinds else None,
                             mapping_at(namespaces.get("selector"), "allowedRoutes.namespaces.selector")))
    return out


def _allows(listener: _Listener, route: K8sObject, gateway_ns: str, namespaces: dict[str, dict]) -> bool:
    if route.kind not in (listener.allowed_kinds or {route.kind}):
        return False
    if listener.protocol not in rules.ROUTE_PROTOCOLS.get(route.kind, frozenset()):
        return False
    if listener.allowed_from == "All":
        return True
    if listener.allowed_from == "Selector":
        labels = namespaces.get(route.namespace)
        wanted = mapping_at(listener.selector.get("matchLabels"), "selector.matchLabels")
        # Without the Namespace object its labels are unknown: the route's status would say.
        return labels is None or all(labels.get(k) == v for k, v in wanted.items())
    return route.namespace == gateway_ns


def _route(obj: K8sObject, cluster: _Cluster, discovery: Discovery, options: Options) -> None:
    spec = obj.spec()
    written = list_at(spec.get("hostnames"), "spec.hostnames")
    route_names = [found[0] for found in (discovery.normalized(raw, obj, "spec.hostnames[]") for raw in written)
                   if found is not None]
    if written and not route_names:
        return  # every name was a placeholder: the route does not fall back to the listener's hostname
    owner = _owner(obj, options)
    attached, served_any = False, False
    for ref in list_at(spec.get("parentRefs"), "spec.parentRefs"):
        ref = mapping_at(ref, "spec.parentRefs[]")
        if (ref.get("group") or GATEWAY_GROUP) != GATEWAY_GROUP or (ref.get("kind") or "Gateway") != "Gateway":
            continue
        key = (str(ref.get("namespace") or obj.namespace), str(ref.get("name") or ""))
        found = cluster.gateways.get(key)
        if found is None:
            continue
        attached = True
        gateway, listeners = found
        for listener in listeners:
            if ref.get("sectionName") not in (None, listener.name) or ref.get("port") not in (None, listener.port):
                continue
            if not _allows(listener, obj, gateway.namespace, cluster.namespaces):
                continue
            for name in route_names or ([listener.hostname] if listener.hostname else []):
                served = intersect(name, listener.hostname)
                if served is not None:
                    served_any = True
                    discovery.add_name(served, obj, {**listener.facts, **owner})
    if not attached:  # parentRefs that do not resolve: the route's own names, and only its own facts
        for name in route_names:
            discovery.add_name(name, obj, dict(owner))
    elif route_names and not served_any:
        for name in route_names:
            discovery.skipped.append((name, obj.ref, "accepted by no listener of its Gateway (hostname, "
                                                     "sectionName, protocol or allowedRoutes)"))


@dataclass
class _Cluster:
    """What other objects are resolved against: Gateways, Namespaces, IngressClasses."""
    gateways: dict[tuple[str, str], tuple[K8sObject, list[_Listener]]] = field(default_factory=dict)
    namespaces: dict[str, dict] = field(default_factory=dict)
    ingress_classes: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> (controller, params)
    class_params: dict[str, str] = field(default_factory=dict)  # IngressClassParams name -> spec.scheme


def _index(obj: K8sObject, cluster: _Cluster, discovery: Discovery, options: Options) -> bool:
    """First pass: the objects others refer to.  False when obj is not one of them."""
    if obj.kind == "Gateway" and obj.group == GATEWAY_GROUP:
        cluster.gateways[(obj.namespace, obj.name)] = obj, _listeners(obj, discovery, options)
    elif obj.kind == "Namespace" and obj.group == "":
        cluster.namespaces[obj.name] = obj.meta("labels")
    elif obj.kind == "IngressClass" and obj.group == "networking.k8s.io":
        spec = obj.spec()
        params = mapping_at(spec.get("parameters"), "spec.parameters")
        own = params.get("kind") == "IngressClassParams" and params.get("apiGroup") == rules.LBC_PARAMS_GROUP
        cluster.ingress_classes[obj.name] = (str(spec.get("controller") or ""),
                                             text_at(params.get("name"), "spec.parameters.name") if own else None)
    elif obj.kind == "IngressClassParams" and obj.group == rules.LBC_PARAMS_GROUP:
        scheme = text_at(obj.spec().get("scheme"), "spec.scheme")
        if scheme:
            cluster.class_params[obj.name] = scheme
    else:
        return False
    return True


def _claim(obj: K8sObject, cluster: _Cluster, discovery: Discovery, options: Options) -> None:
    """Second pass: the objects that serve hostnames."""
    if obj.kind == "Ingress" and obj.group in ("networking.k8s.io", "extensions"):
        _ingress(obj, cluster, discovery, options)
    elif obj.kind == "Service" and obj.group == "":
        if not _service(obj, discovery, options):
            discovery.inputs.ignored["Service (not a LoadBalancer with a hostname annotation)"] += 1
    elif obj.kind == "Certificate" and obj.group == "cert-manager.io":
        _certificate(obj, discovery, options)
    elif obj.kind in rules.ROUTE_PROTOCOLS and obj.group == GATEWAY_GROUP:
        _route(obj, cluster, discovery, options)
    else:
        discovery.inputs.ignored[obj.kind] += 1


def discover(inputs: Inputs, options: Options | None = None) -> Discovery:
    """Every object's claims; ManifestError for a known kind whose fields have the wrong shape."""
    options = options or Options()
    discovery = Discovery(inputs)
    cluster = _Cluster()
    indexed = set()
    for step in ("index", "claim"):
        for position, obj in enumerate(inputs.objects):
            try:
                if step == "index" and _index(obj, cluster, discovery, options):
                    indexed.add(position)
                elif step == "claim" and position not in indexed:
                    _claim(obj, cluster, discovery, options)
            except (ShapeError, AttributeError, TypeError, ValueError) as err:
                raise _malformed(obj, err) from None
    _wildcard_certificates(discovery)
    return discovery


def _malformed(obj: K8sObject, err: Exception) -> ManifestError:
    # ShapeError names the field; anything else is a field of a shape no Kubernetes API server accepts.
    what = str(err) if isinstance(err, ShapeError) else f"a field has an unexpected shape ({type(err).__name__}: {err})"
    return ManifestError(f"{obj.where}: {obj.ref}: {what}")


# --------------------------------------------------------------------------
# Output: probes.yaml
# --------------------------------------------------------------------------
def contract_of(facts: dict[str, Any]) -> dict[str, Any]:
    """Dotted facts -> a probes.yaml entry's nested keys (without the hostname)."""
    out: dict[str, Any] = {}
    for key in KEYS:
        if key not in facts:
            continue
        value = list(facts[key]) if isinstance(facts[key], tuple) else facts[key]
        section, dot, sub = key.partition(".")
        if dot:
            out.setdefault(section, {})[sub] = value
        else:
            out[key] = value
    return out


def _scalar(value: Any) -> str:
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def to_probes_yaml(discovery: Discovery) -> str:
    endpoints = discovery.endpoints()
    lines = [f"# prober discover: {_count(len(endpoints), 'endpoint')} from {_count(discovery.inputs.read, 'object')}.",
             "# Keys are set only where the objects say so (docs/discover.md); review before use.",
             "endpoints:"]
    for host, (facts, sources) in endpoints.items():
        lines.append(f"  # {', '.join(sources)}")
        lines.append(f"  - hostname: {host}")
        for key, value in contract_of(facts).items():
            if isinstance(value, dict):
                lines.append(f"    {key}:")
                lines += [f"      {sub}: {_scalar(v)}" for sub, v in value.items()]
            else:
                lines.append(f"    {key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def _summary(discovery: Discovery) -> str:
    inputs = discovery.inputs
    ignored = ", ".join(f"{n} {k}" + ("s" if n > 1 and k == NON_KUBERNETES else "")
                        for k, n in sorted(inputs.ignored.items()))
    return (f"read {_count(inputs.read, 'object')} from {_count(inputs.sources, 'source')}: "
            f"{_count(len(discovery.claims), 'endpoint')}, {_count(len(discovery.wildcards), 'wildcard')}, "
            f"{_count(len(discovery.skipped), 'skipped name')}"
            + (f"; ignored {ignored}" if ignored else ""))


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _report_lines(discovery: Discovery) -> list[str]:
    lines = [f"skipped {_clip(name)!r} ({source}): {reason}" for name, source, reason in discovery.skipped]
    lines += [f"wildcard {host} ({', '.join(src)}): not probed; add a contract for a concrete name under it"
              for host, src in sorted(discovery.wildcards.items())]
    for host, key, values in discovery.conflicts():
        said = "; ".join(f"{_show(v)} from {', '.join(s)}" for v, s in values.items())
        lines.append(f"conflict {host} {key}: {said}; left out")
    return lines + discovery.notes


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value: Any) -> str:
    return " ".join(value) if isinstance(value, (tuple, list)) else str(value)


# --------------------------------------------------------------------------
# Coverage
# --------------------------------------------------------------------------
def _contract_value(endpoint: Any, key: str) -> Any:
    section, dot, sub = key.partition(".")
    value = getattr(getattr(endpoint, section), sub) if dot else getattr(endpoint, key)
    if isinstance(value, tuple):
        return tuple(sorted(value)) if value else None
    return value


def coverage(discovery: Discovery, contracts: Any) -> dict[str, list[dict[str, Any]]]:
    """unmonitored, stale, mismatches and wildcards of the cluster against a Config."""
    by_host = contracts.by_hostname()
    endpoints = discovery.endpoints()
    report: dict[str, list[dict[str, Any]]] = {"unmonitored": [], "stale": [], "mismatches": [], "wildcards": []}
    for host, (facts, sources) in endpoints.items():
        contract = by_host.get(host)
        if contract is None:
            report["unmonitored"].append({"hostname": host, "sources": sources})
            continue
        for key in KEYS:
            want = _contract_value(contract, key)
            if key not in facts or want is None or want == facts[key]:
                continue  # a key the cluster does not speak about is never a mismatch
            report["mismatches"].append({"hostname": host, "key": key, "contract": _jsonable(want),
                                         "cluster": _jsonable(facts[key]), "sources": sources})
    for host in sorted(by_host):
        if host not in endpoints and not any(_covers(w, host) for w in discovery.wildcards):
            report["stale"].append({"hostname": host})
    report["wildcards"] = [{"hostname": w, "sources": s} for w, s in sorted(discovery.wildcards.items())]
    return report


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def complete(report: dict[str, list]) -> bool:
    return not (report["unmonitored"] or report["stale"] or report["mismatches"])


def coverage_text(report: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for item in report["unmonitored"]:
        lines.append(f"UNMONITORED {item['hostname']}  served by {', '.join(item['sources'])}, no contract")
    for item in report["stale"]:
        lines.append(f"STALE       {item['hostname']}  has a contract, but no object serves it")
    for item in report["mismatches"]:
        lines.append(f"MISMATCH    {item['hostname']}  {item['key']}: contract {_show(item['contract'])}, "
                     f"cluster {_show(item['cluster'])} ({', '.join(item['sources'])})")
    for item in report["wildcards"]:
        lines.append(f"WILDCARD    {item['hostname']}  served by {', '.join(item['sources'])}; not probed as such")
    counts = ", ".join(f"{len(report[k])} {k}" for k in ("unmonitored", "stale", "mismatches"))
    counts += f", {_count(len(report['wildcards']), 'wildcard')}"
    verdict = "complete" if complete(report) else "incomplete"
    return "\n".join(lines + [f"coverage {verdict}: {counts}"])


# --------------------------------------------------------------------------
# prober serve --discover: discovered keys under the hand-written ones
# --------------------------------------------------------------------------
def _under(discovered: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    merged = dict(discovered)
    for key, value in written.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


class _TextLoader(LOADER):  # type: ignore[misc, valid-type]
    """Reads a contract file as the config loader does: only str, int, float, bool and null are
    values; a timestamp, a binary or a custom tag stays the text it was written as."""


def _as_written(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    _TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _as_written)
_TextLoader.add_constructor(None, _as_written)


def merged_config(config_path: str, discover_path: str, options: Options | None = None) -> Any:
    """The contract file with the discovered endpoints merged in; hand-written keys win.

    Raises ConfigError for a bad contract file, ManifestError for unreadable manifests.
    """
    load_config(config_path)  # its own problems, with its own lines, come first
    discovery = discover(read_inputs([discover_path]), options)
    with open(config_path, encoding="utf-8-sig") as handle:
        raw = yaml.load(handle.read(), Loader=_TextLoader)
    found = {host: contract_of(facts) for host, (facts, _) in discovery.endpoints().items()}
    entries = []
    for entry in raw["endpoints"]:
        host = normalize_hostname(entry["hostname"])
        entries.append(_under(found.pop(host, {}), entry))
    entries += [{"hostname": host, **contract} for host, contract in found.items()]
    document = {**raw, "endpoints": entries}
    return parse_config(json.dumps(document, default=str), f"{config_path} with {discover_path}",
                        base_dir=os.path.dirname(os.path.abspath(config_path)))


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------
def parse_class_visibility(items: Iterable[str] | None) -> dict[str, str]:
    out = {}
    for item in items or ():
        cls, sep, visibility = item.partition("=")
        if not sep or not cls.strip() or visibility not in ("public", "private"):
            raise ValueError(f"--class-visibility {item!r}: expected CLASS=public or CLASS=private")
        out[cls.strip()] = visibility
    return out


def _err(message: str) -> None:
    print(f"prober discover: {message}", file=sys.stderr)


def discover_main(args: argparse.Namespace) -> int:
    try:
        options = Options(args.owner_label, parse_class_visibility(args.class_visibility))
    except ValueError as err:
        _err(str(err))
        return EXIT_UNKNOWN
    if args.json and not args.coverage:
        _err("--json goes with --coverage: the contracts themselves are printed as probes.yaml")
        return EXIT_UNKNOWN
    if not args.sources and sys.stdin is not None and sys.stdin.isatty():
        _err("give manifest files or directories, or pipe objects in: kubectl get ... -o yaml | prober discover -")
        return EXIT_UNKNOWN
    contracts = None
    if args.coverage:
        try:
            contracts = load_config(args.coverage)
        except ConfigError as err:
            _err(f"--coverage: {err.problems[0]}" + (f" (and {len(err.problems) - 1} more; "
                                                      "`prober validate` lists them)" if len(err.problems) > 1 else ""))
            return EXIT_UNKNOWN
    try:
        discovery = discover(read_inputs(args.sources or ["-"]), options)
    except ManifestError as err:
        _err(" ".join(str(err).split()))
        return EXIT_UNKNOWN
    if contracts is not None:
        return _coverage_main(discovery, contracts, args.json)
    if not discovery.claims:
        _err(f"no endpoint found: {_summary(discovery)}")
        return EXIT_INCOMPLETE
    for line in _report_lines(discovery):
        _err(line)
    _err(_summary(discovery))
    sys.stdout.write(to_probes_yaml(discovery))
    return EXIT_OK


def _coverage_main(discovery: Discovery, contracts: Any, as_json: bool) -> int:
    report = coverage(discovery, contracts)
    for line in _report_lines(discovery):
        if not line.startswith("wildcard "):
            _err(line)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(coverage_text(report))
    return EXIT_OK if complete(report) else EXIT_INCOMPLETE
