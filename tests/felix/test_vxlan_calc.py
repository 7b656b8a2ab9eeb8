"""felix.vxlancalc and its part in felix.calc: VXLAN device, routes, peers, CrossSubnet, problems,
pod MTU and the device's teardown grace (pure)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from calyx import model
from calyx.route import Route
from felix.calc import LocalFacts, desired_dataplane
from felix.vxlancalc import (
    VxlanPeer,
    VxlanSpec,
    plan_vxlan_device,
    published_vtep,
    vtep_annotations,
)

A, B, C = "node-a", "node-b", "node-c"
ALWAYS = model.IPPool("vx", IPv4Network("10.244.0.0/16"), vxlan_mode=model.EncapMode.ALWAYS)
CROSS = model.IPPool("vx", IPv4Network("10.244.0.0/16"), vxlan_mode=model.EncapMode.CROSS_SUBNET)
SUBNET = IPv4Network("192.168.1.0/24")


def node(name: str, address: str, block: str, vtep: str | None = None, mac: str | None = None) -> model.NodeInfo:
    return model.NodeInfo(name, bgp_address=IPv4Interface(address), pod_cidrs=(IPv4Network(block),),
                          vxlan_tunnel_address=IPv4Address(vtep) if vtep else None, vxlan_tunnel_mac=mac)


NODES = [
    node(A, "192.168.1.10/24", "10.244.1.0/24"),
    node(B, "192.168.1.11/24", "10.244.2.0/24", "10.244.2.0", "66:00:00:00:00:0b"),   # same subnet
    node(C, "192.168.2.12/24", "10.244.3.0/24", "10.244.3.0", "66:00:00:00:00:0c"),   # other subnet
]


def snapshot(pools=(ALWAYS,), nodes=NODES) -> model.Snapshot:
    return model.Snapshot(nodes={n.name: n for n in nodes}, ippools={p.name: p for p in pools})


FACTS = LocalFacts(A, underlay_mtu=1500, subnet=SUBNET, underlay_device="eth1")


def test_always_routes_every_remote_block_through_the_vtep_and_programs_its_peer() -> None:
    desired = desired_dataplane(snapshot(), FACTS)
    assert desired.vxlan == VxlanSpec(
        True, address=IPv4Address("10.244.1.0"), local=IPv4Address("192.168.1.10"), mtu=1450,
        peers=(VxlanPeer(B, IPv4Address("10.244.2.0"), "66:00:00:00:00:0b", IPv4Address("192.168.1.11")),
               VxlanPeer(C, IPv4Address("10.244.3.0"), "66:00:00:00:00:0c", IPv4Address("192.168.2.12"))),
        reason="VXLAN pool(s) vx")
    assert desired.routes[IPv4Network("10.244.2.0/24")] == Route(
        IPv4Network("10.244.2.0/24"), 80, dev="vxlan.calico", gateway=IPv4Address("10.244.2.0"), onlink=True)
    assert str(desired.routes[IPv4Network("10.244.3.0/24")]) == (
        "10.244.3.0/24 via 10.244.3.0 dev vxlan.calico proto 80 onlink")
    assert desired.routes[IPv4Network("10.244.1.0/24")].kind == "blackhole"        # the node's own block
    assert desired.reasons[IPv4Network("10.244.2.0/24")] == "block of node node-b, pool vx (VXLAN Always)"
    assert desired.pod_mtu == 1450 and desired.problems == ()
    assert not desired.tunnel.enabled


def test_cross_subnet_goes_direct_inside_the_subnet_and_vxlan_across() -> None:
    desired = desired_dataplane(snapshot(pools=(CROSS,)), FACTS)
    assert str(desired.routes[IPv4Network("10.244.2.0/24")]) == "10.244.2.0/24 via 192.168.1.11 dev eth1 proto 80"
    assert str(desired.routes[IPv4Network("10.244.3.0/24")]) == (
        "10.244.3.0/24 via 10.244.3.0 dev vxlan.calico proto 80 onlink")
    assert [p.node for p in desired.vxlan.peers] == [C]          # only nodes reached through the tunnel
    assert desired.pod_mtu == 1450


def test_cross_subnet_needs_neither_vtep_annotations_nor_the_tunnel_within_the_subnet() -> None:
    unpublished = [NODES[0], node(B, "192.168.1.11/24", "10.244.2.0/24")]
    desired = desired_dataplane(snapshot(pools=(CROSS,), nodes=unpublished), FACTS)
    assert desired.routes[IPv4Network("10.244.2.0/24")].gateway == IPv4Address("192.168.1.11")
    assert desired.problems == ()


def test_a_remote_node_without_a_published_vtep_gets_no_route_and_is_reported() -> None:
    nodes = [NODES[0], node(B, "192.168.1.11/24", "10.244.2.0/24"), NODES[2]]
    desired = desired_dataplane(snapshot(nodes=nodes), FACTS)
    assert IPv4Network("10.244.2.0/24") not in desired.routes
    assert IPv4Network("10.244.3.0/24") in desired.routes
    assert [p.node for p in desired.vxlan.peers] == [C]
    assert desired.problems == (
        "node node-b: has not published its VXLAN tunnel endpoint yet (calyx.dev/ipv4-vxlan-tunnel-addr, "
        "calyx.dev/vxlan-tunnel-mac); block 10.244.2.0/24 of pool vx gets no VXLAN route yet",)


def test_no_vxlan_pool_no_device_no_routes() -> None:
    ipip = model.IPPool("ip", IPv4Network("10.244.0.0/16"), ipip_mode=model.EncapMode.ALWAYS)
    desired = desired_dataplane(snapshot(pools=(ipip,)), FACTS)
    assert not desired.vxlan.enabled
    assert desired.vxlan.reason == "no pool uses VXLAN"
    assert set(desired.routes) == {IPv4Network("10.244.1.0/24")}
    assert desired.pod_mtu == 1480


def test_a_disabled_or_unselecting_vxlan_pool_still_wants_the_device() -> None:
    """Disabling stops allocations only, and a node outside the pool's nodeSelector still
    reaches the pool's pods on the other nodes: both keep VXLAN."""
    disabled = model.IPPool("vx", ALWAYS.cidr, vxlan_mode=model.EncapMode.ALWAYS, disabled=True)
    assert desired_dataplane(snapshot(pools=(disabled,)), FACTS).vxlan.enabled
    elsewhere = model.IPPool("vx", ALWAYS.cidr, vxlan_mode=model.EncapMode.ALWAYS,
                             node_selector=model.Selector.parse("zone == 'b'"))
    desired = desired_dataplane(snapshot(pools=(elsewhere,)), FACTS)
    assert desired.vxlan.enabled and desired.pod_mtu == 1450
    never = model.IPPool("vx", ALWAYS.cidr)
    assert not desired_dataplane(snapshot(pools=(never,)), FACTS).vxlan.enabled


