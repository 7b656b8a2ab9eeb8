"""felix's probe against a real kernel: a pod namespace behind a cali veth on node A, node A and
node B joined by an uplink and a VXLAN (vxlan.calico, VNI 4096, UDP 4789) as felix programs it.
The probe is sent from the pod through felix's endpoints (served on loopback, capture and send
pointed at the node namespaces) by calyxctl's run_probe; both nodes must see it, and its reply,
on the right devices, in the right directions and encapsulations."""
from __future__ import annotations

import functools
import subprocess
import sys
import time
from contextlib import ExitStack
from ipaddress import IPv4Address
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry

from calyx.naming import cali_interface_name
from calyx.observability import HealthServer
from calyxctl.trace.probeclient import run_probe
from felix.netnsthread import call_in_netns
from felix.probecapture import capture
from felix.probesend import NamespaceSearch, find_pod_netns, send_from_pod
from felix.probeview import ProbeEndpoints

sys.path.insert(0, str(Path(__file__).parents[1] / "netlink"))
from scratch import ip, scratch_netns  # noqa: E402

pytestmark = pytest.mark.lab     # scratch network namespaces on this machine

POD, POD_IP = "default/client", IPv4Address("10.244.1.2")
VETH = cali_interface_name("default", "client")
VTEP_A, VTEP_B = IPv4Address("10.244.1.0"), IPv4Address("10.244.2.0")
MAC_A, MAC_B, CALI_MAC, POD_MAC = "66:00:00:00:00:0a", "66:00:00:00:00:0b", "ee:ee:ee:ee:ee:ee", "02:00:00:00:01:02"


def sh(netns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, *argv], check=True, capture_output=True)


def vxlan_end(netns: str, mac: str, local: str, vtep: IPv4Address) -> None:
    ip("link", "add", "vxlan.calico", "address", mac, "type", "vxlan", "id", "4096", "local", local, "dev", "uplink",
       "dstport", "4789", "nolearning", netns=netns)
    ip("addr", "add", f"{vtep}/32", "dev", "vxlan.calico", netns=netns)
    ip("link", "set", "vxlan.calico", "up", netns=netns)


def peer_vtep(netns: str, vtep: IPv4Address, mac: str, underlay: str, block: str) -> None:
    ip("neigh", "add", str(vtep), "lladdr", mac, "dev", "vxlan.calico", "nud", "permanent", netns=netns)
    sh(netns, "bridge", "fdb", "add", mac, "dev", "vxlan.calico", "dst", underlay)
    ip("route", "add", block, "via", str(vtep), "dev", "vxlan.calico", "onlink", netns=netns)


