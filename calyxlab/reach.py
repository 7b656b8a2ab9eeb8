"""Reachability between the lab's pods, for NetworkPolicy truth tables: a server answering on
several TCP and UDP ports at once, and a prober that tries many targets in parallel and says
which answered.

``python -m calyxlab.reach serve --tcp 80,81 --udp 80`` (in a pod) accepts every TCP connection
with one line and echoes every UDP datagram. ``python -m calyxlab.reach probe [--timeout S]
tcp:10.244.0.5:80 udp:10.244.0.5:80 ...`` prints one JSON object: target -> true when it
answered within the timeout (a connection refused or dropped, or no echo, is false).
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor


def _tcp_server(port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"ok\n")


def _udp_server(port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", port))
    while True:
        data, peer = server.recvfrom(2048)
        server.sendto(data, peer)


def answers(target: str, timeout: float) -> bool:
    """Whether ``proto:address:port`` answers (pure but for the socket)."""
    protocol, address, port = target.split(":")
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(timeout)
        try:
            if protocol == "tcp":
                sock.connect((address, int(port)))
                return sock.recv(16).startswith(b"ok")
            sock.sendto(b"ping", (address, int(port)))
            return sock.recv(16) == b"ping"
        except OSError:
            return False


def parse_ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calyxlab.reach", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    serve = verbs.add_parser("serve")
    serve.add_argument("--tcp", type=parse_ports, default=[])
    serve.add_argument("--udp", type=parse_ports, default=[])
    probe = verbs.add_parser("probe")
    probe.add_argument("--timeout", type=float, default=1.0)
    probe.add_argument("targets", nargs="+")
    args = parser.parse_args(argv)
    if args.verb == "serve":
        threads = [threading.Thread(target=_tcp_server, args=(p,), daemon=True) for p in args.tcp]
        threads += [threading.Thread(target=_udp_server, args=(p,), daemon=True) for p in args.udp]
        for t in threads:
            t.start()
        print(f"serving tcp {args.tcp} udp {args.udp}", flush=True)
        for t in threads:
            t.join()
        return 0
    with ThreadPoolExecutor(max_workers=len(args.targets)) as pool:
        results = dict(zip(args.targets, pool.map(lambda t: answers(t, args.timeout), args.targets)))
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
