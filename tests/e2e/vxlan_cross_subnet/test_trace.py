"""``calyxctl trace`` on a real cluster: scenario ``vxlan-cross-subnet`` (pool in VXLAN
CrossSubnet, BGP off; host kernel), each node's felix serving its health port on the node's
address, the real ``calyxctl`` console script run inside node1 against the lab's API.

The scenario's chart values set metricsOnAllInterfaces: true, so that felix answers there.

Expected: node1 -> node2 (same subnet) is one plain route, node1 -> node3 goes through
vxlan.calico to node3's address, each hop's route being what ``ip route get fibmatch`` says on
that node; a blackhole put in the way on node1, a plain route through the router in place of
felix's VXLAN route on node1, a blackhole in place of the pod's /32 on node3, and the
destination pod's veth set down on node2 are each diagnosed at the right hop and node with the
right cause; a pod whose MTU does not fit the tunnel is reported as the devices say. Last,
node3's Calyx stops and its VTEP annotations are removed: node1 has no route to node3's block
(no-route, pointing at the annotations and felix on node3) and node3 is not readable.
"""
from __future__ import annotations

import json
import sys

import pytest

import trace_support
from e2e_support import POD_NAMESPACE, core_api, wait_for
from trace_support import CALYXCTL, fibmatch, route_text

pytestmark = [pytest.mark.lab]

NODES = {"node1": "10.0.1.11", "node2": "10.0.1.12", "node3": "10.0.2.13"}
DEV = "vxlan.calico"


def felix_answers(lab, address: str) -> bool:
    probe = f"import urllib.request; urllib.request.urlopen('http://{address}:9099/v1/link?name=lo', timeout=3)"
    return lab.exec("node1", [sys.executable, "-c", probe], timeout=30).returncode == 0


@pytest.fixture(scope="module")
def pods(cluster_pods):
    """The pods of node1-3 (the package's, one per node), with their namespace."""
    return {node: (POD_NAMESPACE, cluster_pods[node]) for node in NODES}


def mtu(lab, node: str, device: str) -> int:
    return json.loads(lab.exec(node, ["ip", "-j", "link", "show", device], check=True).stdout)[0]["mtu"]


def trace(lab, src, dst: str) -> tuple[int, dict, str]:
    namespace, pod = src
    return trace_support.trace(lab, f"{namespace}/{pod.name}", dst, text=True)


def converged(lab, pods) -> None:
    """Every node routes the other nodes' blocks (felix from the API) before tracing."""
    for dst_node in ("node2", "node3"):
        ip = pods[dst_node][1].ip
        wait_for(f"node1: a felix route to {ip}",
                 lambda ip=ip: "proto 80" in fibmatch(lab, "node1", ip) and "/26" in fibmatch(lab, "node1", ip))


def test_same_subnet_is_one_plain_route(lab, pods):
    converged(lab, pods)
    dst = pods["node2"][1]
    rc, body, _ = trace(lab, pods["node1"], f"{pods['node2'][0]}/{dst.name}")
    assert rc == 0 and body["complete"], body["problems"]
    assert [h["node"] for h in body["hops"]] == ["node1", "node1", "node2"]
    assert route_text(body["hops"][0]) == fibmatch(lab, "node1", pods["node1"][1].ip)
    assert route_text(body["hops"][1]) == fibmatch(lab, "node1", dst.ip)
    assert body["hops"][1]["route"]["gateway"] == NODES["node2"] and body["hops"][1]["encapsulation"] == "none"
    assert route_text(body["hops"][2]) == fibmatch(lab, "node2", dst.ip)
    assert body["hops"][2]["route"]["dev"] == body["dst"]["veth"]


