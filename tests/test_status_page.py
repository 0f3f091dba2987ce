"""The status page of `prober serve`, over HTTP and in a real browser.

A `prober serve` subprocess probes the demo lab (and, in a second service, a
hostile lab server whose certificate, headers and body carry markup).  The
HTTP tests check what any client sees: the pages, the filters, HEAD on every
GET path, the headers and the refusals.  The browser tests drive Debian's
chromium with Playwright: the page renders with no console error and no
request beyond loopback, its links lead to each endpoint's page, and no
markup from a probed server ever runs.  Without chromium or Playwright the
browser tests skip, and fail under CI=true.
"""
from __future__ import annotations

import http.client
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from test_service import Serve
from waiting import wait_for

from prober.lab.pki import CA
from prober.lab.scenarios import DEMO, LOOPBACK, SCENARIOS, Lab
from prober.lab.webserver import PlainHttpServer, TlsHttpServer
from prober.model import Endpoint
from prober.service.page import CSP, NO_TEAM, Filters, Row, index, refresh_seconds

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEMO_HOSTS = sorted(f"{name}.lab.test" for name in DEMO)
XSS_HOST = "xss.lab.test"
TOKEN = "page-secret-7f3a"  # sent to every demo health path; never shown
# Each payload would set window.__pwned (or open a dialog) if it ever ran.
# Short enough for a certificate's CN (64 characters at most).
SCRIPT = "<script>window.__pwned='s';alert(1)</script>"
ONERROR = "<img src=x onerror=\"window.__pwned='o';alert(2)\">"
GET_PATHS = ("/", "/?status=critical", "/endpoint?hostname=healthy.lab.test", "/metrics",
             "/report?hostname=healthy.lab.test", "/report?hostname=healthy.lab.test&format=text",
             "/probe?hostname=healthy.lab.test", "/-/healthy", "/-/ready")


@dataclass
class Site:
    serve: Serve
    lab: Lab
    hosts: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.serve.host}:{self.serve.port}"

    def get(self, target: str) -> tuple[int, str, dict[str, str]]:
        return self.serve.request("GET", target)

    def complete(self) -> bool:
        """Every endpoint has a report: the index shows no pending row."""
        status, body, _ = self.get("/")
        return status == 200 and all(h in body for h in self.hosts) and "not probed yet" not in body


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    scenarios = tuple(s for s in SCENARIOS if s.name in DEMO)
    with Lab(scenarios, workdir=str(tmp_path_factory.mktemp("status-lab")), timeout=2.0, interval=2.0) as started:
        yield started


@pytest.fixture(scope="module")
def demo(lab: Lab) -> Iterator[Site]:
    """`prober serve` over the demo lab, one team per half of the endpoints."""
    config = lab.config()
    for i, entry in enumerate(config["endpoints"]):
        entry["owner_team"] = "payments" if i % 2 else "storefront"
        entry["http"]["headers"] = {"Authorization": f"Bearer {TOKEN}"}
    teams = {e["hostname"]: e["owner_team"] for e in config["endpoints"]}
    yield from _served(lab, "demo", config, DEMO_HOSTS, {"teams": teams})


def _served(lab: Lab, name: str, config: dict[str, Any], hosts: list[str],
            extra: dict[str, Any] | None = None) -> Iterator[Site]:
    """`prober serve` on CONFIG, once every endpoint has a report; stopped cleanly afterwards."""
    path = lab.dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    serve = Serve(path)
    site = Site(serve, lab, hosts, extra or {})
    try:
        serve.wait_ready()
        wait_for(f"a report of every {name} endpoint", site.complete, 20, 0.2)
        yield site
    finally:
        assert serve.stop() == 0


@pytest.fixture(scope="module")
def hostile(lab: Lab) -> Iterator[Site]:
    """A lab server whose certificate names, Server header, body and Location carry markup."""
    root = CA.root(f"root {SCRIPT}")
    issued = root.intermediate(f"inter {ONERROR}").issue([f"{ONERROR}.other.test"], cn=f"{SCRIPT} leaf")
    certfile, keyfile = issued.write(lab.dir, "xss")
    tls = TlsHttpServer(certfile, keyfile, LOOPBACK, 0, server_header=SCRIPT, headers={"via": ONERROR})
    tls.route("/healthz", 500, f"{SCRIPT}{ONERROR}".encode())
    tls = lab.loop.start(tls)
    plain = PlainHttpServer(LOOPBACK, 0, https_port=tls.port)
    plain.route("/", 301, b"", headers={"location": f"https://{XSS_HOST}/\"><script>alert(1)</script>"})
    plain = lab.loop.start(plain)
    for server in lab.resolvers.values():
        server.set(XSS_HOST, "A", [LOOPBACK])
    config = {"defaults": {**lab.defaults(), "ca_file": root.write_bundle(lab.dir / "xss-root.pem")},
              "endpoints": [{"hostname": XSS_HOST, "owner_team": f"team {ONERROR}",
                             "tls": {"port": tls.port},
                             "http": {"port": plain.port, "health_path": "/healthz", "expect_body": "^ok$"}}]}
    yield from _served(lab, "xss", config, [XSS_HOST])


