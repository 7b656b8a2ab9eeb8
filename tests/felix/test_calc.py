"""felix.calc: snapshot -> desired dataplane, and the tunnel teardown grace (pure)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from calyx import model
from calyx.naming import cali_interface_name
from calyx.route import Route
from calyx.selector import Selector
from felix.grace import DevicePlan as TunnelPlan
from felix.calc import (
    LocalFacts,
    TunnelSpec,
    desired_dataplane,
    plan_tunnel,
)

NODE = "node-a"
POOL = model.IPPool("default", IPv4Network("10.244.0.0/16"), ipip_mode=model.EncapMode.ALWAYS)


def snapshot(pods=(), pools=(POOL,), node=None, blocks=()) -> model.Snapshot:
    node = node or model.NodeInfo(NODE, labels={"zone": "a"}, pod_cidrs=(IPv4Network("10.244.1.0/24"),))
    return model.Snapshot(
        nodes={node.name: node, "node-b": model.NodeInfo("node-b", pod_cidrs=(IPv4Network("10.244.2.0/24"),))},
        pods={p.key: p for p in pods},
        ippools={p.name: p for p in pools},
        blocks={b.name: b for b in blocks},
    )


def pod(name: str, ip: str, node: str = NODE, **kw) -> model.PodInfo:
    return model.PodInfo("default", name, node, ips=(IPv4Address(ip),), phase=kw.pop("phase", "Running"), **kw)


def test_local_running_pods_get_a_device_route_and_the_node_block_a_blackhole() -> None:
    desired = desired_dataplane(snapshot([pod("web-1", "10.244.1.5"), pod("web-2", "10.244.1.6")]),
                                LocalFacts(NODE, underlay_mtu=1500))
    web1 = Route(IPv4Network("10.244.1.5/32"), proto=80, dev=cali_interface_name("default", "web-1"), scope="link")
    assert desired.routes[web1.dst] == web1
    assert desired.routes[IPv4Network("10.244.1.0/24")] == Route(IPv4Network("10.244.1.0/24"), 80, kind="blackhole")
    assert set(desired.routes) == {web1.dst, IPv4Network("10.244.1.6/32"), IPv4Network("10.244.1.0/24")}
    assert desired.reasons[web1.dst] == "pod default/web-1 running"


def test_pods_felix_must_not_route() -> None:
    pods = [
        pod("remote", "10.244.2.5", node="node-b"),
        pod("host", "10.244.1.7", host_network=True),
        pod("done", "10.244.1.8", phase="Succeeded"),
        pod("failed", "10.244.1.9", phase="Failed"),
        pod("outside-pools", "192.168.7.7"),
        pod("pending", "10.244.1.10", phase="Pending"),
    ]
    desired = desired_dataplane(snapshot(pods), LocalFacts(NODE))
    pod_dsts = {d for d, r in desired.routes.items() if r.kind == "unicast"}
    assert pod_dsts == {IPv4Network("10.244.1.10/32")}


def test_a_disabled_pool_keeps_its_pod_routes_blackholes_and_tunnel() -> None:
    """Disabling a pool stops new allocations only: its running pods stay routed."""
    disabled = model.IPPool("default", POOL.cidr, ipip_mode=model.EncapMode.ALWAYS, disabled=True)
    facts = LocalFacts(NODE, underlay_mtu=1500)
    desired = desired_dataplane(snapshot([pod("web-1", "10.244.1.5")], pools=[disabled]), facts)
    assert desired == desired_dataplane(snapshot([pod("web-1", "10.244.1.5")]), facts)
    assert {IPv4Network("10.244.1.5/32"), IPv4Network("10.244.1.0/24")} <= set(desired.routes)
    assert desired.tunnel.enabled and desired.pod_mtu == 1480


def test_pods_outside_every_pool_left_in_the_snapshot_are_not_routed() -> None:
    """A pool refused for overlapping (calyx.ippools) is left out of the snapshot: as if absent."""
    desired = desired_dataplane(snapshot([pod("web-1", "10.244.1.5")], pools=[]), LocalFacts(NODE))
    assert IPv4Network("10.244.1.5/32") not in desired.routes
    assert not desired.tunnel.enabled and desired.tunnel.reason == "no pool uses IPIP"


def test_duplicate_pod_ips_keep_one_route_and_say_so() -> None:
    desired = desired_dataplane(snapshot([pod("a", "10.244.1.5"), pod("b", "10.244.1.5")]), LocalFacts(NODE))
    assert desired.routes[IPv4Network("10.244.1.5/32")].dev == cali_interface_name("default", "a")
    assert any("default/b" in p and "10.244.1.5" in p for p in desired.problems)


def test_blackholes_come_from_ipam_blocks_when_the_node_has_no_pod_cidrs() -> None:
    node = model.NodeInfo(NODE)
    blocks = [model.IPAMBlock("b1", IPv4Network("10.244.9.0/26"), NODE),
              model.IPAMBlock("b2", IPv4Network("10.244.9.64/26"), "node-b")]
    desired = desired_dataplane(snapshot(node=node, blocks=blocks), LocalFacts(NODE, underlay_mtu=9000))
    assert set(desired.routes) == {IPv4Network("10.244.9.0/26")}
    assert desired.tunnel.enabled and desired.tunnel.address == IPv4Address("10.244.9.0")
    assert desired.tunnel.mtu == 8980 and desired.pod_mtu == 8980


def test_tunnel_follows_the_pools_that_select_this_node() -> None:
    facts = LocalFacts(NODE, underlay_mtu=1500)
    on = desired_dataplane(snapshot(), facts)
    assert (on.tunnel.enabled, on.tunnel.address, on.tunnel.mtu, on.pod_mtu) == (
        True, IPv4Address("10.244.1.0"), 1480, 1480)
    cross = model.IPPool("default", POOL.cidr, ipip_mode=model.EncapMode.CROSS_SUBNET)
    assert desired_dataplane(snapshot(pools=[cross]), facts).tunnel.enabled
    never = model.IPPool("default", POOL.cidr, ipip_mode=model.EncapMode.NEVER)
    off = desired_dataplane(snapshot(pools=[never]), facts)
    assert not off.tunnel.enabled and off.pod_mtu == 1500
    elsewhere = model.IPPool("default", POOL.cidr, ipip_mode=model.EncapMode.ALWAYS,
                             node_selector=Selector.parse("zone == 'b'"))
    assert desired_dataplane(snapshot(pools=[elsewhere]), facts).tunnel.enabled   # its pods elsewhere
    override = desired_dataplane(snapshot(), LocalFacts(NODE, underlay_mtu=1500, mtu_override=1400))
    assert override.tunnel.mtu == 1400 and override.pod_mtu == 1400


def test_pod_mtu_leaves_room_for_ipip_before_the_node_has_a_block() -> None:
    """The node's first pod is created before its first block exists (the CNI claims it for
    that pod), so the tunnel has no address yet; that pod must still get the tunnel's MTU."""
    desired = desired_dataplane(snapshot(node=model.NodeInfo(NODE)), LocalFacts(NODE, underlay_mtu=1500))
    assert not desired.tunnel.enabled
    assert desired.pod_mtu == 1480


