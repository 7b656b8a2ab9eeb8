"""calyxctl trace's reasoning (calyxctl.trace.analysis and render), without a kernel or an API:
hop lists of healthy paths in every mode, and each diagnosis with the object it names."""
from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from calyx.model import EncapMode, IPAMBlock, IPPool, NodeInfo
from calyxctl.trace import analysis, render
from calyxctl.trace.facts import (AddressEnd, BgpSessions, Connection, Device, NodeState, PodEnd, PolicyVerdict,
                                  ProbeResult, ProbeSend, ProbeSighting, ProbeWatch, RouteAnswer, ServiceEnd, ServicePort, TableEntry, ready_endpoint_addresses,
                                  service_ports)

IP = IPv4Address
NET = IPv4Network
NODES = {
    "node1": NodeInfo("node1", bgp_address=IPv4Interface("10.0.1.11/24"), internal_ip=IP("10.0.1.11"),
                      vxlan_tunnel_address=IP("10.244.1.0")),
    "node2": NodeInfo("node2", bgp_address=IPv4Interface("10.0.1.12/24"), internal_ip=IP("10.0.1.12"),
                      vxlan_tunnel_address=IP("10.244.2.0")),
    "node3": NodeInfo("node3", bgp_address=IPv4Interface("10.0.2.13/24"), internal_ip=IP("10.0.2.13"),
                      vxlan_tunnel_address=IP("10.244.3.0")),
}
BLOCKS = {f"10-244-{i}-0-26": IPAMBlock(f"10-244-{i}-0-26", NET(f"10.244.{i}.0/26"), f"node{i}", "pool")
          for i in (1, 2, 3)}
A = PodEnd("default", "a", IP("10.244.1.5"), "node1")
B = PodEnd("default", "b", IP("10.244.2.7"), "node2")
C = PodEnd("default", "c", IP("10.244.3.9"), "node3")
A2 = PodEnd("default", "a2", IP("10.244.1.6"), "node1")


def pool(ipip: str = "Never", vxlan: str = "Never", nat: bool = False) -> dict[str, IPPool]:
    return {"pool": IPPool("pool", NET("10.244.0.0/16"), ipip_mode=EncapMode(ipip), vxlan_mode=EncapMode(vxlan),
                           nat_outgoing=nat)}


def dev(name: str, kind: str | None = "veth", mtu: int = 1500, up: bool = True) -> Device:
    return Device(name, kind, mtu, up)


def pod_route(pod: PodEnd, mtu: int = 1450, up: bool = True) -> RouteAnswer:
    return RouteAnswer(pod.ip, True, dev=pod.veth,
                       match=TableEntry(NET(f"{pod.ip}/32"), "unicast", 80, "felix", pod.veth),
                       device=dev(pod.veth, mtu=mtu, up=up))


def via(dst: IPv4Address, prefix: str, gateway: str, device: Device, owner: str = "bgpd",
        onlink: bool = False, mtu: int | None = None) -> RouteAnswer:
    proto = {"bgpd": 186, "felix": 80, "boot": 3}[owner]
    return RouteAnswer(dst, True, dev=device.name, gateway=IP(gateway), prefsrc=IP("10.0.1.11"),
                       match=TableEntry(NET(prefix), "unicast", proto, owner, device.name, IP(gateway), onlink, mtu),
                       device=device)


def direct(dst: IPv4Address, prefix: str, device: Device) -> RouteAnswer:
    return RouteAnswer(dst, True, dev=device.name, prefsrc=IP("10.0.1.11"),
                       match=TableEntry(NET(prefix), "unicast", 2, "kernel", device.name), device=device)


def unreachable(dst: IPv4Address) -> RouteAnswer:
    return RouteAnswer(dst, False, error="Network is unreachable")


def blackhole(dst: IPv4Address, prefix: str, owner: str = "felix") -> RouteAnswer:
    return RouteAnswer(dst, False, error="Invalid argument",
                       match=TableEntry(NET(prefix), "blackhole", 80 if owner == "felix" else 3, owner))


ETH1 = dev("eth1")
TUNL0 = dev("tunl0", "ipip", 1480)
VXLAN = dev("vxlan.calico", "vxlan", 1450)