@pytest.fixture
def nodes() -> Iterator[tuple[str, str, str]]:
    """(pod, node A, node B) namespaces, wired as described above; all removed on exit."""
    with ExitStack() as stack:
        pod = stack.enter_context(scratch_netns("cxpp"))
        a = stack.enter_context(scratch_netns("cxpa"))
        b = stack.enter_context(scratch_netns("cxpb"))
        ip("link", "add", VETH, "address", CALI_MAC, "type", "veth", "peer", "name", "eth0", "address", POD_MAC,
           "netns", pod, netns=a)
        ip("link", "set", VETH, "up", netns=a)
        ip("addr", "add", f"{POD_IP}/32", "dev", "eth0", netns=pod)
        ip("link", "set", "eth0", "up", netns=pod)
        ip("route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", netns=pod)
        ip("route", "add", "default", "via", "169.254.1.1", "dev", "eth0", netns=pod)
        ip("neigh", "add", "169.254.1.1", "lladdr", CALI_MAC, "dev", "eth0", "nud", "permanent", netns=pod)
        ip("route", "add", f"{POD_IP}/32", "dev", VETH, "scope", "link", netns=a)
        ip("neigh", "add", str(POD_IP), "lladdr", POD_MAC, "dev", VETH, "nud", "permanent", netns=a)
        sh(a, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ip("link", "add", "uplink", "type", "veth", "peer", "name", "uplink", "netns", b, netns=a)
        for netns, address in ((a, "10.0.0.1/24"), (b, "10.0.0.2/24")):
            ip("addr", "add", address, "dev", "uplink", netns=netns)
            ip("link", "set", "uplink", "up", netns=netns)
        vxlan_end(a, MAC_A, "10.0.0.1", VTEP_A)
        vxlan_end(b, MAC_B, "10.0.0.2", VTEP_B)
        peer_vtep(a, VTEP_B, MAC_B, "10.0.0.2", "10.244.2.0/26")
        peer_vtep(b, VTEP_A, MAC_A, "10.0.0.1", "10.244.1.0/26")
        yield pod, a, b


def felix_of(node: str, netns: str, local: dict[str, IPv4Address]) -> ProbeEndpoints:
    """felix's probe endpoints as felix would run them inside ``netns``."""
    def send(veth: str, src: IPv4Address, dst: IPv4Address, probe_id: bytes) -> None:
        call_in_netns(netns, lambda: send_from_pod(veth, src, dst, probe_id))
    return ProbeEndpoints(node, lambda: local, functools.partial(capture, netns=netns), send)


def test_a_probe_from_the_pod_is_seen_on_both_nodes_and_through_the_vxlan(nodes: tuple[str, str, str]) -> None:
    pod, a, b = nodes
    assert call_in_netns(a, lambda: find_pod_netns(VETH)) == f"/run/netns/{pod}"
    with HealthServer("127.0.0.1", 0, CollectorRegistry(), handlers=felix_of("node-a", a, {POD: POD_IP}).handlers()) \
            as felix_a, \
            HealthServer("127.0.0.1", 0, CollectorRegistry(), handlers=felix_of("node-b", b, {}).handlers()) as felix_b:
        result = run_probe(felix_a.url, {"node-a": felix_a.url, "node-b": felix_b.url}, POD, VTEP_B, seconds=1.5)
    assert result.send.error is None and result.send.sent and result.send.src == POD_IP
    assert result.unarmed == ()
    seen = {node: [(s.device, s.direction, s.kind, s.encap, s.outer_src, s.outer_dst)
                   for s in result.sightings(node)] for node in ("node-a", "node-b")}
    under_a, under_b = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    assert seen["node-a"] == [
        (VETH, "in", "echo-request", "none", None, None),
        ("vxlan.calico", "out", "echo-request", "none", None, None),
        ("uplink", "out", "echo-request", "vxlan", under_a, under_b),
        ("uplink", "in", "echo-reply", "vxlan", under_b, under_a),
        ("vxlan.calico", "in", "echo-reply", "none", None, None),
        (VETH, "out", "echo-reply", "none", None, None),
    ]
    assert seen["node-b"] == [
        ("uplink", "in", "echo-request", "vxlan", under_a, under_b),
        ("vxlan.calico", "in", "echo-request", "none", None, None),
        ("vxlan.calico", "out", "echo-reply", "none", None, None),
        ("uplink", "out", "echo-reply", "vxlan", under_b, under_a),
    ]
    first = result.sightings("node-a")[0]
    assert (first.src, first.dst) == (POD_IP, VTEP_B) and result.replied


def test_the_pods_namespace_is_found_through_a_process_in_it(nodes: tuple[str, str, str]) -> None:
    pod, a, _ = nodes
    sleeper = subprocess.Popen(["ip", "netns", "exec", pod, "sleep", "30"])
    try:
        def found() -> str:
            return call_in_netns(a, lambda: find_pod_netns(VETH, NamespaceSearch(dirs=())))
        deadline = time.monotonic() + 5
        while True:      # `ip netns exec` enters the namespace just after it starts
            try:
                assert found() == f"/proc/{sleeper.pid}/ns/net"
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        sleeper.kill()
        sleeper.wait()
