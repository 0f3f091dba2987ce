"""The VM deployment: the systemd unit and the Prometheus example, checked by systemd and promtool."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from prometheus_client.parser import text_string_to_metric_families

from prober.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "prober.service"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "helm" / "prober" / "files" / "alerts.yaml"
INSTALLED = "/opt/prober/bin/prober"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} ({package}) is required in CI")
        pytest.skip(f"{tool} is not installed ({package})")
    return path


def _service() -> dict[str, list[str]]:
    """[Service] as systemd reads it: repeated keys accumulate."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.fixture()
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with /opt/prober/bin/prober pointed at an executable here: verify checks that it exists."""
    prober = shutil.which("prober") or sys.executable
    unit = tmp_path / "prober.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, prober))
    return unit


def test_systemd_accepts_the_unit(verifiable_unit: Path) -> None:
    analyze = _need("systemd-analyze", "systemd")
    done = subprocess.run([analyze, "verify", "--man=no", str(verifiable_unit)],
                          capture_output=True, text=True, timeout=60)
    # Unknown keys are only warnings on stderr with exit 0: treat them as failures.
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_systemd_rates_the_sandbox_ok(verifiable_unit: Path) -> None:
    analyze = _need("systemd-analyze", "systemd")
    done = subprocess.run([analyze, "security", "--offline=true", "--threshold=20", str(verifiable_unit)],
                          capture_output=True, text=True, timeout=60)
    last = done.stdout.strip().splitlines()[-1]
    assert "Overall exposure level" in last, done.stdout + done.stderr
    # "…prober.service: 1.4 OK 🙂", or ":-)" where the locale is not UTF-8 (as under CI)
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", last)[1])
    print(f"\nsystemd-analyze security: {last}")
    assert exposure <= 2.0, last  # "OK" band; the unit's hardening set scores 1.4


def test_unit_hardening() -> None:
    service = _service()
    expected = {
        "DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "Restart": "on-failure",
        "ConfigurationDirectory": "prober",
    }
    assert {k: service[k][-1] for k in expected} == expected
    assert service["SystemCallFilter"][0] == "@system-service"
    assert service["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"


def test_unit_command_lines_parse_with_the_real_cli() -> None:
    service = _service()
    pre = shlex.split(service["ExecStartPre"][0])
    assert pre[0] == INSTALLED and pre[1:] == ["validate", "/etc/prober/probes.yaml"]
    assert build_parser().parse_args(pre[1:]).config == "/etc/prober/probes.yaml"
    # The reload validates before it signals, so a bad edit fails `systemctl reload`.
    assert service["ExecReload"][0] == service["ExecStartPre"][0]
    start = shlex.split(service["ExecStart"][0])
    assert start[0] == INSTALLED and start[-1] == "$PROBER_OPTS"
    # What PROBER_OPTS from /etc/default/prober expands to must parse too.
    args = build_parser().parse_args(start[1:-1] + ["--location", "dc1", "--shard", "0/2"])
    assert (args.command, args.config, args.listen, args.location, args.shard) == \
        ("serve", "/etc/prober/probes.yaml", "0.0.0.0:9716", "dc1", "0/2")
    # --workers comes from PROBER_WORKERS: the unit's default, or auto from /etc/default/prober.
    assert args.workers == "$PROBER_WORKERS"
    environment = dict(kv.split("=", 1) for line in service["Environment"] for kv in line.split())
    from prober.service.app import parse_workers
    assert environment["PROBER_WORKERS"] == "1" and parse_workers("auto") >= 1


def test_prometheus_example_loads_the_one_rules_file(tmp_path: Path) -> None:
    promtool = _need("promtool", "Debian package prometheus")
    text = PROMETHEUS.read_text()
    assert "/etc/prometheus/rules/prober-alerts.yaml" in text
    # Stand in the repository's file for the installed copy, as the install step does.
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/rules/prober-alerts.yaml", str(ALERTS)))
    done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rules found" in done.stdout + done.stderr


# --------------------------------------------------------------------------
# The unit, run: its command lines in a venv from Debian's python3, under its sandbox
# --------------------------------------------------------------------------
DEBIAN_PYTHON = "/usr/bin/python3"
VM_DIR = ROOT / "tests" / "vm"
DYNAMIC_UID = 61184 + os.getpid() % 4000  # systemd's DynamicUser range starts at 61184


def _dependencies() -> list[metadata.Distribution]:
    """The prober's run-time distributions, as installed for this interpreter (markers applied)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo, found = [Requirement(r) for r in project["dependencies"]], {}
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = req.name.lower().replace("_", "-")
        if name in found:
            continue
        found[name] = metadata.distribution(req.name)
        todo.extend(Requirement(r) for r in found[name].requires or ())
    return list(found.values())