def run(pools, x_routes, y_routes=None, *, src=A, dst=B, src_mtu=1450, dst_links=None, x_error=None,
        y_error=None, src_link="default") -> analysis.Trace:
    x_links = {src.veth: dev(src.veth, mtu=src_mtu)} if src_link == "default" else {src.veth: src_link}
    states = {src.node: NodeState(src.node, error=x_error, routes={r.dst: r for r in x_routes}, links=x_links)}
    if y_routes is not None or y_error is not None:
        y = dst.node if isinstance(dst, PodEnd) else "node2"
        states[y] = NodeState(y, error=y_error, routes={r.dst: r for r in y_routes or []},
                              links=dst_links if dst_links is not None else {dst.veth: dev(dst.veth, mtu=1450)})
    return analysis.analyse(analysis.TraceInput(src, dst, NODES, pools, BLOCKS, states))


def causes(trace: analysis.Trace) -> list[tuple[int, str, str, str]]:
    return [(p.hop, p.node, p.cause, p.severity) for p in trace.problems]


def fact(trace: analysis.Trace, hop: int, label: str) -> analysis.Fact:
    return next(f for f in trace.hops[hop - 1].facts if f.label == label)


# ----------------------------------------------------------------------------- healthy paths

def test_plain_routing_within_a_subnet() -> None:
    trace = run(pool(), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)])
    assert trace.complete, trace.problems
    assert [(h.number, h.node) for h in trace.hops] == [(1, "node1"), (2, "node1"), (3, "node2")]
    assert fact(trace, 1, "host veth").text == f"{A.veth} (veth) up, mtu 1450"
    assert fact(trace, 1, "return").text == f"10.244.1.5/32 dev {A.veth} proto 80 (felix)"
    assert fact(trace, 2, "route").text == "10.244.2.0/26 via 10.0.1.12 dev eth1 proto 186 (bgpd)"
    assert fact(trace, 2, "encap").text == "none: pod addresses on the wire"
    assert fact(trace, 2, "underlay").text == "10.0.1.12 dev eth1, mtu 1500 (same subnet)"
    assert fact(trace, 3, "route").text == f"10.244.2.7/32 dev {B.veth} proto 80 (felix)"


def test_ipip_across_subnets() -> None:
    trace = run(pool(ipip="CrossSubnet"),
                [pod_route(A, mtu=1480), via(C.ip, "10.244.3.0/26", "10.0.2.13", TUNL0, onlink=True),
                 via(IP("10.0.2.13"), "10.0.2.0/24", "10.0.1.1", ETH1, owner="boot")],
                [pod_route(C)], dst=C, src_mtu=1480)
    assert trace.complete, trace.problems
    assert fact(trace, 2, "encap").text == "IPIP via tunl0: outer 10.0.1.11 -> 10.0.2.13"
    assert trace.hops[1].encapsulation == "ipip" and trace.hops[1].route.dst == NET("10.244.3.0/26")
    assert fact(trace, 2, "underlay").text == "10.0.2.13 via 10.0.1.1 dev eth1, mtu 1500"


def test_vxlan_outer_destination_is_the_vteps_node() -> None:
    trace = run(pool(vxlan="Always"),
                [pod_route(A), via(B.ip, "10.244.2.0/26", "10.244.2.0", VXLAN, owner="felix", onlink=True),
                 direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)])
    assert trace.complete, trace.problems
    assert fact(trace, 2, "encap").text == \
        "VXLAN via vxlan.calico: UDP 4789 10.0.1.11 -> 10.0.1.12 (VTEP 10.244.2.0 of node node2)"


def test_pods_on_one_node_take_one_node() -> None:
    states = {"node1": NodeState("node1", routes={A.ip: pod_route(A), A2.ip: pod_route(A2)},
                                 links={A.veth: dev(A.veth, mtu=1450), A2.veth: dev(A2.veth, mtu=1450)})}
    trace = analysis.analyse(analysis.TraceInput(A, A2, NODES, pool(), BLOCKS, states))
    assert trace.complete, trace.problems
    assert [h.title for h in trace.hops] == ["pod default/a on node node1", "node node1: deliver to pod default/a2"]


