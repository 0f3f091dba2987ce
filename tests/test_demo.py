"""`prober demo` as a newcomer runs it: a subprocess, a real lab, a real service."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from prober.lab.scenarios import DEMO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_once_prints_the_verdict_table():
    proc = subprocess.run([sys.executable, "-m", "prober.cli", "demo", "--once"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[1]: line.split()[0] for line in proc.stdout.splitlines()
            if line.split() and line.split()[0] in ("OK", "WARNING", "CRITICAL")}
    assert set(rows) == {f"{name}.lab.test" for name in DEMO}
    assert rows["healthy.lab.test"] == "OK" and rows["expiring-20d.lab.test"] == "WARNING"
    assert rows["expired.lab.test"] == rows["wrong-host.lab.test"] == "CRITICAL"
    assert "/metrics" in proc.stdout and "/report?hostname=" in proc.stdout


def test_demo_serves_metrics_until_interrupted():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "prober.cli", "demo", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        hosts: set[str] = set()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and "expired.lab.test" not in hosts:
            time.sleep(0.5)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            hosts = {s.labels["hostname"] for f in text_string_to_metric_families(body)
                     if f.name == "prober_tls_certificate_not_after_timestamp_seconds" for s in f.samples}
        assert "expired.lab.test" in hosts  # expired and still exported
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
