"""The Helm chart, rendered by Helm's own engine and checked by the real consumers.

Rendering uses helm-python-sdk, which bundles Helm's Go SDK (v4) as a shared
library: the same template engine, Sprig functions, `.Files.Get` and
values.schema.json enforcement as `helm install`, with no cluster.  What is
rendered is then handed to what would consume it: Kubernetes' OpenAPI schemas
(kubernetes-validate, strict), promtool for the alert rules, amtool for the
Alertmanager routing, prober's own config loader and argument parser.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import helm_python as helm
except ImportError:  # pragma: no cover - reported by _need
    helm = None
try:
    import kubernetes_validate
except ImportError:  # pragma: no cover
    kubernetes_validate = None

import jsonschema

from prober.cli import build_parser
from prober.config import ConfigError, load_config
from prober.shard import in_shard, parse_shard

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "prober"
FIXTURES = Path(__file__).resolve().parent / "chart_values"
SHARDED = "valid-sharded-location.yaml"
KUBE_VERSIONS = ("1.25.0", "1.37.0")  # the chart's kubeVersion floor, and the newest schemas shipped
UID = 65532


def _need(ok: bool, what: str) -> None:
    """A missing tool fails under CI=true and skips (never passes) elsewhere."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not installed")


def _fixture(name: str) -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / name).read_text()) or {}


def _expected_error(name: str) -> str:
    match = re.search(r"^# expect: (.+)$", (FIXTURES / name).read_text(), re.M)
    assert match, f"{name} must say what it expects in a '# expect:' line"
    return match[1].strip()


@pytest.fixture(scope="module")
def chart():
    _need(helm is not None, "helm-python-sdk (pip install helm-python-sdk)")
    loaded = helm.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def _render_text(chart, values: dict[str, Any], release: str = "prober", namespace: str = "monitoring"
                 ) -> dict[str, str]:
    return chart.render(values, name=release, namespace=namespace, is_install=True)


def _manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return [doc for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


@functools.lru_cache(maxsize=None)
def _rendered_json(chart, name: str, release: str, namespace: str, overrides: str) -> str:
    values = _fixture(name)
    values.update(json.loads(overrides))
    return json.dumps(_manifests(_render_text(chart, values, release, namespace)))


def render(chart, name: str, release: str = "prober", namespace: str = "monitoring",
           **overrides: Any) -> list[dict[str, Any]]:
    """Manifests for a fixture (plus top-level overrides), fresh objects on every call."""
    return json.loads(_rendered_json(chart, name, release, namespace, json.dumps(overrides, sort_keys=True)))


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(found) == 1
    return found[0]


VALID = sorted(p.name for p in FIXTURES.glob("valid-*.yaml"))
INVALID = sorted(p.name for p in FIXTURES.glob("invalid-*.yaml"))
REFUSED = sorted(p.name for p in FIXTURES.glob("fail-*.yaml"))


# --------------------------------------------------------------------------
# Values: the schema and the template guards
# --------------------------------------------------------------------------
def test_defaults_alone_are_refused_with_a_pointer_to_endpoints(chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="/probes/endpoints"):
        _render_text(chart, {})


@pytest.mark.parametrize("name", INVALID)
def test_invalid_values_are_rejected_by_the_schema(chart, name: str) -> None:
    expected = _expected_error(name)
    with pytest.raises(helm.HelmValuesError) as excinfo:
        _render_text(chart, _fixture(name))
    assert expected in str(excinfo.value)
    # The schema alone rejects it too (not a template accident), as any editor plugin would.
    schema = json.loads((CHART / "values.schema.json").read_text())
    merged = chart.merge_values(_fixture(name))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(merged)), name


@pytest.mark.parametrize("name", REFUSED)
def test_inconsistent_values_are_refused_by_the_templates(chart, name: str) -> None:
    chart.validate_schema(_fixture(name))  # the schema cannot see these
    with pytest.raises(helm.HelmRenderError) as excinfo:
        _render_text(chart, _fixture(name))
    assert _expected_error(name) in str(excinfo.value)


