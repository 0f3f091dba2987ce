"""The container image, built from the Dockerfile by tests/image/build.sh and run with podman.

Every container runs as the image's own user (no --user), with a read-only
root filesystem, no capabilities, no-new-privileges and a tmpfs at /tmp only:
what the Helm chart's securityContext asks of a cluster.  Containers that
probe use the host's network namespace, so that the lab on 127.0.0.1 is
reachable; every address they dial is the lab's, on loopback.

The image is built before the tests (.ci/run runs build.sh), not by them:
building reaches PyPI.  Without podman the tier skips; under CI=true a missing
tool or image fails it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from waiting import wait_for

from prober.lab.scenarios import SCENARIOS, Lab

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(__file__).resolve().parent / "build.sh"
IMAGE = os.environ.get("PROBER_IMAGE", "localhost/prober:test")
STATE = Path(os.environ.get("PROBER_IMAGE_STATE", "/var/tmp/prober-image"))
UID = 65532
HARDENED = ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m",
            "--cap-drop=ALL", "--security-opt=no-new-privileges"]
LAB_SCENARIOS = ("healthy", "wrong-host")


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"image tier under CI: {message}", pytrace=False)
    pytest.skip(message)


def source_digest() -> str:
    """What build.sh labels the image with: sha256sum of the build's inputs, then of that list."""
    files = [p for top in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "prober")
             for p in ([ROOT / top] if (ROOT / top).is_file() else (ROOT / top).rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo", ".pyd")]
    paths = sorted(p.relative_to(ROOT).as_posix() for p in files)
    listing = "".join(f"{hashlib.sha256((ROOT / p).read_bytes()).hexdigest()}  {p}\n" for p in paths)
    return hashlib.sha256(listing.encode()).hexdigest()


class Podman:
    """podman on build.sh's own store and containers.conf."""

    def __init__(self) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": str(STATE / "containers.conf")}
        self.base = ["podman", "--root", str(STATE / "storage"), "--runroot", str(STATE / "run")]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and done.returncode != 0:
            pytest.fail(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}", pytrace=False)
        return done

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self("run", "--rm", *HARDENED, *args, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def podman() -> Podman:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        _unavailable("podman and runc are not installed: apt-get install podman runc mmdebstrap")
    if os.geteuid() != 0:
        _unavailable("the image tier runs rootful podman: run it as root")
    pm = Podman()
    if not (STATE / "containers.conf").is_file() or pm("image", "exists", IMAGE, check=False).returncode != 0:
        _unavailable(f"no image {IMAGE} in {STATE}: build it with tests/image/build.sh")
    built = pm("image", "inspect", "--format", '{{index .Labels "org.prober.source-digest"}}', IMAGE).stdout.strip()
    if built != source_digest():
        _unavailable(f"{IMAGE} was built from another checkout: rebuild it with tests/image/build.sh")
    return pm


@pytest.fixture(scope="module")
def inspected(podman: Podman) -> dict[str, Any]:
    return json.loads(podman("image", "inspect", IMAGE).stdout)[0]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    """The lab on loopback, and a config directory the container's user can read (mounted read-only)."""
    wanted = tuple(s for s in SCENARIOS if s.name in LAB_SCENARIOS)
    with Lab(wanted, workdir=str(tmp_path_factory.mktemp("lab")), timeout=3.0, interval=5.0) as running:
        config_dir = tmp_path_factory.mktemp("etc-prober")
        config = running.config()
        shutil.copy(running.bundle, config_dir / "lab-root.pem")
        config["defaults"]["ca_file"] = "lab-root.pem"  # relative: beside probes.yaml in /etc/prober
        (config_dir / "probes.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for path in (config_dir, *config_dir.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield running, config_dir


def _mount(config_dir: Path) -> list[str]:
    return ["--volume", f"{config_dir}:/etc/prober:ro"]


# --------------------------------------------------------------------------
# What the image is
# --------------------------------------------------------------------------
def test_image_runs_as_its_numeric_non_root_user(inspected: dict[str, Any]) -> None:
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["prober"]
    assert config["Cmd"] == ["serve", "--config", "/etc/prober/probes.yaml", "--listen", "0.0.0.0:9716"]
    assert "9716/tcp" in config["ExposedPorts"]


def test_healthcheck_survives_the_build(inspected: dict[str, Any]) -> None:
    check = inspected.get("Healthcheck")  # dropped unless built with --format docker
    assert check, "the image has no HEALTHCHECK"
    assert check["Test"][0] == "CMD" and "http://127.0.0.1:9716/-/healthy" in check["Test"][-1]
    assert (check["Interval"], check["Timeout"], check["StartPeriod"], check["Retries"]) == \
        (30 * 10**9, 5 * 10**9, 10 * 10**9, 3)


def test_no_build_tools_sources_or_wheels_are_left(podman: Podman) -> None:
    script = (
        "import os, shutil, sys\n"
        "tools = [t for t in ('gcc', 'cc', 'c++', 'make', 'ld', 'as', 'rustc', 'cargo') if shutil.which(t)]\n"
        "wheels = [os.path.join(d, f) for top in ('/usr', '/opt', '/root', '/srv', '/var', '/etc', '/home')\n"
        "          for d, _, names in os.walk(top) for f in names if f.endswith('.whl')]\n"
        "left = [p for p in ('/wheels', '/src') if os.path.exists(p)]\n"
        "print(tools, wheels, left)\n"
        "sys.exit(1 if tools or wheels or left else 0)\n")
    done = podman.run("--network=none", "--entrypoint", "python", IMAGE, "-c", script)
    assert done.returncode == 0, f"left in the image (tools, wheels, build dirs): {done.stdout}{done.stderr}"


def test_read_only_root_and_identity(podman: Podman) -> None:
    script = (
        "import os\n"
        "print(os.getuid(), os.getgid())\n"
        "open('/tmp/ok', 'w').write('x')\n"
        "try:\n"
        "    open('/etc/prober-was-here', 'w')\n"
        "except OSError as err:\n"
        "    print('root', err.strerror)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n")
    done = podman.run("--network=none", "--entrypoint", "python", IMAGE, "-c", script)
    assert done.returncode == 0, done.stderr
    uid_gid, root, caps = done.stdout.splitlines()
    assert uid_gid == f"{UID} {UID}"
    assert root == "root Read-only file system"
    assert int(caps, 16) == 0


def test_help(podman: Podman) -> None:
    done = podman.run("--network=none", IMAGE, "--help")
    assert done.returncode == 0, done.stderr
    assert all(word in done.stdout for word in ("check", "serve", "validate", "demo"))


# --------------------------------------------------------------------------
# What the image does
# --------------------------------------------------------------------------
def test_check_against_the_lab(podman: Podman, lab: tuple[Lab, Path]) -> None:
    running, config_dir = lab
    hosts = [f"{name}.lab.test" for name in LAB_SCENARIOS]
    done = podman.run("--network=host", *_mount(config_dir), IMAGE,
                      "check", *hosts, "--config", "/etc/prober/probes.yaml", "--json")
    assert done.returncode == 2, done.stdout + done.stderr  # wrong-host is critical
    reports = {r["hostname"]: r for r in json.loads(done.stdout)}
    assert reports["healthy.lab.test"]["status"] == "ok", reports["healthy.lab.test"]["verdict"]
    wrong = reports["wrong-host.lab.test"]
    assert wrong["status"] == "critical"
    assert "tls.hostname_mismatch" in {f["code"] for f in wrong["findings"]}


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.read().decode()
    except OSError:
        return None


@pytest.fixture()
def container(podman: Podman) -> Iterator[str]:
    name = f"prober-test-{uuid.uuid4().hex[:12]}"
    yield name
    podman("rm", "--force", "--time", "0", name, check=False)


def test_serve_with_read_only_config_is_scraped_from_outside(podman: Podman, lab: tuple[Lab, Path],
                                                             container: str) -> None:
    _, config_dir = lab
    port = _free_loopback_port()
    podman("run", "--detach", "--name", container, *HARDENED, "--network=host", *_mount(config_dir), IMAGE,
           "serve", "--config", "/etc/prober/probes.yaml", "--listen", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"

    def scraped() -> str | None:
        body = _get(f"{base}/metrics")
        done = body and all(f'prober_probe_success{{hostname="{name}.lab.test"' in body for name in LAB_SCENARIOS)
        return body if done else None

    body = wait_for("the container's /metrics to show both lab endpoints", scraped, timeout=60, interval=0.5)
    success = {line.split('hostname="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
               for line in body.splitlines() if line.startswith("prober_probe_success{")}
    assert success == {"healthy.lab.test": 1.0, "wrong-host.lab.test": 0.0}, success
    assert _get(f"{base}/-/ready") is not None
    state = podman("inspect", "--format", "{{.State.Running}} {{.Config.User}}", container).stdout.split()
    assert state == ["true", f"{UID}:{UID}"]


def test_healthcheck_passes_on_the_default_command(podman: Podman, lab: tuple[Lab, Path], container: str) -> None:
    """The image's own CMD (serve on 0.0.0.0:9716) in a network namespace of its own, judged by its HEALTHCHECK."""
    _, config_dir = lab
    podman("run", "--detach", "--name", container, *HARDENED, "--network=none", *_mount(config_dir), IMAGE)

    def healthy() -> bool:
        return podman("healthcheck", "run", container, check=False, timeout=30).returncode == 0

    wait_for("podman healthcheck run to pass", healthy, timeout=60, interval=1)
    assert podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip() == "true"