def test_queries_ask_each_node_what_the_analysis_needs() -> None:
    inp = analysis.TraceInput(A, C, NODES, pool(), BLOCKS)
    assert analysis.queries(inp) == {"node1": ((A.ip, C.ip, IP("10.0.2.13")), (A.veth,)),
                                     "node3": ((C.ip,), (C.veth,))}
    inp = analysis.TraceInput(A, A2, NODES, pool(), BLOCKS)
    assert analysis.queries(inp) == {"node1": ((A.ip, A2.ip), (A.veth, A2.veth))}
    inp = analysis.TraceInput(A, AddressEnd(IP("192.0.2.1")), NODES, pool(), BLOCKS)
    assert analysis.queries(inp) == {"node1": ((A.ip, IP("192.0.2.1")), (A.veth,))}


# ----------------------------------------------------------------------------- diagnoses

def test_no_route_to_the_block_points_at_the_bgp_session() -> None:
    trace = run(pool(), [pod_route(A), unreachable(B.ip), direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)],
                [pod_route(B)])
    assert causes(trace) == [(2, "node1", "no-route", "broken")]
    problem = trace.problems[0]
    assert problem.message == ("node2's block 10.244.2.0/26 is not in node node1's table; the lookup fails "
                               "(Network is unreachable)")
    assert problem.fix == "is the BGP session node1<->node2 Established? `calyxctl node status node1`"


def no_route_problem(sessions: BgpSessions, cause: str = "no-route") -> analysis.Problem:
    states = {"node1": NodeState("node1", routes={A.ip: pod_route(A), B.ip: unreachable(B.ip)},
                                 links={A.veth: dev(A.veth, mtu=1450)}),
              "node2": NodeState("node2", routes={B.ip: pod_route(B)}, links={B.veth: dev(B.veth, mtu=1450)})}
    trace = analysis.analyse(analysis.TraceInput(A, B, NODES, pool(), BLOCKS, states, {"node1": sessions}))
    assert causes(trace) == [(2, "node1", cause, "broken")]
    return trace.problems[0]


def no_route_fix(sessions: BgpSessions) -> str:
    return no_route_problem(sessions).fix


def test_no_route_with_the_session_down_says_its_state() -> None:
    status = {"peers": [{"peer_address": "10.0.1.12", "state": "Active", "info": "connection refused"},
                        {"peer_address": "10.0.2.13", "state": "Established", "info": ""}]}
    problem = no_route_problem(BgpSessions.from_status("node1", status), "session-down")
    assert problem.message.endswith("node node1 learns it over BGP, and its BGP session to 10.0.1.12 is Active")
    assert problem.fix == ("the BGP session node1<->node2 (10.0.1.12) is Active (connection refused): "
                           "`calyxctl node status node1`")


def test_no_route_with_every_session_down_through_reflectors() -> None:
    sessions = BgpSessions("node1", {IP("10.0.0.1"): "Active", IP("10.0.0.2"): "Connect"})
    problem = no_route_problem(sessions, "session-down")
    assert problem.message.endswith("none of its BGP sessions is Established (10.0.0.1 Active, 10.0.0.2 Connect)")
    assert problem.fix.startswith("node node1 has no BGP session to node2 (10.0.1.12); its sessions: "
                                  "10.0.0.1 Active, 10.0.0.2 Connect")


def test_no_route_with_the_session_established_points_at_the_import() -> None:
    fix = no_route_fix(BgpSessions("node1", {IP("10.0.1.12"): "Established"}))
    assert fix.startswith("the BGP session node1<->node2 is Established, yet the route is not installed")


def test_no_route_without_a_session_to_the_node_names_the_sessions_there_are() -> None:
    fix = no_route_fix(BgpSessions("node1", {IP("10.0.2.13"): "Established"}))
    assert fix.startswith("node node1 has no BGP session to node2 (10.0.1.12); its sessions: 10.0.2.13 Established")


def test_no_route_with_bgpd_unreadable_asks() -> None:
    fix = no_route_fix(BgpSessions("node1", error="http://10.0.1.11:9098/status: Connection refused"))
    assert fix == "is the BGP session node1<->node2 Established? `calyxctl node status node1`"