# Values for single probes keys, right and wrong: the schema and the config loader must agree on each.
_SAMPLES: dict[str, list[Any]] = {
    "hostname": ["shop.example.com", "a", "Shop.Example.COM.", "xn--bcher-kva.example", "1a.example", "a-b.c",
                 "x" * 63 + ".com", ("x" * 62 + ".") * 4 + "x", ("x" * 62 + ".") * 4 + "xy", "192.0.2.1",
                 "example.123", "shop_eu.example.com", "-a.com", "a-.com", "", "a..b", ".", "x" * 64 + ".com",
                 "bücher.example", 42],
    "timeout": [10, 1.5, "10s", "500ms", "2m", "1m30s", "1h", "1d", ".5s", "1.s", "10", " 10s ", "1h30m15s250ms",
                0, -1, "0s", "0", "0.0m", "30s1m", "1s1s", "10 s", "1x", "", True, "-5s", "s"],
    "connect_to": ["192.0.2.1", "::1", "2001:db8::1", "::ffff:192.0.2.1", "fe80::1:2:3:4", "1::", "192.0.2.1:80",
                   "[::1]", "host.example", "256.1.1.1", "1.2.3", "1:2:3:4:5:6:7:8:9", "2001:db8:::1", None],
    "resolvers": [["system"], ["192.0.2.53"], ["192.0.2.53:5353"], ["[2001:db8::53]:53"], ["2001:db8::53"],
                  ["[::1]"], [{"address": "192.0.2.53", "view": "public", "name": "a"}], [], ["dns.example.net"],
                  ["192.0.2.53:0"], ["192.0.2.53:70000"], ["[192.0.2.1]:53"], [""], [{"address": "x"}],
                  [{"address": "192.0.2.53", "name": " "}], [{"address": "192.0.2.53", "view": "other"}]],
    "authoritative": ["auto", "off", False, "192.0.2.1", "192.0.2.1:5353", "[2001:db8::1]:53", "ns1.example.com",
                      "", True, "192.0.2.1:0"],
    "owner_team": ["payments", "team a", None, "", "  ", "a\nb", 7],
    "http.health_path": ["/", "/healthz", "/a?b=c", "healthz", "/a b", "", "/a\tb"],
    "dns.expect_cname": ["lb.example.net", None, "192.0.2.1", "a_b.example"],
    "http.headers": [{"X-Probe": "1"}, {"X Probe": "1"}, {"X-Probe": "a\r\nb"}, {"X-Probe": 1}],
}


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, values in _SAMPLES.items() for v in values],
                         ids=lambda v: repr(v)[:40])
def test_schema_and_loader_agree_on_each_value(key: str, value: Any) -> None:
    from prober.config import build_endpoint

    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator({"$ref": "#/definitions/endpoint", "definitions": schema["definitions"]})
    section, _, leaf = key.rpartition(".")
    entry = {section: {leaf: value}} if section else {key: value}
    host = value if key == "hostname" else "shop.example.com"
    overrides = {} if key == "hostname" else {**entry, **({"interval": "1000d"} if key == "timeout" else {})}
    schema_ok = not list(validator.iter_errors({"hostname": host, **overrides}))
    try:
        build_endpoint(host, overrides)
        loader_ok = True
    except ConfigError:
        loader_ok = False
    assert schema_ok == loader_ok, f"{key}={value!r}: the schema says {schema_ok}, prober validate says {loader_ok}"


def _prober_expectation(name: str) -> str | None:
    """What `prober validate` says of the fixture's probes, for fixtures whose fault lies there."""
    match = re.search(r"^# prober: (.+)$", (FIXTURES / name).read_text(), re.M)
    return match[1].strip() if match else None


PROBES_FAULTS = [n for n in INVALID + REFUSED if _prober_expectation(n)]


