"""felix's VXLAN calculation: a Snapshot plus this node's local facts -> the VXLAN device
``vxlan.calico`` as felix wants it, the routes to other nodes' blocks in VXLAN pools, the
neighbour and forwarding entries of the remote tunnel endpoints (VTEPs), and the device's
teardown grace.

Pure code: no netlink, no Kubernetes client. VXLAN needs no routing protocol: every node
publishes its VTEP (address and MAC) in two Node annotations, and each felix derives the routes,
neighbours and FDB entries to every other node from the API alone, so it works with BGP
switched off entirely. Modes follow Calico's ``vxlanMode``:

* ``Always``: a remote block goes ``via REMOTE_VTEP dev vxlan.calico onlink``, with a permanent
  neighbour (``REMOTE_VTEP lladdr REMOTE_MAC``) and an FDB entry (``REMOTE_MAC dst REMOTE_NODE_IP``);
* ``CrossSubnet``: the same towards nodes outside this node's subnet; a node inside it is
  reached directly, ``via REMOTE_NODE_IP`` on the underlay interface.

Whether a pool, or the pool of a prefix, is in VXLAN mode is :func:`calyx.model.pool_wants_vxlan`
and :func:`calyx.model.vxlan_pool_containing`, shared with every component.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Mapping

from calyx import model
from calyx.naming import FELIX_ROUTE_PROTOCOL, VXLAN_DEVICE
from calyx.route import Route
from felix.grace import DevicePlan, plan_device

VXLAN_VNI = 4096
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50          # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


@dataclass(frozen=True)
class VxlanPeer:
    """A remote node's tunnel endpoint: its neighbour entry (vtep -> mac) and its FDB entry
    (mac -> underlay)."""

    node: str
    vtep: IPv4Address
    mac: str
    underlay: IPv4Address


@dataclass(frozen=True)
class VxlanSpec:
    """``vxlan.calico`` as felix wants it: present (VNI 4096, port 4789, source ``local``, one /32
    ``address``, ``mtu``, the peers' neighbour and FDB entries) or absent."""

    enabled: bool
    address: IPv4Address | None = None
    local: IPv4Address | None = None
    mtu: int | None = None
    peers: tuple[VxlanPeer, ...] = ()
    reason: str = ""
    device: str = VXLAN_DEVICE
    vni: int = VXLAN_VNI
    port: int = VXLAN_PORT


@dataclass(frozen=True)
class VxlanPlan:
    """The VXLAN part of the desired dataplane."""

    spec: VxlanSpec = field(default_factory=lambda: VxlanSpec(False, reason="no VXLAN pool"))
    routes: Mapping[IPv4Network, Route] = field(default_factory=dict)
    reasons: Mapping[IPv4Network, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def vxlan_route(block: IPv4Network, vtep: IPv4Address, device: str = VXLAN_DEVICE) -> Route:
    return Route(block, proto=FELIX_ROUTE_PROTOCOL, dev=device, gateway=vtep, onlink=True)


def direct_route(block: IPv4Network, next_hop: IPv4Address, device: str) -> Route:
    return Route(block, proto=FELIX_ROUTE_PROTOCOL, dev=device, gateway=next_hop)


def desired_vxlan(snapshot: model.Snapshot, node_name: str, underlay_mtu: int, mtu_override: int | None,
                  subnet: IPv4Network | None, underlay_device: str | None) -> VxlanPlan:
    """The device, routes and peers for VXLAN on ``node_name``.

    ``subnet`` is this node's underlay subnet (its address with the prefix of the interface
    holding it) and ``underlay_device`` that interface: CrossSubnet's direct routes use them.
    """
    node = snapshot.nodes.get(node_name)
    if node is None:
        return VxlanPlan(VxlanSpec(False, reason=f"node {node_name} unknown"))
    # every node carries VXLAN once any pool uses it: a node outside the pool's nodeSelector
    # still reaches the pool's pods on other nodes through it
    wanting = [p.name for _, p in sorted(snapshot.ippools.items()) if model.pool_wants_vxlan(p)]
    if not wanting:
        return VxlanPlan(VxlanSpec(False, reason="no pool uses VXLAN"))
    pools_text = ", ".join(wanting)
    address = model.node_tunnel_address(node, snapshot.blocks)
    local = model.node_address(node)
    if address is None or local is None:
        missing = "pod CIDR for a tunnel address" if address is None else "address (annotation or InternalIP)"
        return VxlanPlan(VxlanSpec(False, reason=f"VXLAN pool(s) {pools_text} but node {node_name} has no "
                                                 f"{missing}"),
                         problems=(f"node {node_name}: VXLAN pool(s) {pools_text} select it but it has no "
                                   f"{missing}; VXLAN is not set up",))
    routes: dict[IPv4Network, Route] = {}
    reasons: dict[IPv4Network, str] = {}
    problems: list[str] = []
    peers: list[VxlanPeer] = []
    for name in sorted(snapshot.nodes):
        if name == node_name:
            continue
        remote = snapshot.nodes[name]
        blocks = [(cidr, pool) for cidr in model.node_pod_cidrs(remote, snapshot.blocks)
                  if (pool := model.vxlan_pool_containing(snapshot.ippools, cidr)) is not None]
        if not blocks:
            continue
        underlay = model.node_address(remote)
        if underlay is None:
            problems.append(f"node {name}: no address (annotation or InternalIP); its VXLAN blocks "
                            f"{', '.join(str(c) for c, _ in blocks)} get no route")
            continue
        same_subnet = subnet is not None and underlay in subnet
        needs_tunnel = False
        for cidr, pool in blocks:
            if pool.vxlan_mode is model.EncapMode.CROSS_SUBNET and same_subnet:
                if underlay_device is None:
                    problems.append(f"node {name}: block {cidr} of VXLAN CrossSubnet pool {pool.name} is in "
                                    "this node's subnet but the underlay interface is unknown; no route")
                    continue
                routes[cidr] = direct_route(cidr, underlay, underlay_device)
                reasons[cidr] = f"block of node {name}, pool {pool.name} (VXLAN CrossSubnet, same subnet: direct)"
                continue
            needs_tunnel = True
            if remote.vxlan_tunnel_address is None or remote.vxlan_tunnel_mac is None:
                problems.append(f"node {name}: has not published its VXLAN tunnel endpoint yet "
                                f"({model.ANNOTATION_VXLAN_TUNNEL_ADDR}, {model.ANNOTATION_VXLAN_TUNNEL_MAC}); "
                                f"block {cidr} of pool {pool.name} gets no VXLAN route yet")
                continue
            routes[cidr] = vxlan_route(cidr, remote.vxlan_tunnel_address)
            reasons[cidr] = f"block of node {name}, pool {pool.name} (VXLAN {pool.vxlan_mode.value})"
        if needs_tunnel and remote.vxlan_tunnel_address is not None and remote.vxlan_tunnel_mac is not None:
            peers.append(VxlanPeer(name, remote.vxlan_tunnel_address, remote.vxlan_tunnel_mac, underlay))
    spec = VxlanSpec(True, address=address, local=local, mtu=mtu_override or underlay_mtu - VXLAN_OVERHEAD,
                     peers=tuple(peers), reason=f"VXLAN pool(s) {pools_text}")
    return VxlanPlan(spec, routes, reasons, tuple(problems))


# --- Device teardown grace ---------------------------------------------------------------------

def plan_vxlan_device(desired: VxlanSpec, present: bool, teardown_since: float | None, now: float,
                      grace: float) -> DevicePlan[VxlanSpec]:
    """Create or update ``vxlan.calico`` at once when VXLAN is wanted; remove it (``present``:
    it exists now) only ``grace`` seconds after it stopped being wanted (:mod:`felix.grace`), so
    peers still sending VXLAN while they switch are decapsulated meanwhile."""
    return plan_device(desired, desired.enabled, present, teardown_since, now, grace)


# --- The VTEP annotations felix publishes on its own Node ---------------------------------------

def vtep_annotations(address: IPv4Address | None, mac: str | None) -> dict[str, str | None]:
    """The Node annotations publishing this node's VTEP (None values: remove them)."""
    if address is None or mac is None:
        return {model.ANNOTATION_VXLAN_TUNNEL_ADDR: None, model.ANNOTATION_VXLAN_TUNNEL_MAC: None}
    return {model.ANNOTATION_VXLAN_TUNNEL_ADDR: str(address), model.ANNOTATION_VXLAN_TUNNEL_MAC: mac.lower()}


def published_vtep(node: model.NodeInfo | None) -> dict[str, str | None]:
    """The VTEP annotations ``node`` carries now, in :func:`vtep_annotations`' form."""
    if node is None:
        return vtep_annotations(None, None)
    return {model.ANNOTATION_VXLAN_TUNNEL_ADDR: (str(node.vxlan_tunnel_address)
                                                 if node.vxlan_tunnel_address is not None else None),
            model.ANNOTATION_VXLAN_TUNNEL_MAC: node.vxlan_tunnel_mac}
