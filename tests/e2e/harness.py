"""Process plumbing for the end-to-end tier: binaries, loopback addresses, ports, servers, `prober check`.

Every server here is a plain child process in its own session (so stopping
it kills its whole process group), with its config, state and log in a
temporary directory, listening only on a 127.0.0.0/8 address picked at
random per test session, on ports found free at run time.  Parallel runs on
one machine therefore do not collide, and nothing is left behind.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for  # noqa: F401  (re-exported for the e2e tests)

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]
GUARDED = E2E_DIR.parent / "netguard.py"
SCHEMA = REPO / "docs" / "report.schema.json"

# tool -> (the path Debian installs it at, the Debian package that ships it)
TOOLS: dict[str, tuple[str, str]] = {
    "nginx": ("/usr/sbin/nginx", "nginx-light"),
    "knotd": ("/usr/sbin/knotd", "knot"),
    "knotc": ("/usr/sbin/knotc", "knot"),
    "unbound": ("/usr/sbin/unbound", "unbound"),
    "unbound-control": ("/usr/sbin/unbound-control", "unbound"),
    "prometheus": ("/usr/bin/prometheus", "prometheus"),
    "promtool": ("/usr/bin/promtool", "prometheus"),
    "alertmanager": ("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager"),
    "amtool": ("/usr/bin/amtool", "prometheus-alertmanager"),
    "dig": ("/usr/bin/dig", "dnsutils"),
    "curl": ("/usr/bin/curl", "curl"),
    "openssl": ("/usr/bin/openssl", "openssl"),
    "dnssec-keygen": ("/usr/bin/dnssec-keygen", "bind9-utils"),
    "dnssec-signzone": ("/usr/bin/dnssec-signzone", "bind9-utils"),
    "dnssec-dsfromkey": ("/usr/bin/dnssec-dsfromkey", "bind9-utils"),
}


def tool(name: str) -> str:
    """The path of a server binary; a missing one fails the test under CI=true, else skips it."""
    path, package = TOOLS[name]
    found = path if os.access(path, os.X_OK) else shutil.which(Path(path).name)
    if found:
        return found
    message = f"{Path(path).name} is not installed: run `apt-get install {package}` (Debian package {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"e2e tier under CI: {message}", pytrace=False)
    pytest.skip(message)


def need_file(path: Path, who: str) -> Path:
    """A project file another part of the tree provides; missing fails under CI, else skips."""
    if path.exists():
        return path
    message = f"{path.relative_to(REPO)} does not exist yet ({who})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"e2e tier under CI: {message}", pytrace=False)
    pytest.skip(message)


# ------------------------------------------------------------------ addresses
def random_subnet() -> str:
    """'127.A.B': a /24 of loopback for this session; all of 127/8 routes to lo on Linux."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(100, 250)}.{rng.randint(1, 254)}"


def free_port(*hosts: str) -> int:
    """A TCP+UDP port free on every host given: bound, noted and released.

    The address is random per session, so the short race between release and
    the server's own bind is one nobody else takes part in.
    """
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        if all(_bindable(h, port) for h in hosts):
            return port
    raise RuntimeError(f"no port free on all of {', '.join(hosts)}")


def _bindable(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    import httpx
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


# -------------------------------------------------------------------- servers
# Every Service ever started in this session, so a failing test can show their logs.
STARTED: list[Service] = []


class Service:
    """One server process: its own process group, stdout+stderr in NAME.log under its directory."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None,
                 extra_logs: Sequence[Path] = ()) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.workdir = workdir
        self.log = workdir / f"{name}.log"
        self.extra_logs = tuple(extra_logs)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # by stop(), as opposed to exiting on its own

    def start(self, ready: Callable[[], bool], timeout: float = 20.0) -> Service:
        """Start, then poll `ready` until it holds; an early exit or a timeout fails with the log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.workdir, env=self.env, start_new_session=True)
        STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting:\n{self.tail()}")
            if ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready after {timeout:g}s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after 5 s.  Idempotent."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.stopped = True
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers that outlived their master
        except ProcessLookupError:
            pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def state(self) -> str:
        if self.proc is None:
            return "not started"
        return "running" if self.running else ("stopped" if self.stopped else f"exited {self.proc.returncode}")

    def tail(self, lines: int = 60) -> str:
        out = []
        for path in (self.log, *self.extra_logs):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)


