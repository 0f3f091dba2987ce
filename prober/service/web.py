"""The HTTP side of `prober serve`: one port, a stdlib threading server.

Routes: / (the status page, prober/service/page.py), /endpoint?hostname=H
(one endpoint's page), /metrics, /-/healthy, /-/ready, /-/reload (POST),
/probe?hostname=H (that endpoint's series, probed now) and
/report?hostname=H[&format=text] (its JSON or text report).  HEAD works
wherever GET does.  /endpoint, /probe and /report only ever touch hostnames
of the loaded config: anything else is refused before a single packet
leaves.  Requests are bounded: a 4 KiB request target, a 4 KiB body, a 10 s socket timeout, and one
request per connection (HTTP/1.0), so an unread body can never desync a
connection.  Every answer that is not a payload is one line of text.
"""
from __future__ import annotations

import gzip
import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from ..config import normalize_hostname
from ..render import to_dict, to_text
from . import page
from .metrics import Snapshot, render_snapshot

log = logging.getLogger("prober.service")

MAX_TARGET = 4096  # bytes of request target (path and query)
MAX_BODY = 4096  # bytes of request body accepted (and dropped)
SOCKET_TIMEOUT = 10.0  # a client that stalls mid-request is dropped
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
# /metrics is gzipped for a client that asks (Prometheus does) once it is this big: 10,000
# endpoints are 37.5 MB of text.  Level 1 took 73 ms for it, level 6 250 ms for a body 12%
# smaller (bench/RESULTS.md, round 4).
GZIP_FROM, GZIP_LEVEL = 64 * 1024, 1


class ServiceApi(Protocol):
    """What the HTTP threads need from the service; every call is safe from any thread."""

    @property
    def ready(self) -> bool: ...

    def metrics(self) -> bytes: ...

    def is_configured(self, hostname: str) -> bool: ...

    def probe(self, hostname: str) -> Snapshot | None: ...

    def report(self, hostname: str) -> Snapshot | None: ...

    def overview(self) -> list[page.Row]: ...

    def reload(self) -> tuple[bool, str]: ...


class ServiceUnavailable(Exception):
    """The service cannot answer now (it is shutting down): 503 with this message."""


