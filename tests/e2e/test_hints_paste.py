"""The `next:` hints run as pasted: dig, curl and openssl against the lab, exactly as printed.

Every command is checked to stay on loopback before it runs (each names its server by address),
then run by bash; its output must show the thing the hint is about.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from harness import tool
from prober.lab.scenarios import SCENARIOS, Lab

pytestmark = pytest.mark.e2e

CASES = {  # scenario -> what the first command of its hint must show
    "stale-dns": r"127\.0\.0\.3",  # dig at the stale resolver: the old load balancer
    "nxdomain": r"status: NXDOMAIN",
    "health-503": r"< HTTP/1\.1 503",
    "no-redirect": r"< HTTP/1\.1 200",
    "no-hsts": r"HTTP/1\.1 200",
    "wrong-host": r"CN\s*=\s*www\.other\.test",
    "expired": r"CN\s*=\s*expired\.lab\.test",
}
_COMMAND = re.compile(r"\b((?:dig|curl|openssl) [^;]*?)(?=;|$| and compare with |: | \(check)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    scenarios = tuple(s for s in SCENARIOS if s.name in CASES)
    with Lab(scenarios, workdir=str(tmp_path_factory.mktemp("lab")), timeout=3.0) as lab:
        lab.config_path = lab.write_config()
        yield lab


def _on_loopback(command: str) -> None:
    if command.startswith("dig"):
        assert re.search(r"@127\.\d+\.\d+\.\d+ ", command), command
    elif command.startswith("curl"):
        assert re.search(r"--resolve \S+:\d+:127\.\d+\.\d+\.\d+ ", command), command
    else:
        assert re.search(r"-connect 127\.\d+\.\d+\.\d+:\d+ ", command), command


@pytest.mark.parametrize("name", CASES)
def test_the_hint_runs_as_pasted(lab, name):
    for binary in ("dig", "curl", "openssl"):
        tool(binary)
    done = subprocess.run([sys.executable, "-m", "prober", "check", f"{name}.lab.test", "--config",
                           lab.config_path, "--json"], capture_output=True, text=True, timeout=60)
    hint = json.loads(done.stdout)["verdict"]["hint"]
    commands = [c for c in _COMMAND.findall(hint) if "+trace" not in c]
    assert commands, hint
    for command in commands:
        assert "<" not in command.replace("</dev/null", ""), f"a placeholder left in {command!r}"
        _on_loopback(command)
        run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=20)
        assert run.returncode == 0, f"{command}: {run.stderr[-500:]}"
    first = subprocess.run(["bash", "-c", commands[0]], capture_output=True, text=True, timeout=20)
    assert re.search(CASES[name], first.stdout + first.stderr), f"{commands[0]}: {first.stdout[-800:]}"