def stop_since(mark: int) -> None:
    """Stop every Service started after len(STARTED) was `mark`, the last one first."""
    for service in reversed(STARTED[mark:]):
        service.stop()


def run(argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """A short command (knotc, unbound-control, amtool, promtool); a non-zero exit fails the test with its output."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout}{done.stderr}",
                    pytrace=False)
    return done


# ---------------------------------------------------------------- the prober
def prober_env(guard_log: Path) -> dict[str, str]:
    """The environment for a prober child: this checkout first, the loopback guard on."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PROBER_GUARD_LOG"] = str(guard_log)
    return env


def prober_argv(*args: str) -> list[str]:
    """`python -m prober.cli ARGS`, run through the loopback guard (tests/netguard.py)."""
    return [sys.executable, str(GUARDED), *args]


def guard_violations(guard_log: Path) -> list[str]:
    try:
        return [line for line in guard_log.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class CheckRun:
    exit_code: int
    reports: dict[str, dict[str, Any]]  # by hostname
    stdout: str
    stderr: str

    def codes(self, hostname: str) -> list[str]:
        return sorted(f["code"] for f in self.reports[hostname]["findings"])

    def finding(self, hostname: str, code: str) -> dict[str, Any]:
        return next(f for f in self.reports[hostname]["findings"] if f["code"] == code)

    def show(self, hostname: str, description: str) -> str:
        """One line for an assertion message: the name, what it stands for, its status and findings."""
        report = self.reports[hostname]
        return f"{hostname} ({description}): status {report['status']}, findings " + "; ".join(
            f"{f['code']} [{f['severity']}] {f['message']}" for f in report["findings"])

    def assert_exactly(self, hostname: str, description: str, expect: Sequence[str], status: str) -> dict[str, Any]:
        """The report of `hostname` has exactly the codes `expect`, the status and its exit code, and a
        verdict among those codes; returns the report for further checks."""
        from prober.model import EXIT_CODES
        report, why = self.reports[hostname], self.show(hostname, description)
        assert self.codes(hostname) == sorted(expect), why
        assert report["status"] == status, why
        assert report["exit_code"] == EXIT_CODES[status], why
        if expect:
            assert report["verdict"]["code"] in expect, why
        return report


def prober_check(config: Path, hostnames: Sequence[str], workdir: Path, timeout: float = 60.0) -> CheckRun:
    """Run `prober check HOST... --config F --json` as a child process and parse its JSON.

    The JSON is validated against docs/report.schema.json, stderr must be
    empty (no traceback, no warning) and the loopback guard must have seen
    nothing: the child only ever dialled 127.0.0.0/8.
    """
    guard_log = workdir / "guard.log"
    done = subprocess.run(prober_argv("check", *hostnames, "--config", str(config), "--json"),
                          capture_output=True, text=True, timeout=timeout, cwd=workdir,
                          env=prober_env(guard_log), stdin=subprocess.DEVNULL)
    context = (f"prober check {' '.join(hostnames)} exited {done.returncode}\n"
               f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    assert not guard_violations(guard_log), "the prober dialled outside loopback: " + "; ".join(
        guard_violations(guard_log))
    assert done.stderr == "", context
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not JSON ({exc}): {context}") from None
    _validate(doc)
    docs = doc if isinstance(doc, list) else [doc]
    return CheckRun(done.returncode, {d["hostname"]: d for d in docs}, done.stdout, done.stderr)


def _validate(doc: Any) -> None:
    import jsonschema
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
