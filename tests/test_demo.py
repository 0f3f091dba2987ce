"""`prober demo` as a newcomer runs it: a subprocess, a real lab, a real service.

Each run gets its own TMPDIR, so "nothing is left behind" is checked on a directory only it uses.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prober.lab.scenarios import DEMO
from waiting import sigint_default

ANSI = re.compile(r"\x1b\[[0-9;]*m")
DEMO_HOSTS = {f"{name}.lab.test" for name in DEMO}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp), **extra}
    env.pop("NO_COLOR", None)
    return env


def _once(tmp: Path, *argv: str, columns: int = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prober.cli", "demo", "--once", *argv], capture_output=True,
                          text=True, timeout=90, env=_env(tmp, COLUMNS=str(columns)))


def _rows(text: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in text.splitlines()
            if line.split() and line.split()[0] in ("OK", "WARNING", "CRITICAL")}


def test_demo_once_prints_the_table_and_nothing_that_is_dead_after_it(tmp_path):
    proc = _once(tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert set(rows) == DEMO_HOSTS
    assert rows["healthy.lab.test"] == "OK" and rows["expiring-20d.lab.test"] == "WARNING"
    assert rows["expired.lab.test"] == rows["wrong-host.lab.test"] == "CRITICAL"
    assert "http://127." not in proc.stdout and "--config" not in proc.stdout and "/tmp" not in proc.stdout
    assert list(tmp_path.iterdir()) == []  # the lab directory, with its private keys, is gone


def test_the_table_fits_the_terminal_and_colour_keeps_its_columns(tmp_path):
    plain = _once(tmp_path, "--color", "never", columns=80).stdout
    table = plain.split("\n\n")[1].splitlines()
    assert table[0].startswith("STATUS") and all(len(line) <= 80 for line in table), table
    assert max(len(line) for line in table) > 60  # it uses the width, wrapping instead of cutting
    coloured = _once(tmp_path, "--color", "always", columns=80).stdout
    assert "\x1b[31mCRITICAL" in coloured
    def verdict_column(lines: list[str]) -> list[int]:  # where each row's verdict starts
        return [re.match(r"\S+ +\S+ +", line).end() for line in lines if not line.startswith(" ")]

    columns = verdict_column(ANSI.sub("", coloured).split("\n\n")[1].splitlines())
    assert columns == verdict_column(table) and len(set(columns)) == 1
    assert {len(line) - len(line.lstrip()) for line in table if line.startswith(" ")} == set(columns)


def test_a_busy_listen_port_fails_before_anything_is_printed(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "prober.cli", "demo", "--listen", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith(f"prober: --listen 127.0.0.1:{port}: ") and len(proc.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def _start(tmp: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "prober.cli", "demo", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp),
                            preexec_fn=sigint_default)
    lines: list[str] = []
    while not lines or not lines[-1].startswith("serving"):
        line = proc.stdout.readline()
        assert line, f"the demo ended early: {proc.stderr.read()}"
        lines.append(line)
    return proc, lines


def _ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the demo's service never became ready")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_serves_a_complete_first_round_and_cleans_up_on_a_signal(tmp_path, sig):
    port = _free_port()
    proc, lines = _start(tmp_path, port)
    try:
        text = "".join(lines)
        assert f"status:   http://127.0.0.1:{port}/\n" in text and f"http://127.0.0.1:{port}/metrics" in text
        assert any(tmp_path.iterdir())  # the lab's directory, while it runs
        _ready(port)
        # Ready comes after the first round: the first scrape already holds every endpoint.
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        hosts = {s.labels["hostname"] for f in text_string_to_metric_families(body)
                 if f.name == "prober_probe_success" for s in f.samples}
        assert hosts == DEMO_HOSTS
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_the_lab_starts_still_removes_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "prober.cli", "demo", "--listen", f"127.0.0.1:{_free_port()}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                            preexec_fn=sigint_default)
    try:
        assert proc.stdout.readline().startswith("prober demo:")  # the lab is up, its first round under way
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(tmp_path.iterdir()) == []
