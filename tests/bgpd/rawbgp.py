"""A hostile BGP client for the reliability suite: hand-written BGP messages (RFC 4271), a raw
TCP peer that sends them from inside a network namespace, a listener that never answers OPEN,
and what a process uses (memory, file descriptors, threads) to show nothing leaks. For tests
only: Calyx itself never writes BGP bytes (ExaBGP does).
"""
from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Callable

from felix.netnsthread import call_in_netns

from bgpdtest_support import wait_for

RAW_AS = 65001


MARKER = b"\xff" * 16
OPEN, UPDATE, NOTIFICATION, KEEPALIVE = 1, 2, 3, 4


def bgp_message(kind: int, body: bytes = b"") -> bytes:
    return MARKER + struct.pack("!HB", 19 + len(body), kind) + body


def bgp_open(asn: int, router_id: str, hold: int = 90, restart_time: int | None = None) -> bytes:
    def capability(code: int, value: bytes) -> bytes:
        return bytes([code, len(value)]) + value
    caps = capability(1, struct.pack("!HBB", 1, 0, 1)) + capability(65, struct.pack("!I", asn))
    if restart_time is not None:
        caps += capability(64, struct.pack("!H", restart_time & 0x0FFF))
    params = bytes([2, len(caps)]) + caps
    return bgp_message(OPEN, struct.pack("!BHH4sB", 4, asn if asn < 65536 else 23456, hold,
                                         IPv4Address(router_id).packed, len(params)) + params)