def test_a_default_route_is_not_a_route_to_the_block() -> None:
    trace = run(pool(), [pod_route(A), via(B.ip, "0.0.0.0/0", "10.0.1.1", ETH1, owner="boot"),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)])
    assert causes(trace) == [(2, "node1", "no-route", "broken")]
    assert "it would follow 0.0.0.0/0 via 10.0.1.1 dev eth1 proto 3 (boot) instead" in trace.problems[0].message


def test_no_route_in_a_vxlan_pool_points_at_the_vtep_annotations() -> None:
    trace = run(pool(vxlan="CrossSubnet"), [pod_route(A), unreachable(C.ip)], [pod_route(C)], dst=C)
    assert causes(trace) == [(2, "node1", "no-route", "broken")]
    assert "calyx.dev/ipv4-vxlan-tunnel-addr: 10.244.3.0" in trace.problems[0].fix
    assert "check felix on node3" in trace.problems[0].fix


def test_blackhole_on_the_source_node() -> None:
    trace = run(pool(), [pod_route(A), blackhole(B.ip, "10.244.2.7/32", owner="boot")], [pod_route(B)])
    assert causes(trace) == [(2, "node1", "blackhole", "broken")]
    assert trace.problems[0].message == ("node node1 matches blackhole 10.244.2.7/32 proto 3 (boot) for 10.244.2.7: "
                                         "packets to pod default/b are dropped on node1")
    assert "`ip route del blackhole 10.244.2.7/32` on node1" in trace.problems[0].fix


def test_missing_pod_route_on_the_destination_node_names_felix_there() -> None:
    trace = run(pool(), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)],
                [blackhole(B.ip, "10.244.2.0/26")])
    assert causes(trace) == [(3, "node2", "pod-route-missing", "broken")]
    assert trace.problems[0].message == (f"node node2 has no /32 to pod default/b (10.244.2.7 dev {B.veth}); its "
                                         "lookup gives blackhole 10.244.2.0/26 proto 80 (felix)")
    assert "felix on node2" in trace.problems[0].fix


def test_blackhole_in_the_way_of_the_pod_route_on_the_destination_node() -> None:
    trace = run(pool(), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)],
                [blackhole(B.ip, "10.244.2.7/32", owner="boot")])
    assert causes(trace) == [(3, "node2", "blackhole", "broken")]
    assert "`ip route del blackhole 10.244.2.7/32` on node2, owner boot" in trace.problems[0].fix


def test_missing_pod_veth_on_the_destination_node() -> None:
    trace = run(pool(), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)],
                [blackhole(B.ip, "10.244.2.0/26")], dst_links={B.veth: None})
    assert causes(trace) == [(3, "node2", "veth-missing", "broken")]
    assert B.veth in trace.problems[0].message and "recreate pod default/b" in trace.problems[0].fix


def test_pod_veth_down_on_the_destination_node() -> None:
    trace = run(pool(), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)],
                [blackhole(B.ip, "10.244.2.0/26")], dst_links={B.veth: dev(B.veth, up=False)})
    assert causes(trace) == [(3, "node2", "veth-down", "broken")]
    assert f"ip link set {B.veth} up" in trace.problems[0].fix


def test_missing_return_route_on_the_source_node() -> None:
    trace = run(pool(), [blackhole(A.ip, "10.244.1.0/26"), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)])
    assert causes(trace) == [(1, "node1", "pod-route-missing", "broken")]


def test_ipip_route_where_the_pool_says_never() -> None:
    trace = run(pool(ipip="Never"), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", TUNL0, onlink=True),
                                     direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)])
    assert causes(trace) == [(2, "node1", "mode-mismatch", "degraded")]
    assert trace.problems[0].message == (
        "node node1 sends 10.244.2.7 with IPIP (route 10.244.2.0/26 via 10.0.1.12 dev tunl0 onlink proto 186 (bgpd)) "
        "but IPPool pool (ipipMode Never, vxlanMode Never) wants no encapsulation between node1 and node2 "
        "(same subnet)")


