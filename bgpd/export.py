"""Export policy: what this node advertises to each peer (its desired Adj-RIB-Out).

Pure code. Advertised:
* to every peer: this node's pod CIDRs/blocks (``model.node_pod_cidrs``) with NEXT_HOP = this
  node's address, except those inside an IPPool with ``disableBGPExport``;
* to peers outside the cluster (BGPPeers whose address is no cluster node): the service
  CIDRs of BGPConfiguration (serviceClusterIPs, serviceExternalIPs, serviceLoadBalancerIPs),
  so networks behind those routers reach services; cluster nodes would refuse them anyway;
* on a route reflector: the reflected paths (see :mod:`bgpd.reflector`).
Nothing learned over iBGP is re-advertised except by reflection, and nothing learned over eBGP
is re-advertised at all (each node learns external routes from its own external peers).
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Mapping

from calyx.model import Snapshot, node_pod_cidrs

from bgpd.peers import LocalSpeaker, Peer
from bgpd.reflector import reflect
from bgpd.rib import Attributes, Path

AdjRibOut = dict[IPv4Address, dict[IPv4Network, Attributes]]


def own_prefixes(snapshot: Snapshot, node_name: str) -> tuple[IPv4Network, ...]:
    """This node's pod CIDRs that may be advertised (not in a disableBGPExport pool)."""
    node = snapshot.nodes[node_name]
    out = []
    for cidr in node_pod_cidrs(node, snapshot.blocks):
        quiet = any(p.disable_bgp_export and cidr.subnet_of(p.cidr) for p in snapshot.ippools.values())
        if not quiet:
            out.append(cidr)
    return tuple(sorted(set(out)))


def service_prefixes(snapshot: Snapshot) -> tuple[IPv4Network, ...]:
    c = snapshot.bgp_configuration
    return tuple(sorted(set(c.service_cluster_ips + c.service_external_ips + c.service_load_balancer_ips)))


@dataclass(frozen=True)
class ExportPolicy:
    """What the export decision of one prefix needs besides the path: this node, the configured
    peers, and the prefixes it originates."""

    local: LocalSpeaker
    peers: Mapping[IPv4Address, Peer]
    own: frozenset[IPv4Network]
    services: frozenset[IPv4Network]

    def originated(self) -> frozenset[IPv4Network]:
        return self.own | self.services

    def export(self, target: Peer, prefix: IPv4Network, best: Path | None) -> Attributes | None:
        """The attributes ``prefix`` is announced to ``target`` with, or None when it is not."""
        if prefix in self.own or (prefix in self.services and not target.is_cluster_node):
            return Attributes(next_hop=self.local.address)
        if best is None or self.local.cluster_id is None:
            return None
        sender = self.peers.get(best.peer)
        if sender is None:
            return None
        return reflect(self.local, best, sender, target)

    def full(self, target: Peer, best: Mapping[IPv4Network, Path]) -> dict[IPv4Network, Attributes]:
        """Everything announced to ``target``."""
        routes: dict[IPv4Network, Attributes] = {}
        for prefix in self.originated() | (best.keys() if self.local.cluster_id is not None else set()):
            attrs = self.export(target, prefix, best.get(prefix))
            if attrs is not None:
                routes[prefix] = attrs
        return routes


def adj_rib_out(local: LocalSpeaker, peers: Mapping[IPv4Address, Peer], established: set[IPv4Address],
                own: tuple[IPv4Network, ...], services: tuple[IPv4Network, ...],
                best: Mapping[IPv4Network, Path]) -> AdjRibOut:
    """For every established, configured peer: prefix -> attributes to announce."""
    policy = ExportPolicy(local, peers, frozenset(own), frozenset(services))
    return {address: policy.full(target, best) for address, target in peers.items()
            if address in established and target.error is None}