def nlri(prefixes: list[str]) -> bytes:
    out = b""
    for p in map(IPv4Network, prefixes):
        out += bytes([p.prefixlen]) + p.network_address.packed[:(p.prefixlen + 7) // 8]
    return out


def bgp_update(prefixes: list[str], next_hop: str, as_path: tuple[int, ...]) -> bytes:
    def attribute(code: int, value: bytes) -> bytes:
        return bytes([0x40, code, len(value)]) + value
    path = bytes([2, len(as_path)]) + b"".join(struct.pack("!I", a) for a in as_path)
    attrs = attribute(1, b"\x00") + attribute(2, path) + attribute(3, IPv4Address(next_hop).packed)
    return bgp_message(UPDATE, struct.pack("!H", 0) + struct.pack("!H", len(attrs)) + attrs + nlri(prefixes))


def bgp_withdraw(prefixes: list[str]) -> bytes:
    """An UPDATE withdrawing ``prefixes``."""
    withdrawn = nlri(prefixes)
    return bgp_message(UPDATE, struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", 0))


END_OF_RIB = bgp_message(UPDATE, struct.pack("!HH", 0, 0))


def attribute_length_overrun(prefixes: list[str]) -> bytes:
    """An UPDATE whose ORIGIN claims 4 bytes where the attribute section holds 1: RFC 7606
    section 4 has the whole UPDATE treated as a withdrawal of its NLRI, the session kept."""
    return bgp_message(UPDATE, struct.pack("!HH", 0, 4) + bytes([0x40, 1, 4, 0]) + nlri(prefixes))


def total_attribute_length_overrun(prefixes: list[str]) -> bytes:
    """An UPDATE whose Total Path Attribute Length runs past the message: RFC 4271 6.3 and
    RFC 7606 section 4 answer a Malformed Attribute List NOTIFICATION (3/1), session reset."""
    return bgp_message(UPDATE, struct.pack("!HH", 0, 200) + bytes([0x40, 1, 1, 0]) + nlri(prefixes))


class RawPeer:
    """One TCP connection from ``source`` (inside namespace ``ns``) to a BGP speaker."""

    def __init__(self, ns: str, source: str, target: str, timeout: float = 10.0) -> None:
        def connect() -> socket.socket:
            return socket.create_connection((target, 179), timeout=timeout, source_address=(source, 0))
        self.sock = call_in_netns(ns, connect)
        self.sock.settimeout(timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> tuple[int, bytes] | None:
        """The next message (type, body), or None once the speaker closed the connection."""
        try:
            head = self._exactly(19)
            if head is None:
                return None
            length, kind = struct.unpack("!HB", head[16:19])
            body = self._exactly(length - 19)
            return None if body is None else (kind, body)
        except ConnectionResetError:
            return None

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def read_until_closed(self) -> list[tuple[int, bytes]]:
        """Every message until the speaker closes the connection."""
        seen = []
        while (m := self.read()) is not None:
            seen.append(m)
        return seen

    def establish(self, asn: int, router_id: str, restart_time: int | None = None) -> bool:
        """OPEN, KEEPALIVE both ways; False when the speaker refused (NOTIFICATION or close)."""
        self.send(bgp_open(asn, router_id, restart_time=restart_time))
        got = self.read()
        if got is None or got[0] != OPEN:
            return False
        self.send(bgp_message(KEEPALIVE))
        while (got := self.read()) is not None:
            if got[0] == KEEPALIVE:
                return True
            if got[0] == NOTIFICATION:
                return False
        return False

    def reset(self) -> None:
        """Close with a TCP RST (the session killed, not closed)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def raw_session(ns: str, source: str, target: str, asn: int = RAW_AS, restart_time: int | None = None,
                timeout: float = 60.0) -> RawPeer:
    """A raw peer with an Established session, retried until the speaker accepts one (ExaBGP
    not listening yet, or still holding the previous session)."""
    def attempt() -> RawPeer | None:
        try:
            peer = RawPeer(ns, source, target)
        except OSError:
            return None
        try:
            if peer.establish(asn, source, restart_time=restart_time):
                return peer
        except OSError:
            pass
        peer.close()
        return None
    return wait_for(attempt, timeout=timeout, interval=0.1, what=f"a raw BGP session from {source} to {target}")


def reset_storm(connect: Callable[[], "RawPeer"], prefixes: list[str], next_hop: str, asn: int, resets: int,
                rng: random.Random) -> tuple[RawPeer, list[str], float]:
    """``resets`` sessions from ``connect()`` (one announcing graceful restart), each announcing a
    random subset of ``prefixes`` (with End-of-RIB half the time) and killed with a TCP RST up to
    0.2 s later; then a last session announcing 7 of them and End-of-RIB. The last session (open),
    what it announced, and how long the resets took."""
    began = time.monotonic()
    for _ in range(resets):
        peer = connect()
        sent = rng.sample(prefixes, rng.randrange(1, len(prefixes)))
        peer.send(bgp_update(sent, next_hop, (asn,)) + (END_OF_RIB if rng.random() < 0.5 else b""))
        time.sleep(rng.uniform(0.0, 0.2))
        peer.reset()
    took = time.monotonic() - began
    final = sorted(rng.sample(prefixes, 7))
    peer = connect()
    peer.send(bgp_update(final, next_hop, (asn,)) + END_OF_RIB)
    return peer, final, took


# --- what a process uses --------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    rss_kib: int
    fds: int
    threads: int

    @classmethod
    def of(cls, pid: int) -> "Usage":
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return cls(rss_kib=int(fields["VmRSS"].split()[0]), fds=len(os.listdir(f"/proc/{pid}/fd")),
                   threads=int(fields["Threads"]))


def usage_detail(name: str, before: Usage, after: Usage) -> str:
    return (f"{name} RSS {before.rss_kib / 1024:.1f}->{after.rss_kib / 1024:.1f} MiB, "
            f"fds {before.fds}->{after.fds}, threads {before.threads}->{after.threads}")


def notifications(messages: list[tuple[int, bytes]]) -> list[tuple[int, int]]:
    return [(body[0], body[1]) for kind, body in messages if kind == NOTIFICATION and len(body) >= 2]


def connected(ns: str, source: str, target: str) -> RawPeer | None:
    try:
        return RawPeer(ns, source, target)
    except OSError:
        return None


class SilentListener:
    """A TCP listener on port 179 in a namespace that accepts every connection, reads what
    arrives, and never answers (a BGP peer stuck before its OPEN)."""

    def __init__(self, ns: str, address: str) -> None:
        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, 179))
            s.listen(16)
            return s
        self.sock = call_in_netns(ns, listen)
        self.sock.settimeout(0.2)
        self.accepted: list[socket.socket] = []
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silent-bgp-peer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.setblocking(False)
                self.accepted.append(conn)
            except (TimeoutError, socket.timeout):
                pass
            for conn in list(self.accepted):
                try:
                    self.received += len(conn.recv(65536))
                except (BlockingIOError, OSError):
                    pass

    @property
    def open_sockets(self) -> int:
        return 1 + sum(1 for c in self.accepted if c.fileno() >= 0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


