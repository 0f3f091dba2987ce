"""Inside a network namespace of its own (loopback only): the lab, the unit's command lines run by
hardened.sh, and a scrape of the service, as Prometheus would.  Prints one JSON document.

    drive_unit.py REPO OPT_UPPER ETC_UPPER WORK UID EXECSTARTPRE EXECSTART ENVIRONMENT SECONDS

Run by tests/test_vm_deploy.py; every address here is on this namespace's loopback.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.read().decode()
    except OSError:
        return None


def _service_pid(uid: int) -> int | None:
    """The prober serve process: the one running as the unit's dynamic UID."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            cmdline = (status.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        uids = next(line.split()[1:] for line in text.splitlines() if line.startswith("Uid:"))
        if uids[0] == str(uid) and b"serve" in cmdline:
            return int(status.parent.name)
    return None


def _observe(pid: int) -> dict[str, object]:
    """What the kernel says of the running service: identity, privileges, limits, mounts."""
    proc = Path(f"/proc/{pid}")
    status = dict(line.split(":\t", 1) for line in proc.joinpath("status").read_text().splitlines() if ":\t" in line)
    mounts = {}
    for line in proc.joinpath("mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        mounts[fields[4]] = {"options": fields[5].split(","), "fstype": fields[separator + 1],
                             "super": fields[separator + 3].split(",")}
    limits = next(line.split()[3:5] for line in proc.joinpath("limits").read_text().splitlines()
                  if line.startswith("Max open files"))
    return {"uid": status["Uid"].split(), "gid": status["Gid"].split(), "groups": status["Groups"].split(),
            "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
            "cap_amb": status["CapAmb"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
            "umask": status.get("Umask", "").strip(), "nofile": limits, "mounts": mounts}


def main() -> int:
    repo, opt_upper, etc_upper, work, uid, pre, start, environment, seconds = sys.argv[1:10]
    sys.path.insert(0, repo)
    from prober.lab.scenarios import SCENARIOS, Lab

    result: dict[str, object] = {}
    wanted = tuple(s for s in SCENARIOS if s.name in ("healthy", "expired"))
    with Lab(wanted, workdir=f"{work}/lab", timeout=3.0, interval=5.0) as lab:
        config_dir = Path(etc_upper) / "prober"
        config_dir.mkdir(parents=True, exist_ok=True)
        config = lab.config()
        (config_dir / "lab-root.pem").write_text(Path(lab.bundle).read_text())
        config["defaults"]["ca_file"] = "lab-root.pem"
        (config_dir / "probes.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for path in (config_dir, *config_dir.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        service = subprocess.Popen(["bash", f"{repo}/tests/vm/hardened.sh", opt_upper, etc_upper, work, uid, pre,
                                    start, environment], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + float(seconds)
            metrics = None
            while time.monotonic() < deadline and service.poll() is None:
                body = _get("http://127.0.0.1:9716/metrics")
                if body and all(f'prober_probe_success{{hostname="{s.hostname}"' in body for s in wanted):
                    metrics = body
                    pid = _service_pid(int(uid))
                    result["process"] = _observe(pid) if pid else None
                    result["ready"] = _get("http://127.0.0.1:9716/-/ready")
                    break
                time.sleep(0.3)
            result["metrics"] = metrics
            result["exited"] = service.poll()
        finally:
            # The service first (PID 1 of its namespace: the kernel then ends the rest), then its launcher.
            pid = _service_pid(int(uid))
            if pid:
                os.kill(pid, signal.SIGKILL)
            service.kill()
            out, _ = service.communicate(timeout=30)
    result["output"] = out
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
