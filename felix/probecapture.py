"""Watching for one probe of ``calyxctl trace --probe`` on every device of a network namespace
(felix's: the node's) for a bounded time, with an AF_PACKET socket: every sighting of the probe
(device, direction, the packet as :mod:`felix.probepackets` recognises it, when).

An AF_PACKET socket bound to no device sees each frame once per device it crosses, incoming
and outgoing, so one echo is seen on a pod's veth, on ``vxlan.calico`` or ``tunl0``, and on the
uplink. A frame seen again on the same device in the same direction, carrying the same packet,
is a duplicate and is left out; the first time it was seen is kept. The socket needs
CAP_NET_RAW.
"""
from __future__ import annotations

import socket
import time
from typing import Callable

from felix.netnsthread import call_in_netns
from felix.probepackets import ProbePacket, Sighting, recognise

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_SECONDS = 5.0
SNAPLEN = 512               # enough for Ethernet + IPv4 + UDP + VXLAN + Ethernet + IPv4 + the echo
RCVBUF = 4 << 20


def open_packet_socket(netns: str | None = None) -> socket.socket:
    """An AF_PACKET socket receiving every frame of every device of ``netns`` (a path or a name
    under /run/netns; None: the current namespace). From the moment it returns, frames queue."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except OSError:
            pass            # the default buffer only makes drops likelier on a busy node
        return sock
    return make() if netns is None else call_in_netns(netns, make)


def watch(sock: socket.socket, probe_id: bytes, seconds: float,
          clock: Callable[[], float] = time.monotonic) -> list[Sighting]:
    """Sightings of the probe ``probe_id`` on ``sock`` (see :func:`open_packet_socket`) for
    ``seconds`` (at most :data:`MAX_SECONDS`), in the order seen; ``at`` counts from the call.

    The device name comes with each frame: Python resolves the frame's ifindex on the socket
    itself, so in the socket's namespace, whichever thread reads it."""
    seconds = min(seconds, MAX_SECONDS)
    start = clock()
    deadline = start + seconds
    seen: set[tuple[str, str, ProbePacket]] = set()
    sightings: list[Sighting] = []
    while (remaining := deadline - clock()) > 0:
        sock.settimeout(remaining)
        try:
            frame, address = sock.recvfrom(SNAPLEN)
        except (socket.timeout, InterruptedError):
            continue
        packet = recognise(frame, address[3], probe_id)
        if packet is None:
            continue
        device = address[0] or "?"
        direction = "out" if address[2] == PACKET_OUTGOING else "in"
        key = (device, direction, packet)
        if key not in seen:
            seen.add(key)
            sightings.append(Sighting(device, direction, packet, clock() - start))
    return sightings


def capture(probe_id: bytes, seconds: float, on_armed: Callable[[], None] = lambda: None,
            netns: str | None = None) -> list[Sighting]:
    """Sightings of ``probe_id`` in ``netns`` (None: the current one) during ``seconds``;
    ``on_armed`` is called once the socket receives, before the waiting starts."""
    with open_packet_socket(netns) as sock:
        on_armed()
        return watch(sock, probe_id, seconds)