def _install_venv(tmp_path: Path) -> Path:
    """/opt/prober as docs/deploy.md builds it (python3 -m venv, the project's wheel), in an overlay.

    The dependencies are copied from this interpreter's installed distributions instead of
    downloaded, so the test reaches no package index; the project itself goes in as its wheel.
    """
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("prober-*.whl")
    upper, work = tmp_path / "opt-upper", tmp_path / "opt-work"
    upper.mkdir()
    work.mkdir()
    script = f"""set -e
mount -t overlay overlay -o lowerdir=/opt,upperdir={upper},workdir={work} /opt
{DEBIAN_PYTHON} -m venv /opt/prober
/opt/prober/bin/pip install -q --no-index --no-deps {wheel}
/opt/prober/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
"""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout must not count as installed
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", script],
                          capture_output=True, text=True, timeout=300, env=clean)
    assert done.returncode == 0, done.stdout + done.stderr
    site = upper / Path(done.stdout.strip().splitlines()[-1]).relative_to("/opt")
    for dist in _dependencies():
        for file in dist.files or ():
            if ".." in file.parts or file.suffix == ".pyc":
                continue
            source, target = Path(dist.locate_file(file)), site / file
            if source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    for path in (upper, *upper.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return upper


def test_the_unit_runs_under_its_sandbox_on_debian_python(tmp_path: Path) -> None:
    """ExecStartPre and ExecStart as the unit has them, from /opt/prober (a venv of Debian's
    python3) and /etc/prober, with the sandbox systemd would build (tests/vm/hardened.sh),
    probing the lab and scraped on :9716, all inside a network namespace of its own."""
    for tool in ("unshare", "setpriv", "prlimit", "ip"):
        _need(tool, "util-linux / iproute2")
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        _need("python3-venv-missing", "python3-venv")
    if os.geteuid() != 0:
        pytest.skip("needs root for mount and network namespaces")
    service = _service()
    opt_upper = _install_venv(tmp_path)
    etc_upper, work = tmp_path / "etc-upper", tmp_path / "work"
    etc_upper.mkdir()
    work.mkdir()
    driver = [sys.executable, str(VM_DIR / "drive_unit.py"), str(ROOT), str(opt_upper), str(etc_upper), str(work),
              str(DYNAMIC_UID), service["ExecStartPre"][0], service["ExecStart"][0],
              " ".join(a for line in service.get("Environment", []) for a in shlex.split(line)), "60"]
    done = subprocess.run(["unshare", "--net", "--fork", "--kill-child", "--", "sh", "-c",
                           'ip link set lo up && exec "$@"', "net", *driver],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["metrics"], f"the service never exported the lab's endpoints:\n{result['output']}"
    success = {(s.labels["hostname"], s.labels.get("location")): s.value
               for family in text_string_to_metric_families(result["metrics"]) for s in family.samples
               if s.name == "prober_probe_success"}
    assert success == {("healthy.lab.test", "dc1"): 1.0, ("expired.lab.test", "dc1"): 0.0}, success
    assert result["ready"] is not None and result["exited"] is None, result["output"]
    proc = result["process"]
    assert proc["uid"] == [str(DYNAMIC_UID)] * 4 and proc["gid"] == [str(DYNAMIC_UID)] * 4
    assert proc["groups"] == []
    assert int(proc["cap_eff"], 16) == int(proc["cap_bnd"], 16) == int(proc["cap_amb"], 16) == 0
    assert proc["no_new_privs"] == "1" and proc["umask"] == "0077"
    assert proc["nofile"] == ["16384", "16384"]
    mounts = proc["mounts"]
    assert "ro" in mounts["/"]["options"] and "ro" in mounts["/etc"]["options"] and "ro" in mounts["/opt"]["options"]
    assert mounts["/tmp"]["fstype"] == "tmpfs" and "ro" not in mounts["/tmp"]["options"]
    assert mounts["/root"]["fstype"] == "tmpfs" and "ro" in mounts["/root"]["options"]
    assert mounts["/proc"]["fstype"] == "proc" and "hidepid=invisible" in mounts["/proc"]["super"]