def test_across_the_router_is_vxlan_to_the_nodes_address(lab, pods):
    converged(lab, pods)
    dst = pods["node3"][1]
    rc, body, text = trace(lab, pods["node1"], dst.ip)      # by address: the pod holding it is found
    assert rc == 0 and body["complete"], body["problems"]
    assert body["dst"]["kind"] == "pod" and body["dst"]["node"] == "node3"
    hop = body["hops"][1]
    assert route_text(hop) == fibmatch(lab, "node1", dst.ip)
    assert hop["encapsulation"] == "vxlan" and hop["route"]["dev"] == "vxlan.calico"
    encap = next(f["text"] for f in hop["facts"] if f["label"] == "encap")
    assert f"UDP 4789 {NODES['node1']} -> {NODES['node3']}" in encap
    underlay = next(f["text"] for f in hop["facts"] if f["label"] == "underlay")
    assert underlay.startswith(f"{NODES['node3']} via 10.0.1.1 dev eth1")
    assert route_text(body["hops"][2]) == fibmatch(lab, "node3", dst.ip)
    assert "result: the path is complete" in text


def test_every_pair_is_plain_within_a_subnet_and_vxlan_across(lab, pods):
    converged(lab, pods)
    subnet = {node: address.rsplit(".", 1)[0] for node, address in NODES.items()}
    trace_support.check_every_pair(lab, {node: pod for node, (_, pod) in pods.items()},
                                   {(a, b): "vxlan" if subnet[a] != subnet[b] else "none"
                                    for a in NODES for b in NODES})


def test_probe_crosses_the_vxlan_and_stops_at_a_blackhole(lab, pods):
    """``--probe``: a real echo request from node1's pod to node3's is seen leaving node1 inside
    VXLAN to node3's address and entering node3, and its reply reaches the pod; with a blackhole
    on node1 it is last seen entering node1 from the pod, and the trace says so."""
    converged(lab, pods)
    dst = pods["node3"][1]
    target = f"{pods['node3'][0]}/{dst.name}"
    rc, body, _ = trace_support.trace(lab, f"{pods['node1'][0]}/{pods['node1'][1].name}", target, "--probe",
                                      text=True)
    assert rc == 0 and body["complete"] and body["probe"]["answered"], body["problems"]
    seen = {(s["node"], s["device"], s["direction"], s["kind"], s["encap"]) for s in body["probe"]["sightings"]}
    assert ("node1", "eth1", "out", "echo-request", "vxlan") in seen, seen
    assert ("node3", "eth1", "in", "echo-request", "vxlan") in seen, seen
    assert ("node3", body["dst"]["veth"], "out", "echo-request", "none") in seen, seen
    out = next(s for s in body["probe"]["sightings"] if s["node"] == "node1" and s["device"] == "eth1")
    assert (out["outer_src"], out["outer_dst"]) == (NODES["node1"], NODES["node3"]), out
    lab.exec("node1", ["ip", "route", "add", "blackhole", f"{dst.ip}/32"], check=True)
    try:
        rc, body, _ = trace_support.trace(lab, f"{pods['node1'][0]}/{pods['node1'][1].name}", target, "--probe")
    finally:
        lab.exec("node1", ["ip", "route", "del", "blackhole", f"{dst.ip}/32"])
    assert rc == 1 and [p["cause"] for p in body["problems"]] == ["blackhole", "probe-lost"], body["problems"]
    last = body["probe"]["last_request"]
    assert (last["node"], last["device"], last["direction"]) == ("node1", body["src"]["veth"], "in"), last


def test_blackhole_on_the_source_node(lab, pods):
    converged(lab, pods)
    dst = pods["node3"][1]
    lab.exec("node1", ["ip", "route", "add", "blackhole", f"{dst.ip}/32"], check=True)
    try:
        rc, body, text = trace(lab, pods["node1"], f"{pods['node3'][0]}/{dst.name}")
    finally:
        lab.exec("node1", ["ip", "route", "del", "blackhole", f"{dst.ip}/32"])
    assert rc == 1 and body["broken_at"] == {"hop": 2, "node": "node1"}
    assert [(p["cause"], p["node"]) for p in body["problems"]] == [("blackhole", "node1")]
    assert f"ip route del blackhole {dst.ip}/32" in body["problems"][0]["fix"]
    assert "BROKEN at hop 2 (node node1)" in text


