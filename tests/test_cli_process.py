"""`prober check` as a shell, Nagios or a person at a terminal runs it: real subprocesses against the lab.

A closed pipe, SIGINT, a pseudo-terminal, the Monitoring Plugins status line and its perfdata
(checked against the grammar of the Monitoring Plugins development guidelines), flag errors
and the help text.
"""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prober.cli import build_parser
from prober.lab.scenarios import Lab
from waiting import sigint_default

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": ""}
ENV.pop("NO_COLOR")
PROBER = [sys.executable, "-m", "prober"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The guidelines' perfdata: 'label'=value[UOM];[warn];[crit];[min];[max], space separated.  Value, min
# and max are [-0-9.]; warn and crit are threshold ranges ([@][start:][end], start may be ~).
_NUM = r"-?[0-9]+(?:\.[0-9]+)?"
_RANGE = rf"@?(?:(?:~|{_NUM})?:)?(?:{_NUM})?"
_UOM = r"(?:s|ms|us|%|B|KB|MB|GB|TB|c)?"
PERF_ITEM = re.compile(rf"^(?:'[^'=]+'|[^'= ]+)={_NUM}{_UOM}(?:;{_RANGE}(?:;{_RANGE}(?:;(?:{_NUM})?(?:;(?:{_NUM})?)?)?)?)?$")
STATUS_LINE = re.compile(r"^(OK|WARNING|CRITICAL|UNKNOWN) - ([^|]+) \| (.+)$")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(workdir=str(tmp_path_factory.mktemp("lab")), timeout=3.0) as lab:
        lab.config_path = lab.write_config()
        yield lab


def prober(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*PROBER, *argv], capture_output=True, text=True, env=ENV, timeout=60, **kw)


def perf(line: str) -> dict[str, str]:
    m = STATUS_LINE.match(line)
    assert m, line
    items = m.group(3).split(" ")
    for item in items:
        assert PERF_ITEM.match(item), f"perfdata item {item!r} breaks the guidelines' grammar"
    return {i.split("=", 1)[0]: i.split("=", 1)[1] for i in items}


def test_one_host_status_line_carries_the_verdict_and_perfdata(lab):
    done = prober("check", "wrong-host.lab.test", "--config", lab.config_path)
    assert done.returncode == 2, done.stderr
    first = done.stdout.splitlines()[0]
    status, message = STATUS_LINE.match(first).groups()[:2]
    assert status == "CRITICAL"
    assert message.startswith("TLS: the certificate served for wrong-host.lab.test covers only www.other.test")
    data = perf(first)
    assert {"dns", "connect", "tls", "first_byte", "days_left"} <= set(data)
    for phase in ("dns", "connect", "tls", "first_byte"):
        value, _, rest = data[phase].partition("s")
        assert 0 <= float(value) < 3 and rest == ";;;0"  # seconds, minimum 0
    days, warn, crit, low, high = data["days_left"].split(";")
    assert 89 < float(days) <= 90 and (warn, crit, low, high) == ("30", "7", "0", "")
    assert done.stdout.splitlines()[1].startswith("CRITICAL wrong-host.lab.test")  # the detail follows


def test_healthy_host_is_ok_with_its_days_left(lab):
    done = prober("check", "healthy.lab.test", "--config", lab.config_path)
    assert done.returncode == 0
    first = done.stdout.splitlines()[0]
    assert first.startswith("OK - healthy.lab.test: DNS, TLS and HTTP all answer as the contract says | ")
    assert perf(first)["days_left"].startswith(("89.", "90.0"))


def test_several_hosts_give_a_summary_first_line(lab):
    hosts = ["healthy.lab.test", "no-hsts.lab.test", "expired.lab.test", "wrong-host.lab.test"]
    done = prober("check", *hosts, "--config", lab.config_path)
    assert done.returncode == 2
    first = done.stdout.splitlines()[0]
    assert first.startswith("CRITICAL - 4 endpoints: 2 critical, 1 warning, 1 ok (")
    assert perf(first) == {"critical": "2;;;0;4", "unknown": "0;;;0;4", "warning": "1;;;0;4", "ok": "1;;;0;4"}
    for host in hosts:  # each host's detail follows
        assert re.search(rf"^(OK|WARNING|CRITICAL) {re.escape(host)}  \(", done.stdout, re.M), host