def test_pod_mtu_leaves_room_for_vxlan_before_the_node_has_a_block() -> None:
    """The same for VXLAN: no block yet, so no vxlan.calico yet, and still the VXLAN MTU."""
    vxlan = model.IPPool("default", POOL.cidr, vxlan_mode=model.EncapMode.ALWAYS)
    desired = desired_dataplane(snapshot(pools=[vxlan], node=model.NodeInfo(NODE)),
                                LocalFacts(NODE, underlay_mtu=1500))
    assert not desired.vxlan.enabled
    assert desired.pod_mtu == 1450


def test_unknown_own_node_means_no_blackholes_and_no_tunnel() -> None:
    desired = desired_dataplane(snapshot([pod("web-1", "10.244.1.5", node="ghost")]), LocalFacts("ghost"))
    assert set(desired.routes) == {IPv4Network("10.244.1.5/32")}
    assert not desired.tunnel.enabled


# --- plan_tunnel: the teardown grace ------------------------------------------------------

WANTED = TunnelSpec(True, address=IPv4Address("10.244.1.0"), mtu=1480, reason="IPIP pool(s) default")
UNWANTED = TunnelSpec(False, reason="no pool uses IPIP")


def test_tunnel_comes_up_at_once_and_cancels_a_running_grace() -> None:
    assert plan_tunnel(WANTED, False, None, now=100.0, grace=30.0) == TunnelPlan(WANTED)
    assert plan_tunnel(WANTED, True, 95.0, now=100.0, grace=30.0) == TunnelPlan(WANTED)


