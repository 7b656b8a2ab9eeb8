"""The probe packet of ``calyxctl trace --probe``, as bytes: building the ICMP echo request a pod
sends, and recognising it (or the echo reply) in a captured frame, plain or inside IPIP or VXLAN.

Pure code: bytes in, frozen values out; the capture and the sending are :mod:`felix.probecapture`
and :mod:`felix.probesend`.

A probe is an ICMP echo whose payload is ``b"calyx-probe "`` followed by the 8 bytes of its id
(16 hex digits on the wire of the HTTP endpoints); the reply echoes the payload, so it is
recognised too. A captured frame is read according to its link type (the ``sll_hatype`` of an
AF_PACKET socket): devices with an Ethernet header (veths, ``eth0``, ``vxlan.calico``, ``lo``)
or none at all (``tunl0`` and other IP tunnels: the frame starts at the IPv4 header).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

MAGIC = b"calyx-probe "
ID_BYTES = 8
PAYLOAD_LEN = len(MAGIC) + ID_BYTES

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
KINDS = {ICMP_ECHO_REQUEST: "echo-request", ICMP_ECHO_REPLY: "echo-reply"}

PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_UDP = 17
VXLAN_PORT = 4789
VXLAN_FLAG_VNI = 0x08

ETH_P_IP = 0x0800
ETH_VLAN_TAGS = (0x8100, 0x88A8)

# sll_hatype values (linux/if_arp.h)
ARPHRD_ETHER = 1
ARPHRD_RAWIP = 519
ARPHRD_TUNNEL = 768         # ipip (tunl0)
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE        # tun, wireguard
ETHERNET_LINKS = frozenset({ARPHRD_ETHER, ARPHRD_LOOPBACK})
RAW_IP_LINKS = frozenset({ARPHRD_TUNNEL, ARPHRD_NONE, ARPHRD_RAWIP})

ENCAP_NONE, ENCAP_IPIP, ENCAP_VXLAN = "none", "ipip", "vxlan"


def parse_probe_id(text: str) -> bytes:
    """The 8 bytes of a probe id given as 16 hex digits; ValueError otherwise."""
    raw = bytes.fromhex(text)
    if len(raw) != ID_BYTES:
        raise ValueError(f"a probe id is {2 * ID_BYTES} hex digits, not {len(text)}")
    return raw


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(probe_id: bytes, ident: int, seq: int = 1) -> bytes:
    """The ICMP message (header and payload, no IP header) of the probe ``probe_id``: what a raw
    ICMP socket sends, the kernel adding the IP header."""
    if len(probe_id) != ID_BYTES:
        raise ValueError(f"probe id: {ID_BYTES} bytes, not {len(probe_id)}")
    payload = MAGIC + probe_id
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), ident & 0xFFFF,
                       seq & 0xFFFF) + payload


@dataclass(frozen=True)
class ProbePacket:
    """A probe recognised in a frame: the ICMP echo's own addresses, whether it is the request or
    the reply, and the encapsulation it travelled in (with the outer addresses)."""

    probe_id: bytes
    kind: str                               # "echo-request" or "echo-reply"
    src: IPv4Address
    dst: IPv4Address
    encap: str = ENCAP_NONE                 # "none", "ipip" or "vxlan"
    outer_src: IPv4Address | None = None
    outer_dst: IPv4Address | None = None


@dataclass(frozen=True)
class Sighting:
    """One probe packet seen by a capture: on which device, in which direction ("in" or "out",
    seen from this network namespace), and ``at`` seconds after the capture started."""

    device: str
    direction: str
    packet: ProbePacket
    at: float

    def to_json(self) -> dict[str, Any]:
        p = self.packet
        return {"device": self.device, "direction": self.direction, "kind": p.kind, "encap": p.encap,
                "outer_src": str(p.outer_src) if p.outer_src else None,
                "outer_dst": str(p.outer_dst) if p.outer_dst else None,
                "src": str(p.src), "dst": str(p.dst), "at": round(self.at, 6)}


def recognise(frame: bytes, link_type: int, probe_id: bytes | None = None) -> ProbePacket | None:
    """The probe carried by ``frame`` (captured on a device of ``link_type``), or None when the
    frame is not a probe (or not the probe ``probe_id``, when given)."""
    if MAGIC not in frame:          # cheap: almost every frame of a busy node stops here
        return None
    if link_type in ETHERNET_LINKS:
        ip = _ethernet_payload(frame)
    elif link_type in RAW_IP_LINKS:
        ip = frame
    else:
        return None
    if ip is None:
        return None
    packet = _ipv4(ip, allow_encap=True)
    if packet is None or (probe_id is not None and packet.probe_id != probe_id):
        return None
    return packet


def _ethernet_payload(frame: bytes) -> bytes | None:
    """The IPv4 packet in an Ethernet frame (one or two VLAN tags skipped), else None."""
    offset = 12
    for _ in range(3):
        if len(frame) < offset + 2:
            return None
        (ethertype,) = struct.unpack_from("!H", frame, offset)
        if ethertype in ETH_VLAN_TAGS:
            offset += 4
            continue
        return frame[offset + 2:] if ethertype == ETH_P_IP else None
    return None


def _ipv4(data: bytes, allow_encap: bool) -> ProbePacket | None:
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    (total_len, frag) = struct.unpack_from("!H2xH", data, 2)
    if ihl < 20 or len(data) < ihl or frag & 0x1FFF:
        return None              # a later fragment holds no header of ours
    proto = data[9]
    src, dst = IPv4Address(data[12:16]), IPv4Address(data[16:20])
    body = data[ihl:total_len] if ihl <= total_len <= len(data) else data[ihl:]
    if proto == PROTO_ICMP:
        return _icmp(body, src, dst)
    if not allow_encap:
        return None
    if proto == PROTO_IPIP:
        inner = _ipv4(body, allow_encap=False)
        return _wrapped(inner, ENCAP_IPIP, src, dst)
    if proto == PROTO_UDP:
        return _wrapped(_vxlan(body), ENCAP_VXLAN, src, dst)
    return None


def _wrapped(inner: ProbePacket | None, encap: str, src: IPv4Address, dst: IPv4Address) -> ProbePacket | None:
    if inner is None:
        return None
    return ProbePacket(inner.probe_id, inner.kind, inner.src, inner.dst, encap, src, dst)


def _vxlan(udp: bytes) -> ProbePacket | None:
    """The probe inside a UDP datagram to the VXLAN port: VXLAN header, inner Ethernet, IPv4."""
    if len(udp) < 16:
        return None
    (dport,) = struct.unpack_from("!H", udp, 2)
    if dport != VXLAN_PORT or not udp[8] & VXLAN_FLAG_VNI:
        return None
    inner = _ethernet_payload(udp[16:])
    return _ipv4(inner, allow_encap=False) if inner is not None else None


def _icmp(body: bytes, src: IPv4Address, dst: IPv4Address) -> ProbePacket | None:
    if len(body) < 8 + PAYLOAD_LEN:
        return None
    kind = KINDS.get(body[0])
    if kind is None or body[1] != 0 or body[8:8 + len(MAGIC)] != MAGIC:
        return None
    return ProbePacket(bytes(body[8 + len(MAGIC):8 + PAYLOAD_LEN]), kind, src, dst)
