"""`prober discover` on real upstream manifests (../shared/k8s-examples), unmodified.

The manifests are read where they lie; what the tests add (status blocks, List output,
broken fields) is written to copies at test time.  Output is checked with the config
loader, the one `prober validate` uses, and a round trip probes the lab with it.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import idna
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.cli import main
from prober.config import normalize_hostname, parse_config
from prober.discover import normalize_discovered
from prober.lab.scenarios import SCENARIOS, Lab

REPO = Path(__file__).resolve().parents[1]


def _examples() -> Path | None:
    """shared/k8s-examples beside the repository (or beside a parent of a worktree)."""
    for parent in REPO.parents:
        candidate = parent / "shared" / "k8s-examples"
        if (candidate / "README.md").is_file():
            return candidate
    return None


EXAMPLES = _examples()


@pytest.fixture(scope="module")
def examples() -> Path:
    if EXAMPLES is None:
        message = f"the upstream manifests are missing: expected shared/k8s-examples beside {REPO}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return EXAMPLES


def upstream_sets() -> list[str]:
    if EXAMPLES is None:
        return ["<missing>"]
    return sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.glob("*/*/") if p.parent.name != "bad")


@pytest.fixture(scope="module")
def resolv_conf(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("resolv") / "resolv.conf"
    path.write_text("nameserver 127.0.0.1\n")
    return str(path)


def discover(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["discover", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def endpoints_of(text: str, resolv_conf: str) -> dict:
    """The printed probes.yaml through the config loader: every endpoint must pass it."""
    return parse_config(text, "discovered", resolv_conf=resolv_conf).by_hostname()


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def write_docs(path: Path, docs: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


# ------------------------------------------------------------------ every upstream set
@pytest.mark.parametrize("name", upstream_sets())
def test_every_upstream_set_gives_valid_contracts_or_says_why_not(examples, capsys, resolv_conf, name):
    code, out, err = discover(capsys, str(examples / name))
    assert "Traceback" not in err
    if code == 1:  # nothing concrete in the set: stdout empty, one line that counts what was read
        assert out == "" and err.count("\n") == 1 and "no endpoint found: read " in err
        return
    assert code == 0, err
    found = endpoints_of(out, resolv_conf)
    assert found
    for host in found:
        assert host == host.lower() and not host.endswith(".") and "*" not in host and host.isascii()


def test_the_documented_one_liner(examples, tmp_path, resolv_conf):
    """kubectl get ingress,gateway,httproute,...,certificate -A -o yaml | prober discover -"""
    items = []
    for name in ("gateway-api/http-routing", "cert-manager/ingress-usage", "external-dns/aws",
                 "aws-load-balancer-controller/examples", "ingress-nginx/examples"):
        for path in sorted((examples / name).glob("*.yaml")):
            items += [d for d in load_docs(path) if d.get("kind") in
                      ("Ingress", "Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute", "Service", "Certificate")]
    stream = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                             "items": items})
    run = subprocess.run([sys.executable, "-m", "prober", "discover", "-"], input=stream, capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert run.returncode == 0, run.stderr
    found = endpoints_of(run.stdout, resolv_conf)
    assert {"foo.example.com", "bar.example.com", "server.example.com", "grpcserver.example.com",
            "nginx.example.com"} <= set(found)
    assert "__ingress_host__" not in run.stdout.lower() and "<" not in run.stdout
    assert "skipped '__INGRESS_HOST__'" in run.stderr
    assert "Traceback" not in run.stderr
    path = tmp_path / "probes.yaml"
    path.write_text(run.stdout)
    assert main(["validate", str(path)]) == 0


# ------------------------------------------------------------------ the mapping, on real files
def test_alb_scheme_annotation_and_its_documented_default(examples, capsys, resolv_conf):
    _, out, _ = discover(capsys, str(examples / "aws-load-balancer-controller/examples"))
    found = endpoints_of(out, resolv_conf)
    grpc, game = found["grpcserver.example.com"], found["2048.example.com"]
    assert (grpc.visibility, grpc.ingress_controller, grpc.tls_termination) == ("public", "alb", "aws-alb")
    assert game.visibility == "private"  # no scheme annotation: the controller's default is internal


def test_conflicting_objects_leave_the_key_out_and_say_so(examples, capsys, resolv_conf):
    code, out, err = discover(capsys, str(examples / "agic/public-private"))
    assert code == 0
    found = endpoints_of(out, resolv_conf)
    assert found["example.com"].visibility is None
    assert found["example.com"].ingress_controller == "azure-application-gateway"
    assert ("conflict example.com visibility: public from Ingress/default/ing-public; "
            "private from Ingress/default/ing1-private") in err


def test_gateway_target_and_listener_intersection(examples, capsys, resolv_conf):
    """ExternalDNS's target on the Gateway is what DNS should answer for its routes' names."""
    code, out, err = discover(capsys, str(examples / "external-dns/gateway-api-source"))
    found = endpoints_of(out, resolv_conf)
    api = found["api.example.com"]  # the route's name, narrowed by the listener's *.example.com
    assert api.dns.expect_addresses == ("203.0.113.1",) and api.ingress_controller == "cilium"
    assert api.tls_termination == "cilium"
    assert "wildcard *.example.com (Gateway/default/my-gateway)" in err and "*.example.com" not in out
    # aws-gateway has no listeners: its route attaches nowhere
    assert "app.example.com" not in found and "skipped 'app.example.com'" in err


def test_cross_namespace_routes_through_a_selector(examples, capsys, resolv_conf):
    _, out, _ = discover(capsys, str(examples / "gateway-api/cross-namespace-routing"))
    assert "HTTPRoute/store-ns/store" in out and "HTTPRoute/site-ns/home" in out
    assert endpoints_of(out, resolv_conf)["foo.example.com"].ingress_controller == "shared-gateway-class"


def test_unresolved_parent_ref_sets_no_controller(examples, capsys, resolv_conf):
    _, out, _ = discover(capsys, str(examples / "gateway-api/http-routing/foo-httproute.yaml"))
    found = endpoints_of(out, resolv_conf)
    assert found["foo.example.com"].ingress_controller is None
    _, out, _ = discover(capsys, str(examples / "gateway-api/http-routing"))
    assert endpoints_of(out, resolv_conf)["foo.example.com"].ingress_controller == "example-gateway-class"


def test_cert_manager_only_for_https_terminate_listeners(examples, capsys, resolv_conf):
    _, out, _ = discover(capsys, str(examples / "cert-manager/gateway-usage-a"))
    found = endpoints_of(out, resolv_conf)
    assert found["bar.example.com"].certificate_source == "cert-manager"
    assert found["example.com"].certificate_source is None  # HTTP, and HTTPS Passthrough
    assert found["foo.example.com"].certificate_source is None  # a Secret in another namespace


def test_cert_manager_annotation_covers_the_tls_hosts(examples, capsys, resolv_conf):
    _, out, _ = discover(capsys, str(examples / "cert-manager/ingress-usage"))
    assert {e.certificate_source for e in endpoints_of(out, resolv_conf).values()} == {"cert-manager"}


def test_external_dns_prefix_of_2026(examples, capsys, resolv_conf):
    code, out, err = discover(capsys, str(examples / "external-dns/ga-prefix-service"))
    assert code == 0, err
    assert set(endpoints_of(out, resolv_conf)) == {"nginx.example.com"}  # the Service's new-prefix annotation
    code, out, err = discover(capsys, str(examples / "external-dns/ga-prefix-alb"))
    assert code == 0 and endpoints_of(out, resolv_conf)


def test_nlb_service_terminating_tls_and_the_controller_default(examples, tmp_path, capsys, resolv_conf):
    service = load_docs(examples / "aws-load-balancer-controller/examples/nlb_tls_termination.md.block00.yaml")[0]
    assert main(["discover", str(examples / "aws-load-balancer-controller/examples/nlb_tls_termination.md.block00.yaml")]) == 1
    capsys.readouterr()  # no hostname annotation: not an endpoint
    service["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] = "myapp.example.com,api.example.com"
    default = copy.deepcopy(service)
    default["metadata"]["name"] = "defaulted"
    del default["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"]
    default["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] = "nlb.example.com"
    _, out, _ = discover(capsys, str(write_docs(tmp_path / "svc.yaml", [service, default])))
    found = endpoints_of(out, resolv_conf)
    for host in ("myapp.example.com", "api.example.com"):
        assert (found[host].visibility, found[host].certificate_source, found[host].tls_termination) == \
            ("public", "acm", "aws-nlb")
    assert found["nlb.example.com"].visibility == "private"  # the controller's documented default


def test_placeholders_and_wildcards_are_reported_never_output(examples, capsys):
    code, out, err = discover(capsys, str(examples / "kubernetes-website/networking"))
    assert code == 0 and "*.foo.com" not in out
    assert "wildcard *.foo.com (Ingress/default/ingress-wildcard-host)" in err
    code, out, err = discover(capsys, str(examples / "aws-load-balancer-controller/examples"))
    assert "skipped '<FQDN>'" in err and "FQDN" not in out.upper()


def test_status_blocks_and_owner_label_on_copies(examples, tmp_path, capsys, resolv_conf):
    ingress = json.loads((examples / "aws-load-balancer-controller/json-file/ingress_basic.json").read_text())
    ingress["metadata"]["labels"] = {"squad": "payments"}
    ingress["status"] = {"loadBalancer": {"ingress": [
        {"hostname": "k8s-default-jsoningr-0123456789.us-east-1.elb.amazonaws.com"}]}}
    service = copy.deepcopy(load_docs(examples / "external-dns/public-private/aws-public-private-route53.md.block03.yaml")[0])
    service["metadata"]["annotations"]["external-dns.kubernetes.io/hostname"] = "Internal.Example.COM."
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.12"}]}}
    path = write_docs(tmp_path / "objects.yaml", [ingress, service])
    _, out, _ = discover(capsys, str(path), "--owner-label", "squad")
    found = endpoints_of(out, resolv_conf)
    app = found["app.example.com"]
    assert app.dns.expect_cname == "k8s-default-jsoningr-0123456789.us-east-1.elb.amazonaws.com"
    assert (app.visibility, app.owner_team) == ("public", "payments")
    internal = found["internal.example.com"]  # lower-cased, trailing dot gone
    assert internal.visibility == "private"  # the legacy aws-load-balancer-internal: 0.0.0.0/0
    assert internal.dns.expect_addresses == ("10.0.0.12",)


def test_external_dns_target_overrides_the_status(examples, tmp_path, capsys, resolv_conf):
    docs = load_docs(examples / "external-dns/annotations/annotations.md.block03.yaml")
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    _, out, _ = discover(capsys, str(write_docs(tmp_path / "a.yaml", [ingress])))
    assert endpoints_of(out, resolv_conf)["cool-service.example.com"].dns.expect_cname == \
        "k8s-alb-c4aa37c880-740590208.us-east-1.elb.amazonaws.com"
    ingress["metadata"]["annotations"] = {"external-dns.alpha.kubernetes.io/target": "198.51.100.7"}
    _, out, _ = discover(capsys, str(write_docs(tmp_path / "b.yaml", [ingress])))
    cool = endpoints_of(out, resolv_conf)["cool-service.example.com"]
    assert cool.dns.expect_addresses == ("198.51.100.7",) and cool.dns.expect_cname is None


def test_kubectl_json_list_through_stdin_with_idna(examples, monkeypatch, capsys, resolv_conf):
    ingress = json.loads((examples / "aws-load-balancer-controller/json-file/ingress_basic.json").read_text())
    unicode_host = copy.deepcopy(ingress)
    unicode_host["metadata"]["name"] = "books"
    unicode_host["spec"]["rules"][0]["host"] = "Bücher.Example."
    listing = {"apiVersion": "v1", "kind": "List", "items": [ingress, unicode_host, ingress]}

    class Stdin:
        buffer = __import__("io").BytesIO(json.dumps(listing).encode())

    monkeypatch.setattr(sys, "stdin", Stdin)
    code, out, err = discover(capsys, "-", "--class-visibility", "alb=private")
    assert code == 0, err
    found = endpoints_of(out, resolv_conf)
    assert set(found) == {"app.example.com", "xn--bcher-kva.example"}  # de-duplicated, IDNA (UTS #46)
    assert found["app.example.com"].visibility == "public"  # the annotation decides before the class


def test_class_visibility_decides_a_gateway(examples, capsys, resolv_conf):
    _, out, _ = discover(capsys, str(examples / "gateway-api/http-routing"),
                         "--class-visibility", "example-gateway-class=public")
    assert endpoints_of(out, resolv_conf)["foo.example.com"].visibility == "public"
    code, _, err = discover(capsys, str(examples / "gateway-api/http-routing"), "--class-visibility", "x=open")
    assert code == 3 and err.count("\n") == 1


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name, document", [("malformed.yaml", 1), ("malformed-unclosed-bracket.yaml", 1),
                                            ("malformed-agic-ing-guestbook-other.yaml", 1)])
def test_malformed_upstream_files_fail_with_one_line(examples, capsys, name, document):
    code, out, err = discover(capsys, str(examples / "bad" / name))
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and f"bad/{name}: document {document}: YAML syntax error" in err


def test_a_malformed_file_inside_a_directory_fails_the_run(examples, capsys):
    code, out, err = discover(capsys, str(examples / "bad"))
    assert code == 3 and out == "" and err.count("\n") == 1 and "document" in err


def test_non_kubernetes_yaml_is_counted_and_nothing_found(examples, capsys):
    code, out, err = discover(capsys, str(examples / "bad/not-kubernetes.yaml"))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "read 0 objects from 1 source" in err and "ignored 1 non-Kubernetes document" in err


def test_a_known_kind_of_the_wrong_shape_names_its_document(examples, tmp_path, capsys):
    docs = load_docs(examples / "kubernetes-website/networking/name-virtual-host-ingress.yaml")
    broken = copy.deepcopy(docs[0])
    broken["spec"]["rules"] = "foo.bar.com"
    path = write_docs(tmp_path / "two.yaml", [docs[0], broken])
    code, out, err = discover(capsys, str(path))
    assert code == 3 and out == "" and err.count("\n") == 1
    assert f"{path}: document 2: Ingress/default/name-virtual-host-ingress: spec.rules must be a list" in err
    code, _, err = discover(capsys, str(tmp_path / "absent"))
    assert code == 3 and "no such file or directory" in err


# ------------------------------------------------------------------ coverage
def contracts(tmp_path: Path, *entries: dict) -> str:
    path = tmp_path / "probes.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"resolvers": ["127.0.0.1"]}, "endpoints": list(entries)}))
    return str(path)


def coverage(capsys, *argv: str) -> tuple[int, dict]:
    code, out, _ = discover(capsys, *argv, "--json")
    return code, json.loads(out)


def test_coverage_finds_an_unmonitored_ingress_host(examples, tmp_path, capsys):
    probes = contracts(tmp_path, {"hostname": "foo.bar.com"})
    code, report = coverage(capsys, str(examples / "kubernetes-website/networking/name-virtual-host-ingress.yaml"),
                            "--coverage", probes)
    assert code == 1
    assert report["unmonitored"] == [{"hostname": "bar.foo.com",
                                      "sources": ["Ingress/default/name-virtual-host-ingress"]}]
    assert report["stale"] == [] and report["mismatches"] == []


def test_coverage_finds_a_stale_contract(examples, tmp_path, capsys):
    probes = contracts(tmp_path, {"hostname": "foo.bar.com"}, {"hostname": "bar.foo.com"},
                       {"hostname": "old-shop.bar.com"})
    code, report = coverage(capsys, str(examples / "kubernetes-website/networking/name-virtual-host-ingress.yaml"),
                            "--coverage", probes)
    assert code == 1 and report["stale"] == [{"hostname": "old-shop.bar.com"}] and report["unmonitored"] == []


def test_coverage_finds_an_internal_scheme_mismatch(examples, tmp_path, capsys):
    hosts = ["internal.website.com"]
    probes = contracts(tmp_path, *({"hostname": h, "visibility": "public", "owner_team": "rails",
                                    "certificate_source": "acm"} for h in hosts))
    code, report = coverage(capsys, str(examples / "aws-load-balancer-controller/rails-api-2019/ingress-internal.yaml"),
                            "--coverage", probes)
    assert code == 1
    assert [(m["hostname"], m["key"], m["contract"], m["cluster"]) for m in report["mismatches"]] == \
        [(h, "visibility", "public", "private") for h in sorted(hosts)]
    assert all(m["sources"] == ["Ingress/some-namespace/ingress-internal"] for m in report["mismatches"])
    assert report["wildcards"] == [{"hostname": "*.website.com", "sources": ["Ingress/some-namespace/ingress-internal"]}]


def test_coverage_expect_cname_against_the_status(examples, tmp_path, capsys):
    docs = load_docs(examples / "external-dns/annotations/annotations.md.block03.yaml")
    path = write_docs(tmp_path / "gloo.yaml", docs)
    probes = contracts(tmp_path, {"hostname": "cool-service.example.com",
                                  "dns": {"expect_cname": "old-alb.us-east-1.elb.amazonaws.com"}})
    code, report = coverage(capsys, str(path), "--coverage", probes)
    assert code == 1 and report["mismatches"] == [{
        "hostname": "cool-service.example.com", "key": "dns.expect_cname",
        "contract": "old-alb.us-east-1.elb.amazonaws.com",
        "cluster": "k8s-alb-c4aa37c880-740590208.us-east-1.elb.amazonaws.com",
        "sources": ["Ingress/gloo-system/gateway-proxy"]}]


def test_discovered_contracts_cover_their_own_cluster(examples, tmp_path, capsys):
    source = str(examples / "aws-load-balancer-controller/examples")
    _, out, _ = discover(capsys, source)
    path = tmp_path / "probes.yaml"
    path.write_text(out)
    code, out, _ = discover(capsys, source, "--coverage", str(path))
    assert code == 0 and out.splitlines()[-1].startswith("coverage complete: 0 unmonitored, 0 stale, 0 mismatches")


def test_coverage_text_and_a_bad_contract_file(examples, tmp_path, capsys):
    probes = contracts(tmp_path, {"hostname": "gone.example.com", "visibility": "private"})
    code, out, _ = discover(capsys, str(examples / "kubernetes-website/networking/ingress-wildcard-host.yaml"),
                            "--coverage", probes)
    assert code == 1
    assert "UNMONITORED foo.bar.com" in out and "STALE       gone.example.com" in out
    assert "WILDCARD    *.foo.com" in out and out.splitlines()[-1].startswith("coverage incomplete")
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: [{hostname: a.example.com, visiblity: public}]\n")
    code, out, err = discover(capsys, str(examples / "bad/not-kubernetes.yaml"), "--coverage", str(bad))
    assert code == 3 and out == "" and err.count("\n") == 1 and "visiblity" in err


# ------------------------------------------------------------------ round trip against the lab
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    wanted = tuple(s for s in SCENARIOS if s.name in ("healthy", "unexpected-address"))
    with Lab(wanted, workdir=str(tmp_path_factory.mktemp("lab")), timeout=3.0) as lab:
        yield lab


def test_round_trip_discovered_contracts_probe_the_lab(lab, tmp_path, capsys):
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "shop", "namespace": "web", "labels": {"team": "lab-team"},
                            "annotations": {"alb.ingress.kubernetes.io/healthcheck-path": "/healthz"}},
               "spec": {"ingressClassName": "nginx",
                        "rules": [{"host": f"{n}.lab.test"} for n in ("healthy", "unexpected-address")]},
               "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}}
    manifests = write_docs(tmp_path / "shop.yaml", [ingress])
    code, out, _ = discover(capsys, str(manifests))
    assert code == 0
    probes = tmp_path / "probes.yaml"
    probes.write_text(out)
    assert main(["validate", str(probes)]) == 0
    results = {}
    for name in ("healthy", "unexpected-address"):
        tls_port, http_port = lab.ports[name]
        code = main(["check", f"{name}.lab.test", "--config", str(probes), "--json",
                     "--resolver", f"internal=127.0.0.1:{lab.resolvers['internal'].port}",
                     "--authoritative", f"127.0.0.1:{lab.resolvers['authoritative'].port}",
                     "--ca-file", lab.bundle, "--connect-to", "127.0.0.1",
                     "--https-port", str(tls_port), "--http-port", str(http_port), "--timeout", "3"])
        results[name] = code, json.loads(capsys.readouterr().out)
    code, doc = results["healthy"]
    assert code == 0 and doc["status"] == "ok", doc["verdict"]
    assert doc["http"]["health"]["url"].endswith("/healthz")
    code, doc = results["unexpected-address"]  # DNS answers 127.0.0.9, the Ingress status says 127.0.0.1
    assert code == 2 and {f["code"] for f in doc["findings"]} == {"dns.unexpected_address"}


def test_the_upstream_sets_give_over_a_hundred_endpoints(examples, resolv_conf, capsys):
    total = 0
    for name in upstream_sets():
        code, out, _ = discover(capsys, str(examples / name))
        if code == 0:
            total += len(endpoints_of(out, resolv_conf))  # a ConfigError here fails the test
    assert total > 100


def test_hostile_input_is_one_line_and_exit_3(tmp_path, capsys):
    laughs = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: lol}\n"
                    + "\n".join(laughs) + "\nspec:\n  dnsNames: [*a8]\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"kind: Ingress\napiVersion: v1\nmetadata: {name: caf\xe9}\n")
    for path, says in ((bomb, "document 1: Certificate/default/lol: spec.dnsNames[] must be text"),
                       (deep, "document 1: JSON is nested too deeply"),
                       (binary, "line 3: is not UTF-8 text")):
        code, out, err = discover(capsys, str(path))
        assert code == 3 and out == "" and err.count("\n") == 1 and says in err, err
    sneaky = write_docs(tmp_path / "sneaky.yaml", [{"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                                                    "metadata": {"name": "x\n  - hostname: evil.example"},
                                                    "spec": {"dnsNames": ["a.example.com"]}}])
    code, out, err = discover(capsys, str(sneaky))
    assert code == 3 and out == "" and "must be printable on one line" in err
    code, _, err = discover(capsys, str(bomb), "--json")
    assert code == 3 and "--json goes with --coverage" in err


def test_a_wildcard_certificate_covers_one_label(examples, capsys, resolv_conf):
    code, out, err = discover(capsys, str(examples / "external-dns/annotations/annotations.md.block02.yaml"),
                              str(examples / "cert-manager/dns-validation/dns-validation.md.block01.yaml"))
    assert code == 0, err
    found = endpoints_of(out, resolv_conf)
    assert found["www.example.com"].certificate_source == "cert-manager"  # via *.example.com
    assert "Certificate/default/example-com, Ingress/default/my-ingress" in out
    assert set(found) == {"www.example.com", "example.com", "example.org"}
    assert "wildcard *.example.com (Certificate/default/example-com)" in err


def test_ingress_class_objects_name_the_controller_and_its_params(examples, tmp_path, capsys, resolv_conf):
    vanilla = load_docs(examples / "aws-load-balancer-controller/ingress2gateway-input/vanilla_ingress.yaml")
    full = load_docs(examples / "aws-load-balancer-controller/ingress2gateway-input/full_resources.yaml")
    for doc in vanilla + full:
        if doc["kind"] == "Ingress":
            doc["metadata"]["annotations"]["alb.ingress.kubernetes.io/scheme"] = "internal"
    _, out, _ = discover(capsys, str(write_docs(tmp_path / "i.yaml", vanilla + full)))
    found = endpoints_of(out, resolv_conf)
    app = found["app.example.com"]  # class vanilla-class, controller ingress.k8s.aws/alb
    assert (app.ingress_controller, app.tls_termination, app.visibility) == ("vanilla-class", "aws-alb", "private")
    assert found["2048.example.com"].visibility == "public"  # IngressClassParams scheme: internet-facing wins


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="aZ09-.xü*ß_", min_size=1, max_size=20))
def test_the_plain_name_shortcut_agrees_with_idna(text):
    """ASCII names skip the idna codec; the result must be what UTS #46 gives."""
    wildcard = text.startswith("*.")
    try:
        want = normalize_hostname(idna.encode(text[2:] if wildcard else text, uts46=True,
                                              transitional=False).decode("ascii"))
        want = "*." + want if wildcard else want
    except (idna.IDNAError, UnicodeError, ValueError):
        want = None
    try:
        got = normalize_discovered(text)[0]
    except ValueError:
        got = None
    assert got == want


def test_gateway_infrastructure_annotations_decide_visibility(examples, tmp_path, capsys, resolv_conf):
    docs = [d for p in sorted((examples / "gateway-api/http-routing").glob("*.yaml")) for d in load_docs(p)]
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    gateway["spec"]["infrastructure"] = {"annotations": {
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}}
    _, out, _ = discover(capsys, str(write_docs(tmp_path / "gw.yaml", docs)),
                         "--class-visibility", "example-gateway-class=public")
    found = endpoints_of(out, resolv_conf)
    assert {e.visibility for e in found.values()} == {"private"}  # the annotation before the class mapping


def test_no_path_and_a_terminal_on_stdin_says_what_to_give(tmp_path):
    import pty
    leader, follower = pty.openpty()
    try:
        run = subprocess.run([sys.executable, "-m", "prober", "discover"], stdin=follower, capture_output=True,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert run.returncode == 3 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "kubectl get ... -o yaml | prober discover -" in run.stderr