def _closed_pipe(argv: list[str]) -> tuple[int, str]:
    """Run with stdout a pipe whose reader is already gone, as after `| head -1` has exited."""
    proc = subprocess.Popen([*PROBER, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
def test_a_closed_pipe_keeps_the_nagios_code_and_prints_no_traceback(lab, json_flag):
    hosts = ["healthy.lab.test", "expired.lab.test", "no-hsts.lab.test"]
    code, err = _closed_pipe(["check", *hosts, "--config", lab.config_path, *json_flag])
    assert (code, err) == (2, "")


def test_head_minus_one_reads_the_status_line(lab):
    shell = (f"{' '.join(PROBER)} check healthy.lab.test expired.lab.test --config {lab.config_path} | head -1;"
             " echo rc=${PIPESTATUS[0]}")
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=ENV, timeout=60)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CRITICAL - 2 endpoints: 1 critical, 1 ok (expired.lab.test) | ")
    assert lines[1] == "rc=2" and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    shell = (f"{' '.join(PROBER)} check healthy.lab.test expired.lab.test --config {lab.config_path} --json"
             " | head -c 10; s=${PIPESTATUS[0]}; echo; echo rc=$s")
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.stdout.splitlines()[-1] == "rc=2" and done.stderr == ""


def test_a_slow_reader_still_gets_every_byte_of_a_large_report(lab):
    """`prober check` ends without tearing the interpreter down: all it wrote must still arrive whole,
    even when the report is larger than the pipe's buffer and the reader is slow."""
    hosts = [s.hostname for s in lab.scenarios.values()]
    proc = subprocess.Popen([*PROBER, "check", *hosts, "--config", lab.config_path, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    chunks = []
    while chunk := proc.stdout.read(16 * 1024):
        chunks.append(chunk)
        time.sleep(0.01)
    code, err = proc.wait(timeout=60), proc.stderr.read()
    data = b"".join(chunks)
    assert len(data) > 64 * 1024, len(data)  # more than a pipe holds: the writer had to wait for the reader
    reports = json.loads(data)  # a list: one report per host
    assert sorted(r["hostname"] for r in reports) == sorted(hosts)
    assert code == 2 and err == b""


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
def test_output_that_cannot_be_written_is_one_line_and_unknown(lab, json_flag):
    """A full disk under stdout: the report is lost, so the result is UNKNOWN, said in one line."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([*PROBER, "check", "healthy.lab.test", "--config", lab.config_path, *json_flag],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=60)
    assert done.returncode == 3
    assert done.stderr.splitlines() == ["prober: could not write the output: No space left on device"]


def test_check_timeout_is_bounded_by_sanity_not_by_interval(lab):
    done = prober("check", "healthy.lab.test", "--config", lab.config_path, "--timeout", "90s")
    assert done.returncode == 0, done.stderr  # the lab's interval is 60s
    done = prober("check", "healthy.lab.test", "--config", lab.config_path, "--timeout", "5h")
    assert done.returncode == 3 and done.stderr.startswith("prober: --timeout: must be at most 3600s")


def test_ctrl_c_exits_3_with_one_line():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a resolver that never answers
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        proc = subprocess.Popen([*PROBER, "check", "slow.lab.test", "--resolver", f"127.0.0.1:{port}",
                                 "--authoritative", "off", "--timeout", "60s"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                preexec_fn=sigint_default)
        silent.settimeout(30)
        silent.recvfrom(512)  # the probe is under way once its first query arrives
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        silent.close()
    assert proc.returncode == 3
    assert out == "" and err == "prober: interrupted (Ctrl-C) before a verdict\n"


def test_a_typo_gets_the_subcommands_usage_and_a_suggestion():
    for argv in (["check", "--jsn"], ["check", "api.lab.test", "--jsn"]):
        done = prober(*argv)
        assert done.returncode == 3 and done.stdout == ""
        assert done.stderr.startswith("usage: prober check ")
        assert done.stderr.splitlines()[-1] == "prober: error: unrecognized argument --jsn; did you mean --json?"
    done = prober("serve", "--confg", "x.yaml")
    assert done.stderr.startswith("usage: prober serve ") and "did you mean --config?" in done.stderr


@pytest.mark.parametrize("argv, flag", [
    (["--https-port", "70000"], "--https-port"),
    (["--http-port", "0"], "--http-port"),
    (["--timeout", "soon"], "--timeout"),
    (["--authoritative", "a:b:c"], "--authoritative"),
    (["--resolver", "127.0.0.1:99999"], "--resolver"),
    (["--health-path", "healthz"], "--health-path"),
])
def test_flag_errors_name_the_flag(argv, flag):
    done = prober("check", "api.lab.test", "--connect-to", "127.0.0.1", *argv)
    assert done.returncode == 3 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert flag in last and "key '" not in last and "Traceback" not in done.stderr, done.stderr


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, action.choices


def test_every_command_has_a_description_an_example_and_help_on_every_flag():
    parser, commands = _subparsers()
    assert "examples:" in (parser.epilog or "")
    for name, sub in commands.items():
        assert sub.description, name
        assert (sub.epilog or "").startswith("examples:") and f"prober {name}" in sub.epilog, name
        for action in sub._actions:
            assert action.help, f"prober {name}: {action.option_strings or action.dest} has no help"


def test_help_points_only_to_documents_that_exist():
    _, commands = _subparsers()
    for name in commands:
        text = prober(name, "--help").stdout
        for doc in re.findall(r"docs/[\w./-]+\w", text):
            assert (ROOT / doc).is_file(), f"prober {name} --help points to {doc}, which does not exist"


def _on_a_terminal(argv: list[str], columns: int = 100) -> str:
    """Run with stdout a pseudo-terminal, as at an interactive shell."""
    leader, follower = pty.openpty()
    env = {**ENV, "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen([*PROBER, *argv], stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_colour_on_a_terminal_keeps_the_columns_aligned(lab):
    argv = ["check", "stale-dns.lab.test", "--config", lab.config_path]
    coloured = _on_a_terminal(argv)
    plain = prober(*argv).stdout
    assert "\x1b[31m" in coloured  # red CRITICAL, by --color auto on a terminal
    assert "\x1b[" not in plain
    # Colour only wraps words: the layer lines' columns start where they do without it.
    heads = [re.match(r"  \[(dns |tls |http)\] [A-Z]+ +", l) for l in ANSI.sub("", coloured).splitlines()]
    plain_heads = [re.match(r"  \[(dns |tls |http)\] [A-Z]+ +", l) for l in plain.splitlines()]
    assert {m.end() for m in heads if m} == {m.end() for m in plain_heads if m} == {18}
    assert len([m for m in heads if m]) == 3
    assert "\x1b[" not in _on_a_terminal([*argv, "--color", "never"])


def test_messages_say_what_happened_in_words(lab):
    plain_port = str(lab.ports["no-redirect"][1])  # plain HTTP where TLS is expected
    done = prober("check", "no-redirect.lab.test", "--config", lab.config_path, "--https-port", plain_port)
    assert "the TLS port answers plain HTTP" in done.stdout and "WRONG_VERSION_NUMBER" not in done.stdout
    assert "redirect http://no-redirect.lab.test:" in done.stdout
    assert "200, no redirect (no Location header)" in done.stdout and "-> None" not in done.stdout


def test_a_closed_resolver_port_is_reported_at_once_not_as_a_timeout():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: the kernel answers ICMP port unreachable
    done = prober("check", "gone.lab.test", "--resolver", f"127.0.0.1:{port}", "--authoritative", "off",
                  "--timeout", "20s", "--json")
    doc = json.loads(done.stdout)
    (answer,) = doc["dns"]["resolvers"]
    assert answer["rcode"] == "ERROR" and answer["error"] == "the resolver's port is closed (ICMP port unreachable)"
    assert answer["latency_seconds"] < 5  # it did not wait for the 20 s budget
    assert "the resolver's port is closed (ICMP port unreachable)" in doc["verdict"]["message"]


def test_the_whole_lab_report_is_free_of_outside_citations(lab):
    from prober.lab.scenarios import SCENARIOS
    hosts = [s.hostname for s in SCENARIOS]
    text = prober("check", *hosts, "--config", lab.config_path).stdout
    assert len(text.splitlines()) > 5 * len(hosts)
    assert not re.search(r"\bseed\b", text, re.I)
    assert not re.search(r"\bseed\b", prober("check", *hosts, "--config", lab.config_path, "--json").stdout, re.I)


def test_no_hint_holds_a_pipe_that_would_start_perfdata():
    """A `|` on any line of a plugin's output starts performance data (the guidelines' multi-line format)."""
    from prober import hints
    from prober.model import CATALOGUE, Endpoint
    tailored = [{}] + [{"tls_termination": k} for k in hints._TERMINATION] + [
        {"certificate_source": k} for k in hints._CERT_SOURCE] + [{"dns_provider": k} for k in hints._DNS_PROVIDER]
    for fields in tailored:
        endpoint = Endpoint(hostname="api.lab.test", **fields)
        for code in CATALOGUE:
            assert "|" not in hints.hint_for(code, endpoint, "127.0.0.1:443"), (code, fields)


def test_a_closed_resolver_port_does_not_cost_the_other_resolvers_their_answer(lab):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    working = f"127.0.0.1:{lab.resolvers['internal'].port}"
    for _ in range(3):  # the ICMP error lands while the other queries are being sent
        done = prober("check", "healthy.lab.test", "--resolver", f"internal=127.0.0.1:{closed}",
                      "--resolver", f"internal={working}", "--authoritative", "off", "--timeout", "20s", "--json")
        rcodes = {a["server"]: a["rcode"] for a in json.loads(done.stdout)["dns"]["resolvers"]}
        assert rcodes == {f"127.0.0.1:{closed}": "ERROR", working: "NOERROR"}, rcodes
