"""A small ACME Renewal Information responder (RFC 9773) for tests and the lab, on loopback.

It serves an ACME directory whose only useful entry is `renewalInfo`, and
answers GET renewalInfo/{certID} per certificate with what a test asked for:
a suggested window, a 404, a hang, or a malformed body.  The certID is built
here from the certificate itself (its Authority Key Identifier and the DER of
its serial, RFC 9773 §4.1), independently of the prober's own encoder, and
both are checked against the RFC's worked example.
"""
from __future__ import annotations

import base64
import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509


def certificate_id(cert: x509.Certificate) -> str:
    """base64url(keyIdentifier of the AKI) "." base64url(DER serial content octets), unpadded."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    return encode_id(aki or b"", cert.serial_number)


def encode_id(key_identifier: bytes, serial: int) -> str:
    length = (serial.bit_length() + 8) // 8  # room for the sign bit: 0x87654321 -> 00 87 65 43 21
    parts = (key_identifier, serial.to_bytes(length, "big", signed=True))
    return ".".join(base64.urlsafe_b64encode(p).decode().rstrip("=") for p in parts)


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class AriResponder:
    """ThreadingHTTPServer on 127.0.0.1; `directory` is the URL to put in `tls.ari`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, hang_seconds: float = 30.0) -> None:
        self._answers: dict[str, tuple[str, object, str | None]] = {}
        self.requests: list[str] = []  # request paths, in order
        self.hang_seconds = hang_seconds
        self._stop = threading.Event()
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                responder.requests.append(self.path)
                responder._answer(self)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # a fleet's probes ask at once; the default backlog of 5 drops them

        self.server = Server((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="lab-ari", daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def directory(self) -> str:
        return f"{self.base}/directory"

    def start(self) -> AriResponder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------- behaviour
    def window(self, cert: x509.Certificate, start: float, end: float, retry_after: str | None = "3600",
               explanation: str | None = None) -> str:
        """Answer this certificate with a suggested window; returns its certID."""
        body = {"suggestedWindow": {"start": _rfc3339(start), "end": _rfc3339(end)}}
        if explanation:
            body["explanationURL"] = explanation
        return self._set(cert, "window", json.dumps(body).encode(), retry_after)

    def not_found(self, cert: x509.Certificate) -> str:
        return self._set(cert, "404", b'{"type": "urn:ietf:params:acme:error:malformed"}', None)

    def hang(self, cert: x509.Certificate) -> str:
        return self._set(cert, "hang", b"", None)

    def malformed(self, cert: x509.Certificate) -> str:
        return self._set(cert, "malformed", b'{"suggestedWindow": {"start": "yesterday"', None)

    def _set(self, cert: x509.Certificate, kind: str, body: bytes, retry_after: str | None) -> str:
        cid = certificate_id(cert)
        self._answers[cid] = (kind, body, retry_after)
        return cid

    def hits(self, cid: str) -> int:
        return sum(1 for p in self.requests if p.endswith("/" + cid))

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/directory":
            body = json.dumps({"newNonce": f"{self.base}/new-nonce", "newOrder": f"{self.base}/new-order",
                               "renewalInfo": f"{self.base}/renewal-info"}).encode()
            return _send(handler, 200, body)
        prefix = "/renewal-info/"
        kind, body, retry_after = self._answers.get(handler.path[len(prefix):], ("404", b"{}", None)) \
            if handler.path.startswith(prefix) else ("404", b"{}", None)
        if kind == "hang":
            self._stop.wait(self.hang_seconds)
            return None
        status = 404 if kind == "404" else 200
        return _send(handler, status, body, retry_after)


def _send(handler: BaseHTTPRequestHandler, status: int, body: object, retry_after: str | None = None) -> None:
    data = body if isinstance(body, bytes) else b""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    if retry_after is not None:
        handler.send_header("Retry-After", retry_after)
    handler.end_headers()
    handler.wfile.write(data)