def test_plain_route_across_subnets_where_the_pool_says_cross_subnet() -> None:
    trace = run(pool(ipip="CrossSubnet"),
                [pod_route(A), via(C.ip, "10.244.3.0/26", "10.0.2.13", ETH1),
                 via(IP("10.0.2.13"), "10.0.2.0/24", "10.0.1.1", ETH1, owner="boot")], [pod_route(C)], dst=C)
    assert causes(trace) == [(2, "node1", "mode-mismatch", "degraded")]
    assert "wants IPIP between node1 and node3 (different subnets)" in trace.problems[0].message


def test_a_route_not_calyxs_in_the_way_is_to_be_removed() -> None:
    trace = run(pool(vxlan="Always"), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.1", ETH1, owner="boot"),
                                       direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)])
    assert causes(trace) == [(2, "node1", "wrong-next-hop", "degraded"), (2, "node1", "mode-mismatch", "broken")]
    assert all(p.fix.startswith("the route is not Calyx's (owner boot): remove it (`ip route del 10.244.2.0/26 "
                                "proto 3` on node1)") for p in trace.problems)


def test_plain_route_where_the_pool_wants_vxlan_is_broken() -> None:
    trace = run(pool(vxlan="Always"), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                                       direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)])
    assert causes(trace) == [(2, "node1", "mode-mismatch", "broken")]


def test_pod_mtu_too_large_for_the_tunnel() -> None:
    trace = run(pool(vxlan="Always"),
                [pod_route(A, mtu=1500), via(B.ip, "10.244.2.0/26", "10.244.2.0", VXLAN, owner="felix", onlink=True),
                 direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)], src_mtu=1500)
    assert causes(trace) == [(2, "node1", "mtu", "degraded")]
    assert trace.problems[0].message == (
        "pod default/a's MTU is 1500 but on node node1 vxlan.calico has MTU 1450; 1500 + VXLAN 50 = 1550 does not "
        "fit eth1's MTU 1500: full-size packets are fragmented or dropped (small ones, like ping, pass)")
    assert trace.problems[0].fix.startswith("recreate pod default/a: new pods get vxlan.calico's MTU 1450 from felix")


def test_pod_mtu_too_large_for_the_underlay() -> None:
    small = dev("eth1", mtu=1400)
    trace = run(pool(), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", small),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", small)], [pod_route(B)])
    assert causes(trace) == [(2, "node1", "mtu", "degraded")]
    assert "1450 does not fit eth1's MTU 1400" in trace.problems[0].message
    assert trace.problems[0].fix.startswith("lower the pod MTU")


def test_next_hop_of_another_node() -> None:
    trace = run(pool(), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.2.13", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [pod_route(B)])
    assert causes(trace) == [(2, "node1", "wrong-next-hop", "degraded")]
    assert "to 10.0.2.13 (node node3), not to node node2 (10.0.1.12)" in trace.problems[0].message


def test_unreadable_node_is_said_and_the_rest_still_traced() -> None:
    trace = run(pool(), [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)],
                y_error="http://10.0.1.12:9099/v1/route?dst=10.244.2.7: [Errno 111] Connection refused")
    assert causes(trace) == [(3, "node2", "node-unreadable", "unknown")]
    assert not trace.complete and "metricsOnAllInterfaces" in trace.problems[0].fix


# ----------------------------------------------------------------------------- leaving the pools

def test_address_outside_the_pools_with_nat_outgoing_is_masqueraded() -> None:
    dst = AddressEnd(IP("192.0.2.1"))
    trace = run(pool(nat=True), [pod_route(A), via(dst.ip, "0.0.0.0/0", "10.0.1.1", ETH1, owner="boot")], dst=dst)
    assert trace.complete, trace.problems
    assert trace.hops[1].title == "node node1: route to 192.0.2.1 (outside every IPPool)"
    assert fact(trace, 2, "source").text == "masqueraded to 10.0.1.11 (IPPool pool natOutgoing)"
    trace = run(pool(nat=False), [pod_route(A), via(dst.ip, "0.0.0.0/0", "10.0.1.1", ETH1, owner="boot")], dst=dst)
    assert fact(trace, 2, "source").text == "stays 10.244.1.5: the network beyond node1 must route it back"


def test_address_outside_with_no_route() -> None:
    dst = AddressEnd(IP("192.0.2.1"))
    trace = run(pool(nat=True), [pod_route(A), unreachable(dst.ip)], dst=dst)
    assert causes(trace) == [(2, "node1", "no-route", "broken")]


