"""Reachability probe, run inside a node's namespace: for each address read from stdin, send
UDP datagrams to its port 9 until the ICMP port-unreachable answer comes back (the packet
crossed the network, reached the pod's own kernel and the answer found its way back), then
print ``address monotonic-time`` (CLOCK_MONOTONIC is the same in every process of the machine).

    python bench/probe.py [--interval S] [--timeout S]   # stdin: one IPv4 address per line
"""
from __future__ import annotations

import argparse
import select
import socket
import sys
import time


def reached(address: str, interval: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((address, 9))
        while time.monotonic() < deadline:
            try:
                sock.send(b"probe")
            except ConnectionRefusedError:
                return time.monotonic()
            except OSError:
                pass                         # no route or unreachable for now: keep trying
            ready, _, _ = select.select([sock], [], [], interval)
            if ready:
                try:
                    sock.recv(64)
                except ConnectionRefusedError:
                    return time.monotonic()
                except OSError:
                    pass
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.002)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    print("ready", flush=True)
    for line in sys.stdin:
        address = line.strip()
        if not address:
            continue
        when = reached(address, args.interval, args.timeout)
        print(f"{address} {when if when is not None else 'timeout'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