def _raw(site: Site, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(site.serve.host, site.serve.port, timeout=30)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ the renderer alone
def test_endpoints_not_probed_yet_are_listed_as_pending() -> None:
    rows = [Row(Endpoint("b.example.test", interval=30.0), None),
            Row(Endpoint("a.example.test", owner_team="web", interval=120.0), None)]
    body = index(rows, Filters(), refresh_seconds(r.endpoint for r in rows))
    assert body.count('<span class="b pending">PENDING</span>') == 2
    assert '<span class="b pending">2</span> pending</a>' in body
    assert "not probed yet" in body and '<meta http-equiv="refresh" content="30">' in body
    none = index(rows, Filters(team=NO_TEAM), 30)
    assert "b.example.test" in none and "a.example.test" not in none
    assert "No endpoint matches" in index(rows, Filters(status="critical"), 30)


# ------------------------------------------------------------------ over HTTP
def test_index_lists_every_endpoint_with_status_verdict_and_layers(demo: Site) -> None:
    status, body, headers = demo.get("/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    for host in DEMO_HOSTS:
        row = re.search(rf'<tr><td><span class="b (\w+)">\w+</span></td><td><a href="/endpoint\?hostname='
                        rf'{re.escape(host)}">{re.escape(host)}</a></td><td[^>]*>([^<]*)</td>(.*?)</tr>', body)
        assert row, host
        assert row[2] == demo.extra["teams"][host]
        assert re.findall(r'class="b \w+ l">(\w+)<', row[3]) == ["DNS", "TLS", "HTTP"]
    assert re.search(r'<span class="b critical">CRITICAL</span></td><td><a[^>]*>expired\.lab\.test', body)
    assert re.search(r'<span class="b ok">OK</span></td><td><a[^>]*>healthy\.lab\.test', body)
    assert "has expired" in body and '<meta http-equiv="refresh" content="5">' in body
    assert "<title>6 critical, 2 warning, 1 ok · prober</title>" in body  # what a browser tab shows


def test_filters_by_status_and_owner_team_without_javascript(demo: Site) -> None:
    def listed(query: str) -> set[str]:
        status, body, _ = demo.get("/?" + query)
        assert status == 200, body
        return set(re.findall(r'<a href="/endpoint\?hostname=([^"]+)">', body))

    critical = listed("status=critical")
    assert "expired.lab.test" in critical and "healthy.lab.test" not in critical
    assert listed("status=ok") == {"healthy.lab.test"}
    payments = {h for h, t in demo.extra["teams"].items() if t == "payments"}
    assert listed("team=payments") == payments
    assert listed("status=critical&team=payments") == payments & critical
    assert listed("status=&team=") == set(DEMO_HOSTS)  # the form's "every ..." choice
    assert listed("team=nobody") == set()
    for bad in ("status=broken", "colour=red", "status=ok&status=critical", "status=%ff"):
        status, body, _ = demo.get("/?" + bad)
        assert status == 400 and body.count("\n") == 1, (bad, body)


def test_endpoint_page_has_the_facts_of_the_text_report(demo: Site) -> None:
    status, body, _ = demo.get("/endpoint?hostname=STALE-DNS.lab.test.")
    assert status == 200
    for fact in ("lab-internal", "lab-public", "(authoritative)", "STALE", "127.0.0.3",  # resolvers
                 "dns.stale_resolver", "tls.connect_failed", "connection refused"):
        assert fact in body, fact
    status, body, _ = demo.get("/endpoint?hostname=health-503.lab.test")
    _, text, _ = demo.get("/report?hostname=health-503.lab.test&format=text")
    hint = re.search(r"^  next: +(.+)$", text, re.M)[1]
    assert f"<code>{_html(hint)}</code>" in body
    for fact in ("CN=health-503.lab.test,O=prober lab", "CN=prober lab intermediate,O=prober lab",
                 "redirect <span", "health <span", "answered by</td>", "AWS ALB (no healthy targets)",
                 "awselb/2.0", "&lt;html&gt;503 Service Temporarily Unavailable&lt;/html&gt;",
                 "http.health_failed", "max-age=31536000"):
        assert fact in body, fact


@pytest.mark.parametrize("host", DEMO_HOSTS)
def test_endpoint_page_shows_every_fact_of_the_report(demo: Site, host: str) -> None:
    """Cross-checked against the JSON of the same report: nothing the text report says is missing."""
    for _ in range(5):  # the page and the JSON must describe the same probe: retry across a new one
        _, doc, _ = demo.get(f"/report?hostname={host}")
        _, body, _ = demo.get(f"/endpoint?hostname={host}")
        report = json.loads(doc)
        if f"in {report['duration_seconds']:.2f} s" in body:
            break
    facts = [report["verdict"]["message"], report["verdict"]["hint"]]
    facts += [v for f in report["findings"] for v in (f["code"], f["message"], f["hint"]) if v]
    for answer in report["dns"]["resolvers"] + report["dns"]["authoritative"]:
        facts += [answer["resolver"], answer["server"], answer["rcode"], *answer["answers"]]
    for target in report["tls"]["targets"]:
        facts += [target["error"]] if target["error"] else [target["version"], target["cipher"]]
        facts += [v for c in target["chain"] for v in (c["subject"], c["issuer"], c["serial"], *c["sans"])]
    for exchange in [report["http"]["redirect"], *report["http"]["health_by_address"]]:
        if exchange:
            facts += [exchange["url"], str(exchange["status"] or exchange["error"])]
            facts += [exchange["location"]] if exchange["location"] else []
    facts += [report["http"]["hsts"] or "absent"]
    missing = [f for f in facts if f and _html(f) not in body]
    assert missing == []
    server = demo.lab.tls.get(host.split(".")[0])
    if server is not None and report["http"]["health_by_address"]:  # the token was sent, and is not shown
        assert any(("authorization", f"Bearer {TOKEN}") in seen.headers for seen in server.requests)
    assert TOKEN not in body


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") \
        .replace("'", "&#x27;")


def test_report_as_text_is_the_check_text(demo: Site) -> None:
    status, text, headers = demo.get("/report?hostname=wrong-host.lab.test&format=text")
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "wrong-host.lab.test" in text.splitlines()[0] and "CRITICAL" in text.splitlines()[0]
    assert "tls.hostname_mismatch" in text and "[dns ]" in text and "[http]" in text
    status, body, headers = demo.get("/report?hostname=wrong-host.lab.test&format=json")
    assert status == 200 and headers["Content-Type"] == "application/json" and '"status": "critical"' in body
    assert demo.get("/report?hostname=wrong-host.lab.test&format=yaml")[0] == 400


@pytest.mark.parametrize("path", GET_PATHS)
def test_head_answers_like_get_without_a_body(demo: Site, path: str) -> None:
    got_status, got_headers, got_body = _raw(demo, "GET", path)
    head_status, head_headers, head_body = _raw(demo, "HEAD", path)
    assert got_status == head_status == 200
    assert head_body == b""
    assert head_headers["Content-Type"] == got_headers["Content-Type"]
    # The length GET would send: equal for a fixed answer, non-zero where probes change the content.
    assert int(head_headers["Content-Length"]) == len(got_body) if path.startswith("/-/") else \
        int(head_headers["Content-Length"]) > 0
    assert head_headers["Content-Security-Policy"] == got_headers["Content-Security-Policy"]


def test_head_on_a_post_path_and_unknown_paths(demo: Site) -> None:
    status, headers, body = _raw(demo, "HEAD", "/-/reload")
    assert status == 405 and headers["Allow"] == "POST" and body == b""
    status, headers, _ = _raw(demo, "POST", "/")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert _raw(demo, "HEAD", "/nope")[0] == 404


def test_pages_are_self_contained_under_a_strict_policy(demo: Site) -> None:
    for target in ("/", "/endpoint?hostname=expired.lab.test"):
        status, body, headers = demo.get(target)
        assert status == 200
        policy = headers["Content-Security-Policy"]
        assert policy == CSP
        assert "default-src 'none'" in policy and "unsafe" not in policy and "http" not in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "<script" not in body.lower() and " src=" not in body and " style=" not in body
        assert not re.search(r'<(link|img|iframe|object|embed)\b', body)
        assert not re.search(r'(href|action)="(?!/)', body), "every link stays on this service"


def test_only_configured_endpoints_get_a_page(demo: Site) -> None:
    for query, expected in (("hostname=unlisted.lab.test", 404), ("hostname=127.0.0.1", 400), ("", 400),
                            ("hostname=a..b", 400), ("hostname=x.lab.test&hostname=y.lab.test", 400),
                            ("target=healthy.lab.test", 400)):
        status, body, _ = demo.get(f"/endpoint?{query}" if query else "/endpoint")
        assert status == expected, (query, body)
        assert body.count("\n") == 1
    queried = {q.qname for server in demo.lab.resolvers.values() for q in server.queries}
    assert "unlisted.lab.test" not in queried


def test_hostile_markup_is_escaped_in_the_html(hostile: Site) -> None:
    for target in ("/", f"/endpoint?hostname={XSS_HOST}"):
        status, body, _ = hostile.get(target)
        assert status == 200
        assert "<script" not in body.lower() and "<img" not in body.lower(), target
    _, body, _ = hostile.get(f"/endpoint?hostname={XSS_HOST}")
    assert _html(SCRIPT) in body and _html(ONERROR) in body
    assert "tls.hostname_mismatch" in body and "http.health_failed" in body


# ------------------------------------------------------------------ in a browser
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright is not installed: pip install playwright (never `playwright install`)"
    if missing is None and not os.access(CHROMIUM, os.X_OK):
        missing = f"{CHROMIUM} is missing: apt-get install chromium"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests under CI: {missing}", pytrace=False)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    page: Any
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    javascript: bool = True

    def outside_loopback(self) -> list[str]:
        return [u for u in self.requests if urlsplit(u).hostname not in (LOOPBACK, "::1")]


@pytest.fixture(params=[True, False], ids=["js", "no-js"])
def tab(browser: Any, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A fresh browser context, with JavaScript on and (the page needs none) off."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=request.param)
    page = context.new_page()
    seen = Tab(page)
    page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda err: seen.console.append(f"pageerror: {err}"))
    page.on("request", lambda r: seen.requests.append(r.url))

    def dialog(d: Any) -> None:
        seen.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    seen.javascript = request.param
    try:
        yield seen
    finally:
        context.close()


def test_the_page_in_a_browser(demo: Site, tab: Tab, tmp_path: Path) -> None:
    page = tab.page
    response = page.goto(demo.url + "/")
    assert response is not None and response.status == 200
    links = page.locator("table a")
    assert sorted(links.all_inner_texts()) == DEMO_HOSTS
    assert page.locator("span.b.critical").count() >= 6
    shot = tmp_path / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"status page screenshot: {shot}")

    page.select_option("select[name=status]", "critical")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"status=critical"))
    critical = page.locator("table a").all_inner_texts()
    assert "expired.lab.test" in critical and "healthy.lab.test" not in critical

    page.click("text=wrong-host.lab.test")
    page.wait_for_url(re.compile(r"/endpoint\?hostname=wrong-host\.lab\.test$"))
    assert "covers only www.other.test" in page.inner_text("body")
    assert page.locator("h1 span.b.critical").inner_text() == "CRITICAL"
    detail = tmp_path / "endpoint-page.png"
    page.screenshot(path=str(detail), full_page=True)
    print(f"endpoint page screenshot: {detail}")

    page.click("text=text")
    assert page.inner_text("body").startswith("CRITICAL")
    assert TOKEN not in page.content()
    assert tab.console == [], "the page logged errors or warnings"
    assert tab.outside_loopback() == []
    assert len(tab.requests) == 4  # index, filtered index, endpoint page, text report: nothing else


def test_hostile_markup_never_runs_in_a_browser(hostile: Site, tab: Tab, tmp_path: Path) -> None:
    page = tab.page
    for target in ("/", f"/endpoint?hostname={XSS_HOST}"):
        page.goto(hostile.url + target)
        page.wait_for_load_state("load")
        assert page.evaluate("window.__pwned === undefined"), target  # evaluate runs even with JS off
        assert page.evaluate("document.querySelectorAll('script, img, [onerror]').length") == 0, target
    text = page.inner_text("body")
    assert SCRIPT in text and ONERROR in text, "the payloads are shown as text"
    page.screenshot(path=str(tmp_path / "hostile.png"), full_page=True)
    assert tab.dialogs == []
    assert tab.console == []
    assert tab.outside_loopback() == []


def test_the_page_refreshes_itself(demo: Site, tab: Tab) -> None:
    """<meta http-equiv=refresh>: the browser fetches the page again after the interval, script or not."""
    page = tab.page
    page.goto(demo.url + "/?team=payments")
    with page.expect_request(lambda r: r.url == demo.url + "/?team=payments", timeout=15_000):
        pass
    assert tab.requests.count(demo.url + "/?team=payments") >= 2
    assert tab.console == [] and tab.outside_loopback() == []
