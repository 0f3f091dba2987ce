"""The VM deployment: the systemd unit and the Prometheus example, checked by systemd and promtool."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    exposure = float(last.split(":")[-1].split()[0])
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
