"""calyxctl.trace.probeclient against felix's probe endpoints served for real on loopback, with
the capture and the sending faked: arming before sending, sightings per node, errors kept."""
from __future__ import annotations

import threading
from ipaddress import IPv4Address
from typing import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry

from calyx.observability import HealthServer
from calyxctl.trace.facts import ProbeSighting
from calyxctl.trace.probeclient import new_probe_id, probe_armed, run_probe, send_probe, watch_probe
from felix.probepackets import ProbePacket, Sighting
from felix.probeview import ProbeEndpoints

POD_IP, DST = IPv4Address("10.244.1.2"), IPv4Address("10.244.2.3")
NODE_A, NODE_B = IPv4Address("10.0.1.11"), IPv4Address("10.0.2.13")


class Wire:
    """Fake kernel shared by the fake felixes: sending sets ``sent``; a capture armed before the
    send sees its node's share of the packet's path."""

    def __init__(self) -> None:
        self.sent = threading.Event()
        self.armed_before_send: dict[str, bool] = {}

    def capture(self, node: str, path: list[tuple[float, str, str, str, str]]) -> Callable[..., list[Sighting]]:
        def capture(probe_id: bytes, seconds: float, on_armed: Callable[[], None]) -> list[Sighting]:
            self.armed_before_send[node] = not self.sent.is_set()
            on_armed()
            self.sent.wait(seconds)
            out = []
            for at, device, direction, kind, encap in path:
                src, dst = (POD_IP, DST) if kind == "echo-request" else (DST, POD_IP)
                outer = (NODE_A, NODE_B) if kind == "echo-request" else (NODE_B, NODE_A)
                packet = ProbePacket(probe_id, kind, src, dst, encap, *(outer if encap != "none" else (None, None)))
                out.append(Sighting(device, direction, packet, at))
            return out
        return capture

    def send(self, veth: str, src: IPv4Address, dst: IPv4Address, probe_id: bytes) -> None:
        self.sent.set()


@pytest.fixture
def felixes() -> Iterator[tuple[Wire, dict[str, str]]]:
    wire = Wire()
    path_a = [(0.002, "cali1", "in", "echo-request", "none"), (0.003, "eth0", "out", "echo-request", "vxlan"),
              (0.001, "vxlan.calico", "out", "echo-request", "none")]
    path_b = [(0.004, "eth0", "in", "echo-request", "vxlan"), (0.005, "cali2", "out", "echo-request", "none")]
    a = ProbeEndpoints("node-a", lambda: {"default/client": POD_IP}, wire.capture("node-a", path_a), wire.send)
    b = ProbeEndpoints("node-b", dict, wire.capture("node-b", path_b), wire.send)
    with HealthServer("127.0.0.1", 0, CollectorRegistry(), handlers=a.handlers()) as server_a, \
            HealthServer("127.0.0.1", 0, CollectorRegistry(), handlers=b.handlers()) as server_b:
        yield wire, {"node-a": server_a.url, "node-b": server_b.url}


def test_run_probe_arms_every_watch_before_sending_and_gathers_sightings_per_node(felixes) -> None:
    wire, urls = felixes
    result = run_probe(urls["node-a"], urls, "default/client", DST, seconds=3)
    assert wire.armed_before_send == {"node-a": True, "node-b": True}
    assert result.unarmed == ()
    assert (result.send.sent, result.send.src, result.send.dst, result.send.error) == (True, POD_IP, DST, None)
    assert [(s.device, s.direction) for s in result.sightings("node-a")] == [
        ("vxlan.calico", "out"), ("cali1", "in"), ("eth0", "out")]           # ordered by time
    assert result.sightings("node-b")[0] == ProbeSighting("node-b", "eth0", "in", "echo-request", "vxlan", POD_IP,
                                                          DST, 0.004, NODE_A, NODE_B)
    assert result.seen_on == ("node-a", "node-b") and not result.replied
    assert len(result.probe_id) == 16 and result.pod == "default/client"
    assert str(result.sightings("node-b")[0]) == ("node-b eth0 in: echo-request 10.244.1.2 -> 10.244.2.3 "
                                                  "in vxlan 10.0.1.11 -> 10.0.2.13")


def test_a_node_that_does_not_answer_is_a_watch_with_its_error(felixes) -> None:
    _, urls = felixes
    result = run_probe(urls["node-a"], {**urls, "node-c": "http://127.0.0.1:9"}, "default/client", DST,
                       seconds=1, timeout=1)
    assert result.watches["node-c"].error is not None and result.watches["node-c"].sightings == ()
    assert result.send.sent and result.sightings("node-b")


def test_a_refused_send_carries_felixs_reason(felixes) -> None:
    _, urls = felixes
    answer = send_probe(urls["node-b"], "default/client", DST, new_probe_id(), timeout=2)
    assert not answer.sent
    assert "HTTP 404: pod default/client is not a pod with an address on node node-b" in (answer.error or "")


def test_watch_probe_and_armed_directly(felixes) -> None:
    wire, urls = felixes
    probe = new_probe_id()
    assert not probe_armed(urls["node-b"], probe, timeout=2)
    wire.sent.set()
    watch = watch_probe(urls["node-b"], probe, seconds=1, timeout=2, node="node-b")
    assert watch.error is None and [s.device for s in watch.sightings] == ["eth0", "cali2"]
    bad = watch_probe(urls["node-b"], "nothex", seconds=1, timeout=2, node="node-b")
    assert bad.error is not None and "16 hex digits" in bad.error
