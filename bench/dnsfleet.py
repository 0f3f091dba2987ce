"""The fleet's DNS: three lab DnsServers (three "resolvers") in a process of their own.

    python bench/dnsfleet.py --n 1000 --answers 127.0.1.1,127.0.1.2 --listen 127.0.0.61,127.0.0.62,127.0.0.63

Name i.fleet.test answers the i-th address of --answers (round robin).  Once every
server listens, one JSON line goes to stdout: {"resolvers": ["127.0.0.61:PORT", ...]}.
It runs until stdin closes or SIGTERM, and serves loopback only.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from common import Discard
from prober.lab.dnsserver import DnsServer
from prober.lab.runner import LabLoop

DOMAIN = "fleet.test"


def _loopback(addresses: list[str]) -> list[str]:
    for a in addresses:
        if not a.startswith("127."):
            raise SystemExit(f"dnsfleet: {a} is not a loopback address; the bench stays on 127.0.0.0/8")
    return addresses


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--answers", required=True, help="comma-separated A records to hand out")
    p.add_argument("--listen", required=True, help="comma-separated addresses, one server each")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    answers = _loopback(args.answers.split(","))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LabLoop() as lab:
        servers = []
        for host in _loopback(args.listen.split(",")):
            server = lab.start(DnsServer(host, args.port))
            server.add_zone(DOMAIN)
            for i in range(args.n):
                server.set(f"{i}.{DOMAIN}", "A", [answers[i % len(answers)]], ttl=60)
            server.queries = Discard()  # a long run must not keep every query in memory
            servers.append(server)
        print(json.dumps({"resolvers": [s.address for s in servers]}), flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