def test_blackhole_in_place_of_the_pods_route_on_the_destination_node(lab, pods):
    converged(lab, pods)
    dst = pods["node3"][1]
    # felix leaves a route it does not own alone: a blackhole replacing its /32 stays
    lab.exec("node3", ["ip", "route", "replace", "blackhole", f"{dst.ip}/32", "proto", "static"], check=True)
    try:
        rc, body, _ = trace(lab, pods["node1"], f"{pods['node3'][0]}/{dst.name}")
    finally:
        lab.exec("node3", ["ip", "route", "del", "blackhole", f"{dst.ip}/32"])
    assert rc == 1 and body["broken_at"] == {"hop": 3, "node": "node3"}
    assert [(p["cause"], p["node"]) for p in body["problems"]] == [("blackhole", "node3")]
    wait_for(f"node3: felix restores the /32 to {dst.ip}", lambda: "proto 80" in fibmatch(lab, "node3", dst.ip)
             and fibmatch(lab, "node3", dst.ip).startswith(f"{dst.ip}/32 dev cali"))


def test_plain_route_across_the_router_where_the_pool_wants_vxlan(lab, pods):
    converged(lab, pods)
    dst = pods["node3"][1]
    block = json.loads(lab.exec("node1", ["ip", "-j", "route", "get", "fibmatch", dst.ip], check=True).stdout)[0]["dst"]
    # a route of another owner (static) in place of felix's: felix leaves it alone
    lab.exec("node1", ["ip", "route", "replace", block, "via", "10.0.1.1", "dev", "eth1", "proto", "static"],
             check=True)
    try:
        rc, body, _ = trace(lab, pods["node1"], f"{pods['node3'][0]}/{dst.name}")
    finally:
        lab.exec("node1", ["ip", "route", "del", block, "proto", "static"])
    assert rc == 1 and body["broken_at"] == {"hop": 2, "node": "node1"}
    assert route_text(body["hops"][1]) == f"{block} via 10.0.1.1 dev eth1 proto 4"
    assert [(p["cause"], p["node"], p["severity"]) for p in body["problems"]] == [
        ("wrong-next-hop", "node1", "degraded"), ("mode-mismatch", "node1", "broken")]
    assert "wants VXLAN between node1 and node3 (different subnets)" in body["problems"][1]["message"]
    assert f"ip route del {block} proto 4` on node1" in body["problems"][1]["fix"]
    wait_for(f"node1: felix restores its route to {block}", lambda: "vxlan.calico" in fibmatch(lab, "node1", dst.ip))


def test_destination_veth_down_removes_the_pod_route(lab, pods):
    converged(lab, pods)
    dst = pods["node2"][1]
    rc, body, _ = trace(lab, pods["node1"], f"{pods['node2'][0]}/{dst.name}")
    veth = body["dst"]["veth"]
    lab.exec("node2", ["ip", "link", "set", veth, "down"], check=True)
    try:
        wait_for(f"node2: the kernel drops the /32 via {veth}",
                 lambda: not fibmatch(lab, "node2", dst.ip).startswith(f"{dst.ip}/32"))
        rc, body, text = trace(lab, pods["node1"], f"{pods['node2'][0]}/{dst.name}")
    finally:
        lab.exec("node2", ["ip", "link", "set", veth, "up"], check=True)
    assert rc == 1 and body["broken_at"] == {"hop": 3, "node": "node2"}
    assert [(p["cause"], p["node"]) for p in body["problems"]] == [("veth-down", "node2")]
    assert f"ip link set {veth} up" in body["problems"][0]["fix"]
    wait_for(f"node2: felix restores the /32 to {dst.ip} once {veth} is up",
             lambda: fibmatch(lab, "node2", dst.ip).startswith(f"{dst.ip}/32 dev {veth}"))


