"""felix's calculation: a Snapshot plus this node's local facts -> the desired dataplane (routes,
tunnel, VXLAN device, pod MTU), and the tunnel's teardown grace. The VXLAN part is calculated
by :mod:`felix.vxlancalc`.

Pure code: no netlink, no Kubernetes client, no sockets. Everything felix programs is a
function of its inputs here; the dataplane managers write the difference between it and the
kernel (routes through the shared :mod:`calyx.routesync`, under felix's ownership policy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Mapping

from calyx import model
from calyx.naming import FELIX_ROUTE_PROTOCOL, cali_interface_name
from calyx.route import Route
from felix.grace import DevicePlan, plan_device
from felix.vxlancalc import VXLAN_OVERHEAD, VxlanSpec, desired_vxlan

IPIP_OVERHEAD = 20
TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class LocalFacts:
    """What felix learns about its own node from the node itself rather than the API."""

    node_name: str
    underlay_mtu: int = 1500            # MTU of the interface holding the node's address
    mtu_override: int | None = None     # configuration: fixes tunnel and pod MTU
    subnet: IPv4Network | None = None   # the underlay subnet of the node's address (CrossSubnet)
    underlay_device: str | None = None  # the interface holding the node's address


@dataclass(frozen=True)
class TunnelSpec:
    """The IPIP device as felix wants it: present (with address and MTU) or absent."""

    enabled: bool
    address: IPv4Address | None = None
    mtu: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class DesiredDataplane:
    """Everything felix programs on its node."""

    routes: Mapping[IPv4Network, Route] = field(default_factory=dict)
    reasons: Mapping[IPv4Network, str] = field(default_factory=dict)   # why each route exists
    tunnel: TunnelSpec = field(default_factory=lambda: TunnelSpec(False, reason="no IPIP pool"))
    vxlan: VxlanSpec = field(default_factory=lambda: VxlanSpec(False, reason="no VXLAN pool"))
    pod_mtu: int = 1500
    problems: tuple[str, ...] = ()      # inputs felix could not honour (duplicate pod IPs, ...)
    # cali devices of local pods whose IP the API does not show yet: the CNI plugin has just
    # wired them (and written their route); their routes are kept until the pod's IP is known
    settling_devices: frozenset[str] = frozenset()


def pod_route(namespace: str, pod: str, ip: IPv4Address) -> Route:
    return Route(IPv4Network((ip, 32)), proto=FELIX_ROUTE_PROTOCOL, dev=cali_interface_name(namespace, pod),
                 scope="link")


def blackhole_route(cidr: IPv4Network) -> Route:
    return Route(cidr, proto=FELIX_ROUTE_PROTOCOL, kind="blackhole")


def _pod_is_local_and_live(pod: model.PodInfo, node_name: str) -> bool:
    return pod.node == node_name and not pod.host_network and pod.phase not in TERMINATED_PHASES


def desired_dataplane(snapshot: model.Snapshot, facts: LocalFacts) -> DesiredDataplane:
    """The routes, tunnel and pod MTU this node should have according to ``snapshot``."""
    routes: dict[IPv4Network, Route] = {}
    reasons: dict[IPv4Network, str] = {}
    problems: list[str] = []
    owners: dict[IPv4Network, str] = {}
    settling: set[str] = set()
    routing_pools = [pool.cidr for pool in snapshot.ippools.values()]   # disabled ones too

    for key in sorted(snapshot.pods):
        pod = snapshot.pods[key]
        if not _pod_is_local_and_live(pod, facts.node_name):
            continue
        who = f"{pod.namespace}/{pod.name}"
        if not pod.ips:
            settling.add(cali_interface_name(pod.namespace, pod.name))
        for ip in pod.ips:
            if not any(ip in cidr for cidr in routing_pools):
                continue
            route = pod_route(pod.namespace, pod.name, ip)
            if route.dst in owners:
                problems.append(f"pod {who}: IP {ip} is also used by pod {owners[route.dst]}; "
                                f"the route stays with {owners[route.dst]}")
                continue
            owners[route.dst] = who
            routes[route.dst] = route
            reasons[route.dst] = f"pod {who} {pod.phase.lower() or 'scheduled'}"

    node = snapshot.nodes.get(facts.node_name)
    tunnel = TunnelSpec(False, reason=f"node {facts.node_name} unknown")
    ipip = False   # an IPIP pool selects this node: pods get the tunnel's MTU from their start
    if node is not None:
        for cidr in model.node_pod_cidrs(node, snapshot.blocks):
            if cidr in routes:
                problems.append(f"node {facts.node_name}: pod CIDR {cidr} collides with a pod address")
                continue
            routes[cidr] = blackhole_route(cidr)
            reasons[cidr] = f"pod CIDR of node {facts.node_name}"
        # every node carries a mode any pool uses: a node outside a pool's nodeSelector still
        # sends to (and, through its tunnel, receives from) the pool's pods on other nodes
        wanting = [p.name for _, p in sorted(snapshot.ippools.items())
                   if p.ipip_mode in (model.EncapMode.ALWAYS, model.EncapMode.CROSS_SUBNET)]
        address = model.node_tunnel_address(node, snapshot.blocks)
        ipip = bool(wanting)
        if not wanting:
            tunnel = TunnelSpec(False, reason="no pool uses IPIP")
        elif address is None:
            tunnel = TunnelSpec(False, reason=f"IPIP pool(s) {', '.join(wanting)} but node "
                                              f"{facts.node_name} has no pod CIDR for a tunnel address")
        else:
            tunnel = TunnelSpec(True, address=address,
                                mtu=facts.mtu_override or facts.underlay_mtu - IPIP_OVERHEAD,
                                reason=f"IPIP pool(s) {', '.join(wanting)}")
    vxlan = desired_vxlan(snapshot, facts.node_name, facts.underlay_mtu, facts.mtu_override, facts.subnet,
                          facts.underlay_device)
    problems.extend(vxlan.problems)
    for dst, route in vxlan.routes.items():
        if dst in routes:
            problems.append(f"route to {dst} ({vxlan.reasons[dst]}) collides with {reasons[dst]}")
            continue
        routes[dst], reasons[dst] = route, vxlan.reasons[dst]
    # the largest encapsulation overhead of the modes any pool uses, whether or not this node's
    # devices exist yet: a node's first pod comes before its block, and so before the tunnel
    vxlan_used = any(model.pool_wants_vxlan(p) for p in snapshot.ippools.values())
    overhead = max(IPIP_OVERHEAD if ipip else 0, VXLAN_OVERHEAD if vxlan_used else 0)
    pod_mtu = facts.mtu_override or facts.underlay_mtu - overhead
    return DesiredDataplane(routes=routes, reasons=reasons, tunnel=tunnel, vxlan=vxlan.spec, pod_mtu=pod_mtu,
                            problems=tuple(problems), settling_devices=frozenset(settling))


# --- Tunnel teardown grace --------------------------------------------------------------------

def plan_tunnel(desired: TunnelSpec, decapsulating: bool, teardown_since: float | None, now: float,
                grace: float) -> DevicePlan[TunnelSpec]:
    """Bring ``tunl0`` up at once when IPIP is wanted; take it down only ``grace`` seconds after
    it stopped being wanted (:mod:`felix.grace`): while it keeps its address and stays up
    (``decapsulating``) the kernel decapsulates IPIP from peers that have not switched yet."""
    return plan_device(desired, desired.enabled, decapsulating, teardown_since, now, grace)