def test_blocks_outside_vxlan_pools_are_not_routed_by_felix() -> None:
    plain = model.IPPool("plain", IPv4Network("10.244.3.0/24"))   # longest match: node-c's block
    desired = desired_dataplane(snapshot(pools=(ALWAYS, plain)), FACTS)
    assert IPv4Network("10.244.3.0/24") not in desired.routes
    assert [p.node for p in desired.vxlan.peers] == [B]


def test_mtu_override_fixes_device_and_pod_mtu() -> None:
    desired = desired_dataplane(snapshot(), LocalFacts(A, underlay_mtu=9000, mtu_override=1400, subnet=SUBNET))
    assert desired.vxlan.mtu == 1400 and desired.pod_mtu == 1400
    assert desired_dataplane(snapshot(), LocalFacts(A, underlay_mtu=9000)).pod_mtu == 8950


def test_pod_mtu_takes_the_largest_overhead_of_the_modes_in_use() -> None:
    ipip = model.IPPool("ip", IPv4Network("10.250.0.0/16"), ipip_mode=model.EncapMode.ALWAYS)
    desired = desired_dataplane(snapshot(pools=(ALWAYS, ipip)), FACTS)
    assert desired.tunnel.enabled and desired.vxlan.enabled and desired.pod_mtu == 1450