@pytest.mark.parametrize("name", PROBES_FAULTS)
def test_what_the_chart_refuses_the_prober_refuses(chart, tmp_path: Path, name: str) -> None:
    """The chart's rules mirror prober/config.py's: the same probes, as a probes.yaml, fail validation."""
    values = chart.merge_values(_fixture(name))
    for key, text in (values.get("configFiles") or {}).items():
        (tmp_path / key).write_text(text)
    (tmp_path / "probes.yaml").write_text(yaml.safe_dump(values["probes"]))
    done = subprocess.run([sys.executable, "-m", "prober", "validate", str(tmp_path / "probes.yaml")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 3, done.stdout + done.stderr
    assert _prober_expectation(name) in done.stdout + done.stderr


def test_every_probes_rule_fixture_says_what_the_prober_says() -> None:
    """Each fixture that breaks a probes rule names the loader's words too, so the test above covers it."""
    about_probes = [n for n in INVALID + REFUSED if "/probes/" in _expected_error(n) or
                    _expected_error(n).startswith("probes.")]
    assert [n for n in about_probes if not _prober_expectation(n)] == []


@pytest.mark.parametrize("name", VALID)
def test_valid_values_pass_prober_validate(chart, tmp_path: Path, name: str) -> None:
    """The rendered ConfigMap, mounted as the kubelet would, passes `prober validate`; without one
    (existingConfigMap) the init container is what validates it."""
    docs = render(chart, name)
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    pod = workload(docs)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    args = build_parser().parse_args(init["args"])
    assert (args.command, args.config) == ("validate", build_parser().parse_args(
        pod["containers"][0]["args"]).config)
    if not maps:
        assert _fixture(name).get("existingConfigMap")
        return
    for key, text in maps[0]["data"].items():
        (tmp_path / key).write_text(text)
    done = subprocess.run([sys.executable, "-m", "prober", "validate", str(tmp_path / "probes.yaml")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_what_only_the_init_container_sees_fails_it_with_one_line(chart, tmp_path: Path) -> None:
    name = "init-bad-regex.yaml"
    docs = render(chart, name)
    for key, text in one(docs, "ConfigMap")["data"].items():
        (tmp_path / key).write_text(text)
    (init,) = workload(docs)["spec"]["template"]["spec"]["initContainers"]
    config = tmp_path / Path(init["args"][1]).name
    done = subprocess.run([sys.executable, "-m", "prober", init["args"][0], str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 3 and len(output.splitlines()) == 1, output
    assert _expected_error(name) in output


def test_validate_init_container_runs_like_the_prober(chart) -> None:
    pod = workload(render(chart, "valid-sharded-location.yaml"))["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert init["image"] == main["image"] and init["securityContext"] == main["securityContext"]
    assert init["volumeMounts"] == main["volumeMounts"]
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"  # the reason shows in describe pod
    off = workload(render(chart, "valid-minimal.yaml", validateConfig=False))["spec"]["template"]["spec"]
    assert "initContainers" not in off


@pytest.mark.parametrize("name", VALID)
def test_valid_values_lint_clean(name: str) -> None:
    _need(helm is not None, "helm-python-sdk")
    report = helm.lint(str(CHART), _fixture(name), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def _dotted(mapping: dict[str, Any], nested: Any, prefix: str = "") -> set[str]:
    """Dotted key paths of a nested mapping; nested(value) gives the sub-mapping or None."""
    out = set()
    for key, value in mapping.items():
        out.add(prefix + key)
        sub = nested(value)
        if isinstance(sub, dict):
            out |= _dotted(sub, nested, f"{prefix}{key}.")
    return out


def _schema_keys() -> set[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    return _dotted(schema["definitions"]["endpoint"]["properties"], lambda v: v.get("properties"))


def test_schema_and_config_loader_know_the_same_probes_keys() -> None:
    """The schema mirrors probes.yaml so that a typo fails `helm install`; keep the two in step."""
    from prober import config

    theirs = _dotted(config._ENDPOINT_SPEC, lambda v: v if isinstance(v, dict) else None)
    ours = _schema_keys()
    assert ours == theirs, f"only in values.schema.json: {sorted(ours - theirs)}; " \
                           f"only in prober.config: {sorted(theirs - ours)}"


def test_the_full_fixture_uses_every_probes_key() -> None:
    """So that `rendered config loads` below covers every key the schema lets through."""
    probes = _fixture(SHARDED)["probes"]
    used = set().union(*(_dotted(layer, lambda v: v if isinstance(v, dict) else None)
                         for layer in [probes["defaults"], *probes["endpoints"]]))
    used -= {"http.headers.X-Probe"}
    if {"tls.client_cert.cert_file", "tls.client_cert.key_file"} <= used:  # one key whose value is a mapping
        used = (used - {"tls.client_cert.cert_file", "tls.client_cert.key_file"}) | {"tls.client_cert"}
    assert _schema_keys() - used == set()
    assert used - _schema_keys() == set()


# --------------------------------------------------------------------------
# Kubernetes objects
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", VALID)
def test_rendered_objects_are_valid_kubernetes(chart, name: str) -> None:
    _need(kubernetes_validate is not None, "kubernetes-validate")
    docs = render(chart, name)
    checked = set()
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: checked structurally below
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} is invalid for Kubernetes "
                            f"{version}: {err.message} at {list(err.path)}")
        checked.add(doc["kind"])
    assert {"Service", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget"} <= checked
    assert checked & {"Deployment", "StatefulSet"}


def test_object_names_fit_and_two_locations_do_not_collide(chart) -> None:
    eu = render(chart, SHARDED, release="eu-west-1", location="eu-west-1")
    us = render(chart, SHARDED, release="us-east-1", location="us-east-1")
    names = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs}  # noqa: E731
    assert names(eu).isdisjoint(names(us))
    for docs, location in ((eu, "eu-west-1"), (us, "us-east-1")):
        assert all(len(d["metadata"]["name"]) <= 63 for d in docs)
        pod = workload(docs)["spec"]["template"]
        assert pod["metadata"]["labels"]["prober/location"] == location
        args = build_parser().parse_args(pod["spec"]["containers"][0]["args"])
        assert args.location == location


def test_single_shard_is_a_deployment_of_one(chart) -> None:
    docs = render(chart, "valid-minimal.yaml")
    deploy = workload(docs)
    assert deploy["kind"] == "Deployment" and deploy["spec"]["replicas"] == 1
    args = build_parser().parse_args(deploy["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (args.command, args.config, args.listen, args.shard, args.location) == \
        ("serve", "/etc/prober/probes.yaml", "0.0.0.0:9716", None, None)
    assert [s["metadata"]["name"] for s in docs if s["kind"] == "Service"] == ["prober"]


def test_statefulset_pods_split_the_rendered_endpoints_exactly(chart, tmp_path: Path) -> None:
    """Pod names from the StatefulSet + the args it passes + the config it mounts: one owner per endpoint."""
    docs = render(chart, SHARDED)
    sts = workload(docs)
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    args = build_parser().parse_args(sts["spec"]["template"]["spec"]["containers"][0]["args"])
    config = _load_rendered_config(docs, tmp_path)
    owners: dict[str, list[int]] = {e.hostname: [] for e in config.endpoints}
    for ordinal in range(sts["spec"]["replicas"]):
        shard = parse_shard(args.shard, hostname=f"{sts['metadata']['name']}-{ordinal}")
        assert shard == (ordinal, 3)
        for endpoint in config.endpoints:
            if in_shard(endpoint.hostname, shard):
                owners[endpoint.hostname].append(ordinal)
    assert all(len(o) == 1 for o in owners.values()), owners
    headless = [s for s in docs if s["kind"] == "Service" and s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [sts["spec"]["serviceName"]]


@pytest.mark.parametrize("name", ["valid-minimal.yaml", SHARDED])
def test_pod_security(chart, name: str) -> None:
    docs = render(chart, name)
    pod = workload(docs)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}
    # The only writable path is an emptyDir at /tmp.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/prober"]["readOnly"] is True
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "160Mi"},
                                      "limits": {"memory": "384Mi"}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http-metrics"}
    assert container["ports"] == [{"name": "http-metrics", "containerPort": 9716, "protocol": "TCP"}]


def test_chart_user_is_the_image_user() -> None:
    from dockerfile_parse import DockerfileParser

    users = [i["value"] for i in DockerfileParser(path=str(ROOT / "Dockerfile")).structure
             if i["instruction"] == "USER"]
    assert users[-1] == f"{UID}:{UID}"


def test_pdb_never_blocks_a_drain_of_the_single_pod(chart) -> None:
    pdb = one(render(chart, "valid-minimal.yaml"), "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------
def _load_rendered_config(docs: list[dict[str, Any]], directory: Path):
    """Write the ConfigMap as the kubelet would mount it, then load it like `prober serve`."""
    for key, text in one(docs, "ConfigMap")["data"].items():
        (directory / key).write_text(text)
    return load_config(str(directory / "probes.yaml"))


@pytest.mark.parametrize(("name", "count"), [("valid-minimal.yaml", 1), (SHARDED, 3)])
def test_rendered_probe_config_loads(chart, tmp_path: Path, name: str, count: int) -> None:
    try:
        config = _load_rendered_config(render(chart, name), tmp_path)
    except ConfigError as err:
        pytest.fail("the chart renders a probes.yaml that prober rejects:\n" + "\n".join(err.problems))
    assert len(config.endpoints) == count


def test_the_repository_example_config_installs_as_values(chart, tmp_path: Path) -> None:
    example = yaml.safe_load((ROOT / "probes.yaml").read_text())
    docs = _manifests(_render_text(chart, {"probes": example}))
    config = _load_rendered_config(docs, tmp_path)
    assert [e.hostname for e in config.endpoints] == \
        [e.hostname for e in load_config(str(ROOT / "probes.yaml")).endpoints]


def test_rendered_config_keeps_yaml_typed_values(chart, tmp_path: Path) -> None:
    config = _load_rendered_config(render(chart, SHARDED), tmp_path)
    by_name = {e.hostname: e for e in config.endpoints}
    shop, api = by_name["shop.example.com"], by_name["api.internal.example.com"]
    assert shop.expiry_days == (45, 21, 10, 4, 0)
    assert shop.ca_file == str(tmp_path / "internal-ca.pem")  # configFiles sit beside probes.yaml
    assert api.authoritative == "off"  # YAML's bare `off` survives Helm's round trip
    assert (api.tls.port, api.http.port, api.tls_min_version) == (8443, 8080, "1.3")


def test_config_change_rolls_the_pods(chart) -> None:
    def checksum(**overrides: Any) -> str:
        pod = workload(render(chart, "valid-minimal.yaml", **overrides))["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/config"]

    other = {"endpoints": [{"hostname": "shop.example.com", "interval": "30s"}]}
    assert checksum() == checksum()
    assert checksum() != checksum(probes=other)
    assert checksum() != checksum(configFiles={"ca.pem": "-----BEGIN CERTIFICATE-----\n"})


def test_existing_configmap_is_mounted_instead(chart) -> None:
    docs = render(chart, "valid-existing-configmap.yaml")
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    pod = workload(docs)["spec"]["template"]
    assert "checksum/config" not in (pod["metadata"].get("annotations") or {})
    assert {"name": "config", "configMap": {"name": "prober-probes"}} in pod["spec"]["volumes"]
    args = build_parser().parse_args(pod["spec"]["containers"][0]["args"])
    assert args.config == "/etc/prober/fleet.yaml"


# --------------------------------------------------------------------------
# Network policy
# --------------------------------------------------------------------------
def test_network_policy(chart) -> None:
    policy = one(render(chart, SHARDED), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    (peer,) = ingress["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    dns, probed = policy["egress"]
    # 5353 comes from the resolver 192.0.2.53:5353 in the fixture.
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == \
        {(53, "UDP"), (53, "TCP"), (5353, "UDP"), (5353, "TCP")}
    # 8443 and 8080 come from the endpoints' tls.port and http.port.
    assert {p["port"] for p in probed["ports"]} == {80, 443, 8080, 8443}
    assert all(p["protocol"] == "TCP" for p in probed["ports"])


# --------------------------------------------------------------------------
# Prometheus Operator objects
# --------------------------------------------------------------------------
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                          r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {"type": "object", "required": ["name", "namespace"],
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STR_MAP}}
_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "matchLabels": _STR_MAP,
    "matchExpressions": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "required": ["key", "operator"], "properties": {
            "key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
            "values": {"type": "array", "items": {"type": "string"}}}}}}}
_MATCHER = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
    "name": {"type": "string", "minLength": 1}, "value": {"type": "string"},
    "matchType": {"enum": ["=", "!=", "=~", "!~"]}}}


def _crd(api: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": _META,
                           "spec": spec}}


# The fields of the operator's CRDs (v0.6x+) that this chart writes; anything
# else is a typo the API server would reject or, worse, silently prune.
CRD_SCHEMAS = {
    "ServiceMonitor": _crd("monitoring.coreos.com/v1", "ServiceMonitor", {
        "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"], "properties": {
            "selector": _SELECTOR,
            "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "port": {"type": "string"}, "path": {"type": "string"}, "interval": _DURATION,
                    "scrapeTimeout": _DURATION, "honorLabels": {"type": "boolean"},
                    "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"}}}}}}),
    "PrometheusRule": _crd("monitoring.coreos.com/v1", "PrometheusRule", {
        "type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
            "groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "rules"], "properties": {
                    "name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                    "limit": {"type": "integer"}, "partial_response_strategy": {"type": "string"},
                    "rules": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False, "required": ["expr"],
                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                        "properties": {
                            "alert": {"type": "string"}, "record": {"type": "string"},
                            "expr": {"type": ["string", "integer"]}, "for": _DURATION,
                            "keep_firing_for": _DURATION, "labels": _STR_MAP,
                            "annotations": _STR_MAP}}}}}}}}),
    "AlertmanagerConfig": _crd("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig", {
        "type": "object", "additionalProperties": False, "properties": {
            "route": {"$ref": "#/$defs/route"},
            "receivers": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            "inhibitRules": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "sourceMatch": {"type": "array", "items": _MATCHER},
                    "targetMatch": {"type": "array", "items": _MATCHER},
                    "equal": {"type": "array", "items": {"type": "string"}}}}}}}),
}
CRD_SCHEMAS["AlertmanagerConfig"]["$defs"] = {"route": {
    "type": "object", "additionalProperties": False, "properties": {
        "receiver": {"type": "string"}, "groupBy": {"type": "array", "items": {"type": "string"}},
        "groupWait": _DURATION, "groupInterval": _DURATION, "repeatInterval": _DURATION,
        "matchers": {"type": "array", "items": _MATCHER}, "continue": {"type": "boolean"},
        "routes": {"type": "array", "items": {"$ref": "#/$defs/route"}}}}}