def test_pool_address_no_pod_holds() -> None:
    dst = AddressEnd(IP("10.244.2.50"))
    trace = run(pool(), [pod_route(A), via(dst.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                         direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)], [], dst=dst, dst_links={})
    assert causes(trace) == [(2, "node2", "no-such-pod", "broken")]


# ----------------------------------------------------------------------------- rendering

def test_text_and_json_say_where_the_path_breaks() -> None:
    trace = run(pool(), [pod_route(A), unreachable(B.ip), direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)],
                [pod_route(B)])
    text = render.text(trace)
    assert text.startswith("trace pod default/a (10.244.1.5, node node1) -> pod default/b (10.244.2.7, node node2)\n")
    assert "result: the path is BROKEN at hop 2 (node node1)" in text
    assert "fix: is the BGP session node1<->node2 Established?" in text
    body = json.loads(render.as_json(trace))
    assert body["complete"] is False and body["broken_at"] == {"hop": 2, "node": "node1"}
    assert body["dst"] == {"kind": "pod", "namespace": "default", "name": "b", "ip": "10.244.2.7", "node": "node2",
                           "veth": B.veth}
    assert [h["node"] for h in body["hops"]] == ["node1", "node1", "node2"]
    assert body["hops"][2]["route"] == {"dst": "10.244.2.7/32", "kind": "unicast", "proto": 80, "owner": "felix",
                                        "dev": B.veth, "gateway": None, "onlink": False, "mtu": None}
    assert body["problems"][0]["cause"] == "no-route"


@pytest.mark.parametrize("mode,cross,expected", [("Always", False, "ipip"), ("CrossSubnet", True, "ipip"),
                                                 ("CrossSubnet", False, "none"), ("CrossSubnet", None, None),
                                                 ("Never", True, "none")])
def test_expected_encapsulation(mode: str, cross: bool | None, expected: str | None) -> None:
    assert analysis.expected_encapsulation(pool(ipip=mode)["pool"], cross) == expected


# ----------------------------------------------------------------------------- policy and Services

def healthy_plain(**extra) -> analysis.TraceInput:
    x = NodeState("node1", routes={r.dst: r for r in [pod_route(A), via(B.ip, "10.244.2.0/26", "10.0.1.12", ETH1),
                                                      direct(IP("10.0.1.12"), "10.0.1.0/24", ETH1)]},
                  links={A.veth: dev(A.veth, mtu=1450)})
    y = NodeState("node2", routes={B.ip: pod_route(B)}, links={B.veth: dev(B.veth, mtu=1450)})
    return analysis.TraceInput(A, extra.pop("dst", B), NODES, pool(), BLOCKS, {"node1": x, "node2": y}, **extra)


TCP80 = Connection("TCP", 80)


def test_policy_verdicts_are_asked_of_each_end_pod_felix() -> None:
    assert analysis.policy_queries(healthy_plain()) == {
        "Egress": ("node1", "default/a", B.ip), "Ingress": ("node2", "default/b", A.ip)}
    assert analysis.policy_queries(healthy_plain(dst=AddressEnd(IP("192.0.2.1")))) == {
        "Egress": ("node1", "default/a", IP("192.0.2.1"))}


def test_allowed_and_unisolated_policy_verdicts_are_checks_that_pass() -> None:
    policies = {"Egress": PolicyVerdict("default/a", "Egress", B.ip, TCP80),
                "Ingress": PolicyVerdict("default/b", "Ingress", A.ip, TCP80, ("default/web",), True,
                                         ("from pods app=a in namespace default, TCP 80",), True)}
    trace = analysis.analyse(healthy_plain(connection=TCP80, policies=policies))
    assert trace.complete, trace.problems
    assert fact(trace, 1, "policy out") == analysis.Fact(
        "policy out", "no NetworkPolicy isolates egress of pod default/a: TCP port 80 to 10.244.2.7 allowed", True)
    assert fact(trace, 3, "policy in").text == "TCP port 80 from 10.244.1.5 allowed by NetworkPolicy default/web"


