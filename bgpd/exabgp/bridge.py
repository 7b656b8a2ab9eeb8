"""The API process ExaBGP runs: relays between ExaBGP's pipes and bgpd's Unix socket.

ExaBGP writes JSON messages to this program's stdin and reads commands from its stdout.
bgpd listens on a Unix socket; this program connects to it and copies lines both ways.
stdin is drained on its own thread, because ExaBGP blocks when that pipe is full. When
bgpd goes away, the program exits (ExaBGP then stops or respawns it). Kept to the standard
library so that ExaBGP starts it quickly.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 30.0


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stdin_to_socket(sock: socket.socket) -> None:
    stdin = sys.stdin.buffer
    try:
        while True:
            line = stdin.readline()
            if not line:
                break
            sock.sendall(line)
    except OSError:
        pass
    os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bgpd.exabgp.bridge SOCKET", file=sys.stderr)
        return 2
    sock = _connect(argv[0])
    threading.Thread(target=_stdin_to_socket, args=(sock,), daemon=True).start()
    out = sys.stdout.buffer
    reader = sock.makefile("rb")
    for line in reader:
        out.write(line)
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