def test_tunnel_keeps_decapsulating_for_the_grace_then_is_torn_down() -> None:
    first = plan_tunnel(UNWANTED, True, None, now=100.0, grace=30.0)
    assert first == TunnelPlan(None, teardown_since=100.0, teardown_at=130.0) and first.draining
    later = plan_tunnel(UNWANTED, True, first.teardown_since, now=129.9, grace=30.0)
    assert later.spec is None and later.teardown_at == 130.0       # the grace does not slide
    done = plan_tunnel(UNWANTED, True, later.teardown_since, now=130.0, grace=30.0)
    assert done == TunnelPlan(UNWANTED) and not done.draining


def test_an_already_down_tunnel_and_a_zero_grace_are_torn_down_at_once() -> None:
    assert plan_tunnel(UNWANTED, False, None, now=100.0, grace=30.0) == TunnelPlan(UNWANTED)
    assert plan_tunnel(UNWANTED, True, None, now=100.0, grace=0.0) == TunnelPlan(UNWANTED)


def test_a_restarted_felix_starts_the_grace_again_instead_of_tearing_down() -> None:
    """After a restart felix has no memory of when the grace began (teardown_since None) but
    the kernel still decapsulates: the grace runs in full from the restart."""
    plan = plan_tunnel(UNWANTED, True, None, now=5.0, grace=30.0)
    assert plan.spec is None and plan.teardown_at == 35.0


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 10)), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_grace_never_ends_early_and_ends_on_time(steps: list[tuple[bool, float]]) -> None:
    """Replaying wanted/unwanted changes against a kernel that follows every plan: the tunnel is
    torn down only when IPIP has been unwanted for the whole grace, and never kept longer."""
    grace, now, kernel_up, since, plan = 5.0, 0.0, False, None, TunnelPlan(None)
    unwanted_from: float | None = None
    for wanted, dt in steps:
        now += dt
        unwanted_from = None if wanted else (now if unwanted_from is None else unwanted_from)
        plan = plan_tunnel(WANTED if wanted else UNWANTED, kernel_up, plan.teardown_since, now, grace)
        if plan.spec is not None:
            if not plan.spec.enabled and kernel_up:
                assert unwanted_from is not None and now >= unwanted_from + grace
            kernel_up = plan.spec.enabled
        else:
            assert kernel_up and unwanted_from is not None and now < unwanted_from + grace


def test_nat_outgoing_is_not_a_problem_any_more():
    """natOutgoing is programmed (felix.nat, the NAT manager): a pool asking for it is no
    input felix cannot honour."""
    node = model.NodeInfo(name="node1", pod_cidrs=(IPv4Network("10.244.1.0/24"),))
    pool = model.IPPool(name="nat-pool", cidr=IPv4Network("10.244.0.0/16"), nat_outgoing=True)
    snap = model.Snapshot(nodes={"node1": node}, ippools={"nat-pool": pool})
    assert desired_dataplane(snap, LocalFacts(node_name="node1")).problems == ()