def test_an_ingress_deny_breaks_the_path_at_delivery_naming_the_policies() -> None:
    policies = {"Ingress": PolicyVerdict("default/b", "Ingress", A.ip, Connection(), ("default/deny-all",), True,
                                         (), False)}
    trace = analysis.analyse(healthy_plain(policies=policies))
    assert causes(trace) == [(3, "node2", "policy-deny", "broken")]
    assert fact(trace, 3, "policy in").ok is False
    problem = trace.problems[0]
    assert "NetworkPolicy default/deny-all" in problem.message and "ICMP (ping) from 10.244.1.5" in problem.message
    assert "calyxctl policy default/b --peer 10.244.1.5 --direction Ingress --protocol ICMP" in problem.fix
    assert "result: the path is BROKEN at hop 3 (node node2)" in render.text(trace)


def test_an_egress_deny_breaks_the_path_at_the_source() -> None:
    policies = {"Egress": PolicyVerdict("default/a", "Egress", B.ip, TCP80, ("default/only-dns",), True,
                                        ("to anywhere, UDP 53",), False)}
    trace = analysis.analyse(healthy_plain(connection=TCP80, policies=policies))
    assert causes(trace) == [(1, "node1", "policy-deny", "broken")]
    assert "(allowed: to anywhere, UDP 53)" in trace.problems[0].message


def test_an_unreadable_policy_is_information_not_a_problem() -> None:
    policies = {"Ingress": PolicyVerdict("default/b", "Ingress", A.ip, error="http://10.0.1.12:9099/v1/policy: HTTP 503")}
    trace = analysis.analyse(healthy_plain(policies=policies))
    assert trace.complete and fact(trace, 3, "policy in").ok is None


SERVICE = ServiceEnd("default", "web", IP("10.96.0.10"), "ClusterIP", (B,),
                     (ServicePort("http", "TCP", 80, 8080),))


def test_a_service_address_is_traced_to_its_endpoint() -> None:
    trace = analysis.analyse(healthy_plain(service=SERVICE, connection=TCP80))
    assert trace.complete, trace.problems
    assert [h.title for h in trace.hops][:2] == ["pod default/a on node node1", "node node1: Service default/web (10.96.0.10)"]
    assert fact(trace, 2, "endpoints").text == "1 ready: pod default/b (10.244.2.7, node node2)"
    assert fact(trace, 2, "translated").text.endswith("traced to pod default/b (10.244.2.7:8080)")
    assert trace.hops[-1].title == "node node2: deliver to pod default/b"
    assert render.text(trace).startswith("trace pod default/a (10.244.1.5, node node1) -> Service default/web "
                                         "(10.96.0.10) -> pod default/b (10.244.2.7, node node2)")
    assert json.loads(render.as_json(trace))["service"]["name"] == "web"


def test_a_service_without_ready_endpoints() -> None:
    empty = ServiceEnd("default", "web", IP("10.96.0.10"), "ClusterIP", (), SERVICE.ports)
    trace = analysis.analyse(healthy_plain(dst=AddressEnd(empty.ip), service=empty))
    assert causes(trace) == [(2, "node1", "no-endpoints", "broken")]
    assert "kubernetes.io/service-name=web" in trace.problems[0].fix


def test_a_port_the_service_does_not_have() -> None:
    trace = analysis.analyse(healthy_plain(service=SERVICE, connection=Connection("TCP", 443)))
    assert causes(trace) == [(2, "node1", "not-a-service-port", "broken")]
    assert "its ports: TCP 80" in trace.problems[0].message


def test_service_ports_follow_named_target_ports_published_by_the_slices() -> None:
    service = {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"},
                                  {"name": "dns", "port": 53, "protocol": "UDP"},
                                  {"name": "admin", "port": 9000, "targetPort": 9443}]}}
    slices = [{"addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [{"addresses": ["10.244.2.7"], "conditions": {"ready": True}},
                             {"addresses": ["10.244.3.9"], "conditions": {"ready": False}},
                             {"addresses": ["10.244.1.6"]}]},
              {"addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1"]}]}]
    assert service_ports(service, slices) == (ServicePort("http", "TCP", 80, 8080), ServicePort("dns", "UDP", 53, 53),
                                              ServicePort("admin", "TCP", 9000, 9443))
    assert ready_endpoint_addresses(slices) == (IP("10.244.2.7"), IP("10.244.1.6"))
    assert SERVICE.target_port(80, "TCP") == 8080 and SERVICE.target_port(80, "UDP") is None


