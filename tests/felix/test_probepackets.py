"""felix.probepackets: the probe's echo request, and recognising it in crafted frames: plain,
inside IPIP, inside VXLAN, on Ethernet and raw-IP links, and frames that are not it."""
from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from felix.probepackets import (ARPHRD_ETHER, ARPHRD_NONE, ARPHRD_TUNNEL, ENCAP_IPIP, ENCAP_NONE, ENCAP_VXLAN,
                                MAGIC, ProbePacket, Sighting, checksum, echo_request, parse_probe_id,
                                recognise)

PROBE = bytes.fromhex("0123456789abcdef")
POD_A, POD_B = IPv4Address("10.244.1.2"), IPv4Address("10.244.2.3")
NODE_A, NODE_B = IPv4Address("10.0.1.11"), IPv4Address("10.0.2.13")


def ipv4(src: IPv4Address, dst: IPv4Address, proto: int, body: bytes, frag: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 7, frag, 64, proto, 0, src.packed, dst.packed)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + body


def ethernet(payload: bytes, ethertype: int = 0x0800, vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return b"\x02" * 6 + b"\x04" * 6 + tag + struct.pack("!H", ethertype) + payload


def vxlan(inner_frame: bytes, dport: int = 4789, flags: int = 0x08) -> bytes:
    header = struct.pack("!BxxxI", flags, 4096 << 8)
    body = header + inner_frame
    return struct.pack("!HHHH", 51000, dport, 8 + len(body), 0) + body


def echo(kind: int = 8, probe: bytes = PROBE) -> bytes:
    message = echo_request(probe, ident=0x0123)
    if kind == 0:
        message = b"\x00" + message[1:]
    return message


def test_the_echo_request_carries_the_magic_and_id_and_a_valid_checksum() -> None:
    message = echo_request(PROBE, ident=0x4321, seq=1)
    assert message[:2] == b"\x08\x00"
    assert struct.unpack("!HH", message[4:8]) == (0x4321, 1)
    assert message[8:] == MAGIC + PROBE
    assert checksum(message) == 0        # a correct checksum sums to zero


def test_probe_ids_are_16_hex_digits() -> None:
    assert parse_probe_id("0123456789abcdef") == PROBE
    for bad in ("0123", "zz23456789abcdef", "0123456789abcdef00"):
        with pytest.raises(ValueError):
            parse_probe_id(bad)


def test_a_plain_request_on_ethernet() -> None:
    frame = ethernet(ipv4(POD_A, POD_B, 1, echo()))
    assert recognise(frame, ARPHRD_ETHER) == ProbePacket(PROBE, "echo-request", POD_A, POD_B, ENCAP_NONE)
    assert recognise(frame, ARPHRD_ETHER, PROBE) is not None


def test_a_plain_reply_behind_a_vlan_tag() -> None:
    frame = ethernet(ipv4(POD_B, POD_A, 1, echo(kind=0)))
    tagged = ethernet(ipv4(POD_B, POD_A, 1, echo(kind=0)), vlan=12)
    assert recognise(frame, ARPHRD_ETHER) == ProbePacket(PROBE, "echo-reply", POD_B, POD_A)
    assert recognise(tagged, ARPHRD_ETHER) == ProbePacket(PROBE, "echo-reply", POD_B, POD_A)


def test_on_a_tunnel_device_the_frame_starts_at_the_ip_header() -> None:
    packet = ipv4(POD_A, POD_B, 1, echo())
    assert recognise(packet, ARPHRD_TUNNEL) == ProbePacket(PROBE, "echo-request", POD_A, POD_B)
    assert recognise(packet, ARPHRD_NONE) is not None
    assert recognise(packet, ARPHRD_ETHER) is None       # read as Ethernet it is garbage


def test_inside_ipip() -> None:
    outer = ipv4(NODE_A, NODE_B, 4, ipv4(POD_A, POD_B, 1, echo()))
    assert recognise(ethernet(outer), ARPHRD_ETHER) == ProbePacket(PROBE, "echo-request", POD_A, POD_B, ENCAP_IPIP,
                                                                    NODE_A, NODE_B)


def test_inside_vxlan() -> None:
    inner = ethernet(ipv4(POD_B, POD_A, 1, echo(kind=0)))
    frame = ethernet(ipv4(NODE_B, NODE_A, 17, vxlan(inner)))
    assert recognise(frame, ARPHRD_ETHER) == ProbePacket(PROBE, "echo-reply", POD_B, POD_A, ENCAP_VXLAN,
                                                         NODE_B, NODE_A)


@pytest.mark.parametrize("frame,link", [
    pytest.param(ethernet(ipv4(POD_A, POD_B, 1, echo(probe=bytes(8)))), ARPHRD_ETHER, id="another probe id"),
    pytest.param(ethernet(ipv4(POD_A, POD_B, 1, b"\x03\x01\0\0\0\0\0\0" + MAGIC + PROBE)), ARPHRD_ETHER,
                 id="icmp unreachable"),
    pytest.param(ethernet(ipv4(POD_A, POD_B, 1, b"\x08\x00\0\0\0\0\0\0" + b"x" * 20)), ARPHRD_ETHER,
                 id="an ordinary ping"),
    pytest.param(ethernet(ipv4(POD_A, POD_B, 17, struct.pack("!HHHH", 1, 53, 28, 0) + MAGIC + PROBE)),
                 ARPHRD_ETHER, id="udp carrying the magic"),
    pytest.param(ethernet(ipv4(NODE_A, NODE_B, 17, vxlan(ethernet(ipv4(POD_A, POD_B, 1, echo())), dport=8472))),
                 ARPHRD_ETHER, id="vxlan on another port"),
    pytest.param(ethernet(ipv4(NODE_A, NODE_B, 17, vxlan(ethernet(ipv4(POD_A, POD_B, 1, echo())), flags=0))),
                 ARPHRD_ETHER, id="vxlan without the VNI flag"),
    pytest.param(ethernet(ipv4(POD_A, POD_B, 1, echo(), frag=0x0005)), ARPHRD_ETHER, id="a later fragment"),
    pytest.param(ethernet(ipv4(POD_A, POD_B, 1, echo()), ethertype=0x86DD), ARPHRD_ETHER, id="not IPv4"),
    pytest.param(ethernet(ipv4(POD_A, POD_B, 1, echo()))[:40], ARPHRD_ETHER, id="truncated"),
    pytest.param(ethernet(ipv4(POD_A, POD_B, 1, echo())), 0x0200, id="unknown link type"),
    pytest.param(ethernet(ipv4(NODE_A, NODE_B, 4, ipv4(POD_A, POD_B, 4, ipv4(POD_A, POD_B, 1, echo())))),
                 ARPHRD_ETHER, id="ipip twice"),
    pytest.param(b"", ARPHRD_ETHER, id="empty"),
])
def test_frames_that_are_not_the_probe(frame: bytes, link: int) -> None:
    assert recognise(frame, link, PROBE) is None


def test_a_sighting_as_json() -> None:
    packet = ProbePacket(PROBE, "echo-request", POD_A, POD_B, ENCAP_VXLAN, NODE_A, NODE_B)
    assert Sighting("eth0", "out", packet, 0.0123456789).to_json() == {
        "device": "eth0", "direction": "out", "kind": "echo-request", "encap": "vxlan", "outer_src": "10.0.1.11",
        "outer_dst": "10.0.2.13", "src": "10.244.1.2", "dst": "10.244.2.3", "at": 0.012346}
    plain = Sighting("cali1", "in", ProbePacket(PROBE, "echo-reply", POD_B, POD_A), 1.0).to_json()
    assert (plain["outer_src"], plain["outer_dst"], plain["encap"]) == (None, None, "none")