def test_operator_objects_are_structurally_valid(chart) -> None:
    docs = render(chart, SHARDED)
    for kind, schema in CRD_SCHEMAS.items():
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft202012Validator(schema).iter_errors(one(docs, kind))]
        assert errors == [], f"{kind}: {errors}"
    assert not [d for d in render(chart, "valid-minimal.yaml") if d["apiVersion"].startswith("monitoring.")]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        ok = ok and {"Exists": present, "DoesNotExist": not present,
                     "In": labels.get(expr["key"]) in expr.get("values", []),
                     "NotIn": labels.get(expr["key"]) not in expr.get("values", [])}[expr["operator"]]
    return ok


def test_service_monitor_scrapes_each_pod_once(chart) -> None:
    docs = render(chart, SHARDED)
    monitor = one(docs, "ServiceMonitor")["spec"]
    services = [s for s in docs if s["kind"] == "Service"]
    assert len(services) == 2  # the ClusterIP one and the StatefulSet's headless one
    picked = [s["metadata"]["name"] for s in services if _selects(monitor["selector"], s["metadata"]["labels"])]
    assert picked == ["prober"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"], endpoint["honorLabels"]) == ("30s", "20s", False)
    assert one(docs, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def _rules(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_prometheus_rule_is_files_alerts_yaml_with_overrides(chart) -> None:
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    original = {r["alert"]: r for g in source["groups"] for r in g["rules"] if "alert" in r}
    rules = _rules(render(chart, SHARDED, namespace="observability"))
    assert set(rules) == set(original) - {"ProberHTTPMissingHSTS"}  # switched off in the fixture
    for name, rule in rules.items():
        assert rule["expr"] == original[name]["expr"], f"{name}: the chart must not alter expressions"
        assert rule["labels"]["source"] == "prober"  # additionalAlertLabels
        assert rule["labels"]["namespace"] == "observability"  # for AlertmanagerConfig's namespace matcher
    warning = rules["ProberCertificateExpiryWarning"]
    assert warning["for"] == "2h"
    assert warning["labels"]["severity"] == "ticket" and warning["labels"]["channel"] == "certs"
    assert warning["annotations"]["dashboard"].startswith("https://")
    assert warning["annotations"]["summary"] == original["ProberCertificateExpiryWarning"]["annotations"]["summary"]
    assert rules["ProberAbsent"]["labels"]["owner_team"] == "sre"
    untouched = rules["ProberCertificateExpiryHigh"]
    assert untouched["for"] == original["ProberCertificateExpiryHigh"]["for"]
    assert untouched["labels"]["severity"] == original["ProberCertificateExpiryHigh"]["labels"]["severity"]


def test_without_alertmanager_config_rules_keep_their_own_labels(chart) -> None:
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    original = {r["alert"]: r for g in source["groups"] for r in g["rules"] if "alert" in r}
    rules = _rules(render(chart, "valid-minimal.yaml", prometheusRule={"enabled": True}))
    assert {n: r.get("labels") for n, r in rules.items()} == {n: r.get("labels") for n, r in original.items()}


def test_rendered_rules_pass_promtool(chart, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    _need(promtool is not None, "promtool (Debian package prometheus)")
    for name in ("valid-minimal.yaml", SHARDED):
        rule = one(render(chart, name, prometheusRule={"enabled": True}), "PrometheusRule")
        path = tmp_path / f"{name}.rules.yaml"
        path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
        done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


# --------------------------------------------------------------------------
# Alertmanager routing, checked by amtool on the config the operator would build
# --------------------------------------------------------------------------
def _matchers(items: list[dict[str, str]]) -> list[str]:
    return [f'{m["name"]}{m.get("matchType", "=")}{json.dumps(m["value"])}' for m in items]


def _am_route(route: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"receiver": route["receiver"], "matchers": _matchers(route.get("matchers", []))}
    for camel, snake in (("groupBy", "group_by"), ("groupWait", "group_wait"),
                         ("groupInterval", "group_interval"), ("repeatInterval", "repeat_interval")):
        if camel in route:
            out[snake] = route[camel]
    if route.get("routes"):
        out["routes"] = [_am_route(r) for r in route["routes"]]
    return out


def _alertmanager_yml(amc: dict[str, Any]) -> dict[str, Any]:
    """What the operator generates: the object's tree under a namespace="<ns>" route."""
    namespace = [f'namespace="{amc["metadata"]["namespace"]}"']
    spec = amc["spec"]
    top = _am_route(spec["route"])
    top["matchers"] = namespace + top["matchers"]
    return {
        "route": {"receiver": "unrouted", "routes": [top]},
        "receivers": [{"name": "unrouted"}] + [
            {"name": r["name"], "webhook_configs": [{"url": w["url"]} for w in r.get("webhookConfigs", [])]}
            for r in spec["receivers"]],
        "inhibit_rules": [{"source_matchers": namespace + _matchers(i["sourceMatch"]),
                           "target_matchers": namespace + _matchers(i["targetMatch"]),
                           "equal": i["equal"]} for i in spec.get("inhibitRules", [])],
    }


def test_alertmanager_routes_by_owner_team(chart, tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    _need(amtool is not None, "amtool (Debian package prometheus-alertmanager)")
    docs = render(chart, SHARDED, namespace="observability")
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(_alertmanager_yml(one(docs, "AlertmanagerConfig"))))
    check = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    def receiver(*labels: str) -> str:
        done = subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}", *labels],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    ns = "namespace=observability"
    # The rules that fire carry owner_team joined from the contract, and the namespace label the chart adds.
    rules = _rules(docs)
    assert rules["ProberAbsent"]["labels"]["namespace"] == "observability"
    assert receiver(ns, "alertname=ProberTLSHostnameMismatch", "owner_team=payments") == "payments-oncall"
    assert receiver(ns, "alertname=ProberAbsent", "owner_team=sre") == "platform-oncall"
    assert receiver(ns, "alertname=ProberTLSHostnameMismatch", "owner_team=unknown") == "platform-oncall"
    assert receiver(ns, "alertname=SomeoneElsesAlert", "owner_team=payments") == "unrouted"
    assert receiver("namespace=other", "alertname=ProberAbsent", "owner_team=payments") == "unrouted"


def test_inhibitions_are_those_of_the_vm_alertmanager_example(chart, tmp_path: Path) -> None:
    """Expiry tiers (by alert name) and outside-in layers, exactly as deploy/alertmanager/alertmanager.yml."""
    vm = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    ours = _alertmanager_yml(one(render(chart, SHARDED, namespace="observability"), "AlertmanagerConfig"))
    scope = 'namespace="observability"'

    def as_set(rules: list[dict[str, Any]]) -> set[tuple]:
        return {(tuple(sorted(set(r["source_matchers"]) - {scope})), tuple(sorted(set(r["target_matchers"]) - {scope})),
                 tuple(r["equal"])) for r in rules}

    assert as_set(ours["inhibit_rules"]) == as_set(vm["inhibit_rules"])
    # Read back: which expiry tier mutes which.
    tiers = ["Outage", "Incident", "Urgent", "High", "Warning"]
    muted = set()
    for rule in ours["inhibit_rules"]:
        (source,), (target,) = (set(rule[k]) - {scope} for k in ("source_matchers", "target_matchers"))
        name, _, pattern = re.fullmatch(r'(\w+)(=~?)"(.*)"', target).groups()
        muted |= {(source, t) for t in tiers if name == "alertname"
                  and re.fullmatch(pattern, f"ProberCertificateExpiry{t}")}
    assert muted == {(f'alertname="ProberCertificateExpiry{a}"', b) for i, a in enumerate(tiers) for b in tiers[i + 1:]}
    off = render(chart, SHARDED, alertmanagerConfig={**_fixture(SHARDED)["alertmanagerConfig"],
                                                      "inhibitExpiryTiers": False, "inhibitOutsideIn": False})
    assert "inhibitRules" not in one(off, "AlertmanagerConfig")["spec"]


# --------------------------------------------------------------------------
# Chart files
# --------------------------------------------------------------------------
def test_chart_reads_the_one_rules_file_and_keeps_no_copy() -> None:
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert 'fromYaml (.Files.Get "files/alerts.yaml")' in template
    copies = [p.relative_to(ROOT).as_posix() for p in (*CHART.rglob("*"), *(ROOT / "deploy").rglob("*"))
              if p.is_file() and p.name not in ("alerts.yaml", "grafana-dashboard.json")  # the dashboard reads it too
              and "prober_tls_earliest_expiry_timestamp_seconds" in p.read_text()]
    assert copies == []


# --------------------------------------------------------------------------
# The Grafana dashboard
# --------------------------------------------------------------------------
DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"


def _dashboards(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]


def test_the_dashboard_is_off_by_default(chart) -> None:
    for name in VALID:
        if name != "valid-grafana-dashboard.yaml":
            assert _dashboards(render(chart, name)) == [], name


def test_the_dashboard_configmap_is_for_the_grafana_sidecar(chart) -> None:
    docs = render(chart, "valid-grafana-dashboard.yaml")
    (cm,) = _dashboards(docs)
    meta = cm["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1" and meta["labels"]["app.kubernetes.io/instance"] == "prober"
    assert meta["namespace"] == "grafana" and meta["annotations"] == {"grafana_folder": "Probes"}
    assert list(cm["data"]) == ["prober-dashboard.json"]
    assert json.loads(cm["data"]["prober-dashboard.json"]) == json.loads(DASHBOARD_FILE.read_text())
    # The sidecar's label can be what another Grafana selects; the release's namespace by default.
    docs = render(chart, "valid-grafana-dashboard.yaml",
                  grafanaDashboard={"enabled": True, "labels": {"grafana_dashboard": "prober", "team": "sre"}})
    (cm,) = _dashboards(docs)
    assert cm["metadata"]["namespace"] == "monitoring" and "annotations" not in cm["metadata"]
    assert {k: cm["metadata"]["labels"][k] for k in ("grafana_dashboard", "team")} == {
        "grafana_dashboard": "prober", "team": "sre"}


def test_the_dashboard_values_are_checked(chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="grafanaDashboard"):
        _render_text(chart, {**_fixture("valid-minimal.yaml"), "grafanaDashboard": {"enable": True}})
    with pytest.raises(helm.HelmValuesError, match="grafanaDashboard"):
        _render_text(chart, {**_fixture("valid-minimal.yaml"), "grafanaDashboard": {"labels": {"grafana_dashboard": 1}}})


def test_the_chart_reads_the_one_dashboard_file() -> None:
    template = (CHART / "templates" / "grafana-dashboard.yaml").read_text()
    assert '.Files.Get "files/grafana-dashboard.json"' in template


def test_notes_tell_how_to_check_the_install(chart) -> None:
    values = _fixture(SHARDED)
    notes = _render_text(chart, values, release="eu")["prober/templates/NOTES.txt"]
    assert "port-forward" in notes and "/metrics" in notes and "/report?hostname=shop.example.com" in notes
    assert "statefulset/eu-prober" in notes


def test_every_value_is_documented_in_the_readme() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node: Any, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node and prefix not in ("probes.", "commonLabels.", "podLabels.",
                                                               "podAnnotations.", "resources.",
                                                               "podSecurityContext.", "securityContext.",
                                                               "networkPolicy.ingress.namespaceSelector.",
                                                               "networkPolicy.ingress.podSelector."):
            return [k for key, value in node.items() for k in leaves(value, f"{prefix}{key}.")]
        return [prefix.rstrip(".")]

    missing = [k for k in leaves(values) if f"`{k}`" not in readme]
    assert missing == [], f"values without a row in helm/prober/README.md: {missing}"
    assert "helm install" in readme


@pytest.mark.parametrize("workers, expected", [(2, 2), ("auto", None)])
def test_workers_reach_the_prober_flags(chart, workers: Any, expected: int | None) -> None:
    from prober.service.app import parse_workers
    pod = workload(render(chart, "valid-minimal.yaml", workers=workers))["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert args.workers == str(workers)
    assert parse_workers(args.workers) >= 1 and (expected is None or parse_workers(args.workers) == expected)
    default = workload(render(chart, "valid-minimal.yaml"))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--workers" not in default