class _Refused(Exception):
    """A request answered with `status` and a one-line `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    server: WebServer
    server_version = "prober"
    sys_version = ""
    timeout = SOCKET_TIMEOUT
    _head_only = False  # HEAD: every header GET would send, no body

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def _route(self, method: str) -> None:
        self._head_only = method == "HEAD"
        try:
            if len(self.path) > MAX_TARGET:
                raise _Refused(414, f"the request target is longer than {MAX_TARGET} bytes")
            self._drain_body()
            url = urlsplit(self.path)
            route = _ROUTES.get(url.path)
            if route is None:
                raise _Refused(404, f"no such path; try {', '.join(_ROUTES)}")
            allowed, handler = route
            if method != allowed and not (method == "HEAD" and allowed == "GET"):
                methods = "GET, HEAD" if allowed == "GET" else allowed
                self._send(405, f"{url.path} takes {methods} only\n".encode(), TEXT, {"Allow": methods})
                return
            handler(self, url.query)
        except _Refused as refused:
            self._send(refused.status, (refused.message + "\n").encode(), TEXT)
        except ServiceUnavailable as err:
            self._send(503, f"{err}\n".encode(), TEXT)
        except TimeoutError:
            self._send(504, b"the probe did not finish in time; try again\n", TEXT)

    def _drain_body(self) -> None:
        """Refuse a big or unframed body; read and drop a small one (closing unread data would reset)."""
        if self.headers.get("Transfer-Encoding"):
            raise _Refused(411, "send a request body with Content-Length, not Transfer-Encoding")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            raise _Refused(400, "Content-Length must be a whole number of bytes")
        if length > MAX_BODY:
            raise _Refused(413, f"request bodies are limited to {MAX_BODY} bytes (and ignored)")
        self.rfile.read(length)

    # --------------------------------------------------------------- routes
    def _metrics(self, query: str) -> None:
        body, extra = self.server.api.metrics(), {}
        if len(body) >= GZIP_FROM and "gzip" in self.headers.get("Accept-Encoding", ""):
            body, extra = gzip.compress(body, GZIP_LEVEL), {"Content-Encoding": "gzip"}  # zlib drops the GIL
        self._send(200, body, CONTENT_TYPE_LATEST, extra)

    def _healthy(self, query: str) -> None:
        self._send(200, b"Healthy\n", TEXT)

    def _ready(self, query: str) -> None:
        if self.server.api.ready:
            self._send(200, b"Ready\n", TEXT)
        else:
            self._send(503, b"Not ready: the configuration is not loaded yet\n", TEXT)

    def _reload(self, query: str) -> None:
        ok, message = self.server.api.reload()
        self._send(200 if ok else 500, (message + "\n").encode(), TEXT)

    def _probe(self, query: str) -> None:
        snapshot = self.server.api.probe(self._hostname(_params(query, ("hostname",), "hostname=NAME")))
        if snapshot is None:
            raise _Refused(404, "that hostname was removed from the configuration")
        self._send(200, render_snapshot(snapshot), CONTENT_TYPE_LATEST)

    def _report(self, query: str) -> None:
        params = _params(query, ("hostname", "format"), "hostname=NAME[&format=json|text]")
        form = params.get("format", "json")
        if form not in ("json", "text"):
            raise _Refused(400, "format must be json or text")
        snapshot = self.server.api.report(self._hostname(params))
        if snapshot is None:
            raise _Refused(404, "that hostname was removed from the configuration")
        if form == "text":
            self._send(200, to_text(snapshot.report).encode() + b"\n", TEXT)
            return
        body = json.dumps(to_dict(snapshot.report), indent=2).encode() + b"\n"
        self._send(200, body, "application/json")

    def _index(self, query: str) -> None:
        params = _params(query, ("status", "team"), "status=STATUS&team=TEAM", required=False)
        status = params.get("status") or None
        if status is not None and status not in page.STATUSES:
            raise _Refused(400, f"status must be one of {', '.join(page.STATUSES)}")
        rows = self.server.api.overview()
        html = page.index(rows, page.Filters(status, params.get("team") or None),
                          page.refresh_seconds(r.endpoint for r in rows))
        self._send(200, html.encode(), HTML)

    def _endpoint(self, query: str) -> None:
        snapshot = self.server.api.report(self._hostname(_params(query, ("hostname",), "hostname=NAME")))
        if snapshot is None:
            raise _Refused(404, "that hostname was removed from the configuration")
        report = snapshot.report
        self._send(200, page.detail(report, page.refresh_seconds([report.endpoint])).encode(), HTML)

    def _hostname(self, params: dict[str, str]) -> str:
        """The `hostname` parameter, normalised; refused unless it is in the loaded config."""
        if not self.server.api.ready:
            raise _Refused(503, "not ready: the configuration is not loaded yet")
        if "hostname" not in params:
            raise _Refused(400, "give the query parameter hostname=NAME")
        try:
            hostname = normalize_hostname(params["hostname"])
        except ValueError as err:
            raise _Refused(400, f"hostname {err}") from None
        if not self.server.api.is_configured(hostname):
            raise _Refused(404, "that hostname is not an endpoint of this prober's configuration "
                                "(after sharding); only configured endpoints are probed")
        return hostname

    # -------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**page.HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if not self._head_only:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        # Access lines are the hot path of a scrape: debug only.
        log.debug("http %s: %s", self.address_string(), format % args)


def _params(query: str, allowed: tuple[str, ...], usage: str, required: bool = True) -> dict[str, str]:
    """The query's parameters, each at most once and among `allowed`; refused (400) otherwise."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, max_num_fields=4,
                          errors="strict") if query else []
    except ValueError:
        raise _Refused(400, f"the query string is malformed; use ?{usage}") from None
    keys = [key for key, _ in pairs]
    if any(key not in allowed for key in keys) or len(set(keys)) != len(keys) or (required and not pairs):
        raise _Refused(400, f"give the query parameters {usage}, each once")
    return dict(pairs)


_ROUTES = {
    "/": ("GET", _Handler._index),
    "/endpoint": ("GET", _Handler._endpoint),
    "/metrics": ("GET", _Handler._metrics),
    "/probe": ("GET", _Handler._probe),
    "/report": ("GET", _Handler._report),
    "/-/healthy": ("GET", _Handler._healthy),
    "/-/ready": ("GET", _Handler._ready),
    "/-/reload": ("POST", _Handler._reload),
}


class WebServer(ThreadingHTTPServer):
    """Binds exactly `host:port` (raises OSError when it cannot) and serves in a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, api: ServiceApi) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.api = api
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="prober-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hung up mid-answer is not the service's problem: one debug line, no traceback.
        err = sys.exc_info()[1]
        log.debug("http %s: the connection failed: %s: %s", client_address, type(err).__name__, err)