def test_mtu_is_checked_against_the_devices(lab, pods):
    """A node's first pod already has room for VXLAN (it is made before the node's block, so
    before vxlan.calico); a pod veth with the underlay's MTU is reported as too large."""
    converged(lab, pods)
    src, dst = pods["node1"], pods["node3"][1]
    target = f"{pods['node3'][0]}/{dst.name}"
    rc, body, _ = trace(lab, src, target)
    veth = body["src"]["veth"]
    assert mtu(lab, "node1", veth) == mtu(lab, "node1", DEV) == mtu(lab, "node1", "eth1") - 50
    assert rc == 0 and body["problems"] == []
    lab.exec("node1", ["ip", "link", "set", veth, "mtu", str(mtu(lab, "node1", "eth1"))], check=True)
    try:
        rc, body, _ = trace(lab, src, target)
    finally:
        lab.exec("node1", ["ip", "link", "set", veth, "mtu", str(mtu(lab, "node1", DEV))], check=True)
    assert [(p["cause"], p["node"], p["severity"]) for p in body["problems"]] == [("mtu", "node1", "degraded")]
    assert rc == 1


def test_address_outside_the_pools(lab, pods):
    rc, body, _ = trace(lab, pods["node1"], "10.0.2.1")      # the router's address across the subnets
    assert rc == 0 and body["complete"], body["problems"]
    hop = body["hops"][1]
    assert route_text(hop) == fibmatch(lab, "node1", "10.0.2.1")
    source = next(f["text"] for f in hop["facts"] if f["label"] == "source")
    assert source.startswith(f"stays {pods['node1'][1].ip}")     # the pool has no natOutgoing here


def test_an_unknown_pod_is_refused_naming_it(lab, pods):
    res = lab.exec("node1", [CALYXCTL, "trace", f"{POD_NAMESPACE}/no-such-pod", pods["node2"][1].ip],
                   env={"KUBECONFIG": str(lab.kubeconfig)}, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == f"calyxctl trace: pod {POD_NAMESPACE}/no-such-pod: not found"


def test_calyx_down_on_the_destination_node(lab, pods):
    """Last: node3's Calyx stops and its VTEP annotations go (as when its felix never published
    them): node1 loses its route to node3's block, and node3 cannot be read."""
    converged(lab, pods)
    dst = pods["node3"][1]
    block = json.loads(lab.exec("node1", ["ip", "-j", "route", "get", "fibmatch", dst.ip], check=True).stdout)[0]["dst"]
    lab.stop_daemons("node3")          # its kubelet and the containers it runs: felix, bgpd
    try:
        core_api(lab).patch_node("node3", {"metadata": {"annotations": {
            "calyx.dev/ipv4-vxlan-tunnel-addr": None, "calyx.dev/vxlan-tunnel-mac": None}}})
        wait_for("node1: felix drops its route to node3's block (after its release grace)",
                 lambda: "vxlan.calico" not in fibmatch(lab, "node1", dst.ip))
        rc, body, text = trace(lab, pods["node1"], f"{pods['node3'][0]}/{dst.name}")
    finally:
        lab.start_daemons("node3")
    assert rc == 1 and body["broken_at"] == {"hop": 2, "node": "node1"}
    assert [(p["cause"], p["node"], p["severity"]) for p in body["problems"]] == [
        ("no-route", "node1", "broken"), ("node-unreadable", "node3", "unknown")]
    no_route = body["problems"][0]
    assert no_route["message"].startswith(f"node3's block {block} is not in node node1's table")
    assert "calyx.dev/ipv4-vxlan-tunnel-addr: missing" in no_route["fix"] and "check felix on node3" in no_route["fix"]
    wait_for("node1: the route to node3's block back once node3's felix runs again",
             lambda: "vxlan.calico" in fibmatch(lab, "node1", dst.ip), 240)