# ----------------------------------------------------------------------------- --probe

def sighting(node: str, device: str, direction: str, kind: str = "echo-request", at: float = 0.0,
             encap: str = "none") -> ProbeSighting:
    src, dst = (A.ip, B.ip) if kind == "echo-request" else (B.ip, A.ip)
    outer = (IP("10.0.1.11"), IP("10.0.1.12")) if encap != "none" else (None, None)
    return ProbeSighting(node, device, direction, kind, encap, src, dst, at, *outer)


def probe(*sightings: ProbeSighting, sent: bool = True) -> ProbeResult:
    watches = {n: ProbeWatch(n, tuple(s for s in sightings if s.node == n)) for n in ("node1", "node2")}
    return ProbeResult("0123456789abcdef", "default/a", B.ip,
                       ProbeSend(sent, A.ip if sent else None, B.ip if sent else None,
                                 None if sent else "HTTP 403: packet probes are off on node node1"), watches)


ANSWERED = probe(sighting("node1", A.veth, "in", at=0.001), sighting("node1", "eth1", "out", at=0.002),
                 sighting("node2", "eth1", "in", at=0.001), sighting("node2", B.veth, "out", at=0.002),
                 sighting("node2", B.veth, "in", "echo-reply", 0.003), sighting("node2", "eth1", "out", "echo-reply", 0.004),
                 sighting("node1", "eth1", "in", "echo-reply", 0.005), sighting("node1", A.veth, "out", "echo-reply", 0.006))


def test_an_answered_probe_is_listed_along_the_path_and_back() -> None:
    trace = analysis.analyse(healthy_plain(probe=ANSWERED))
    assert trace.complete and trace.probe.answered
    assert [(s.node, s.device, s.kind) for s in trace.probe.sightings] == [
        ("node1", A.veth, "echo-request"), ("node1", "eth1", "echo-request"), ("node2", "eth1", "echo-request"),
        ("node2", B.veth, "echo-request"), ("node2", B.veth, "echo-reply"), ("node2", "eth1", "echo-reply"),
        ("node1", "eth1", "echo-reply"), ("node1", A.veth, "echo-reply")]
    text = render.text(trace)
    assert f"answered: the reply reached {A}" in text and "result: the path is complete" in text
    assert json.loads(render.as_json(trace))["probe"]["answered"] is True


def test_a_probe_lost_on_a_complete_path_says_where_it_was_seen_last() -> None:
    lost = probe(sighting("node1", A.veth, "in"), sighting("node1", "eth1", "out", encap="vxlan"),
                 sighting("node2", "eth1", "in", encap="vxlan"))
    trace = analysis.analyse(healthy_plain(probe=lost))
    assert causes(trace) == [(3, "node2", "probe-lost", "broken")]
    assert trace.problems[0].message.endswith(
        "was not answered: it was last seen on node2 eth1 (in, VXLAN 10.0.1.11 -> 10.0.1.12), and no reply")
    assert "outside what the trace reads" in trace.problems[0].fix
    assert "NOT answered" in render.text(trace)


def test_a_probe_dropped_by_policy_points_at_the_deny() -> None:
    policies = {"Ingress": PolicyVerdict("default/b", "Ingress", A.ip, Connection(), ("default/deny",), True, (),
                                         False)}
    lost = probe(sighting("node1", A.veth, "in"), sighting("node1", "eth1", "out"), sighting("node2", "eth1", "in"))
    trace = analysis.analyse(healthy_plain(policies=policies, probe=lost))
    assert causes(trace) == [(3, "node2", "policy-deny", "broken"), (3, "node2", "probe-lost", "broken")]
    assert trace.problems[1].fix == "see the problems above"


def test_a_probe_that_could_not_be_sent() -> None:
    trace = analysis.analyse(healthy_plain(probe=probe(sent=False)))
    assert causes(trace) == [(1, "node1", "probe-not-sent", "unknown")]
    assert "felix.packetProbe" in trace.problems[0].message + trace.problems[0].fix
    assert "not sent: HTTP 403" in render.text(trace)