def test_a_node_without_a_tunnel_address_reports_it() -> None:
    bare = model.NodeInfo(A, bgp_address=IPv4Interface("192.168.1.10/24"))
    desired = desired_dataplane(snapshot(nodes=[bare, NODES[1]]), FACTS)
    assert not desired.vxlan.enabled
    assert desired.problems == ("node node-a: VXLAN pool(s) vx select it but it has no pod CIDR for a tunnel "
                                "address; VXLAN is not set up",)


def test_the_vtep_address_follows_the_tunnel_address_override() -> None:
    own = model.NodeInfo(A, bgp_address=IPv4Interface("192.168.1.10/24"), pod_cidrs=(IPv4Network("10.244.1.0/24"),),
                         tunnel_address_override=IPv4Address("10.244.1.1"))
    assert desired_dataplane(snapshot(nodes=[own, NODES[1]]), FACTS).vxlan.address == IPv4Address("10.244.1.1")


def test_pool_mode_queries() -> None:
    pools = {"vx": CROSS, "ip": model.IPPool("ip", IPv4Network("10.250.0.0/16"), ipip_mode=model.EncapMode.ALWAYS)}
    assert model.pool_wants_vxlan(CROSS) and not model.pool_wants_vxlan(pools["ip"])
    disabled = model.IPPool("vx", CROSS.cidr, vxlan_mode=model.EncapMode.ALWAYS, disabled=True)
    assert model.pool_wants_vxlan(disabled)        # disabling stops allocations only
    assert model.vxlan_pool_containing(pools, IPv4Network("10.244.7.0/26")) is CROSS
    assert model.vxlan_pool_containing(pools, IPv4Address("10.244.7.1")) is CROSS
    assert model.vxlan_pool_containing(pools, IPv4Network("10.250.7.0/26")) is None
    assert model.vxlan_pool_containing(pools, IPv4Network("172.16.0.0/24")) is None


def test_vtep_annotations_published_and_removed() -> None:
    assert vtep_annotations(IPv4Address("10.244.1.0"), "66:AA:00:00:00:01") == {
        "calyx.dev/ipv4-vxlan-tunnel-addr": "10.244.1.0", "calyx.dev/vxlan-tunnel-mac": "66:aa:00:00:00:01"}
    assert vtep_annotations(None, None) == published_vtep(NODES[0]) == {
        "calyx.dev/ipv4-vxlan-tunnel-addr": None, "calyx.dev/vxlan-tunnel-mac": None}
    assert published_vtep(NODES[1]) == vtep_annotations(IPv4Address("10.244.2.0"), "66:00:00:00:00:0b")


# --- device teardown grace -------------------------------------------------------------------------

ON = VxlanSpec(True, address=IPv4Address("10.244.1.0"), local=IPv4Address("192.168.1.10"), mtu=1450)
OFF = VxlanSpec(False, reason="no pool uses VXLAN")


def test_wanted_is_programmed_at_once_and_absent_needs_no_grace() -> None:
    assert plan_vxlan_device(ON, present=False, teardown_since=None, now=5, grace=30).spec == ON
    assert plan_vxlan_device(OFF, present=False, teardown_since=None, now=5, grace=30).spec == OFF


def test_the_device_outlives_the_last_vxlan_pool_by_the_grace() -> None:
    first = plan_vxlan_device(OFF, present=True, teardown_since=None, now=100, grace=30)
    assert first.spec is None and first.draining and first.teardown_at == 130
    later = plan_vxlan_device(OFF, present=True, teardown_since=first.teardown_since, now=129, grace=30)
    assert later.spec is None and later.teardown_at == 130
    done = plan_vxlan_device(OFF, present=True, teardown_since=first.teardown_since, now=130, grace=30)
    assert done.spec == OFF and not done.draining
    again = plan_vxlan_device(ON, present=True, teardown_since=first.teardown_since, now=110, grace=30)
    assert again.spec == ON and not again.draining
    assert plan_vxlan_device(OFF, present=True, teardown_since=None, now=100, grace=0).spec == OFF
