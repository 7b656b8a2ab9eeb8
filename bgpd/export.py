"""Export policy: what this node advertises to each peer (its desired Adj-RIB-Out).

Pure code. Advertised:
* to every peer: this node's pod CIDRs/blocks (``model.node_pod_cidrs``) with NEXT_HOP = this
  node's address (the session's local address when its BGPPeer says ``sourceAddress: None``),
  except those inside an IPPool with ``disableBGPExport``;
* to peers outside the cluster (BGPPeers whose address is no cluster node): the service
  prefixes of :mod:`bgpd.services` (the ranges of BGPConfiguration's serviceClusterIPs,
  serviceExternalIPs and serviceLoadBalancerIPs, and the /32s of Services this node has ready
  endpoints of), so networks behind those routers reach Services. Cluster nodes are not sent
  them: they have the Services themselves (Calico sends them and has every node reject them on
  import; not sending them comes to the same);
* on a route reflector: the reflected paths (see :mod:`bgpd.reflector`);
* to eBGP peers: the best paths learned over iBGP for prefixes inside an IPPool without
  ``disableBGPExport`` (other nodes' blocks, as Calico's export filter passes them), with
  NEXT_HOP = this node's address, or the path's own next hop when the peer's BGPPeer sets
  ``keepOriginalNextHop``. LOCAL_PREF, MED, ORIGINATOR_ID and CLUSTER_LIST stay in this AS.
Nothing else learned over iBGP is re-advertised (iBGP peers only get reflected paths), and
nothing learned over eBGP is re-advertised at all (each node learns external routes from its
own external peers).
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


def exportable_pools(snapshot: Snapshot) -> tuple[IPv4Network, ...]:
    """The pool CIDRs whose learned routes may go on to eBGP peers (not disableBGPExport)."""
    return tuple(sorted({p.cidr for p in snapshot.ippools.values() if not p.disable_bgp_export}))


@dataclass(frozen=True)
class ExportPolicy:
    """What the export decision of one prefix needs besides the path: this node, the configured
    peers, and the prefixes it originates."""

    local: LocalSpeaker
    peers: Mapping[IPv4Address, Peer]
    own: frozenset[IPv4Network]
    services: frozenset[IPv4Network]
    pools: frozenset[IPv4Network] = frozenset()      # learned routes inside these go on to eBGP peers

    def originated(self) -> frozenset[IPv4Network]:
        return self.own | self.services

    def export(self, target: Peer, prefix: IPv4Network, best: Path | None) -> Attributes | None:
        """The attributes ``prefix`` is announced to ``target`` with, or None when it is not."""
        if prefix in self.own or (prefix in self.services and not target.is_cluster_node):
            return Attributes(next_hop=self.next_hop_self(target))
        if best is None:
            return None
        sender = self.peers.get(best.peer)
        if sender is None:
            return None
        if target.ebgp:
            return self.to_ebgp(target, prefix, best, sender)
        if self.local.cluster_id is None:
            return None
        return reflect(self.local, best, sender, target)

    def next_hop_self(self, target: Peer) -> IPv4Address | None:
        """This node as next hop toward ``target``: its BGP address, or None (ExaBGP's "self":
        the session's local address) when the kernel picks the session's source."""
        return self.local.address if target.local_address is not None else None

    def to_ebgp(self, target: Peer, prefix: IPv4Network, best: Path, sender: Peer) -> Attributes | None:
        """An iBGP-learned pool route passed on to the eBGP peer ``target``: next hop this node,
        or the path's own with ``keepOriginalNextHop``; attributes of this AS left behind."""
        if sender.ebgp or sender.address == target.address:
            return None
        if not any(prefix.subnet_of(pool) for pool in self.pools):
            return None
        next_hop = best.attrs.next_hop if target.keep_original_next_hop else self.next_hop_self(target)
        if next_hop == target.address:
            return None     # the peer is the next hop itself: it has the route already
        # ExaBGP sends an AS path it is given as it is: this AS goes in front here.
        return Attributes(next_hop=next_hop, origin=best.attrs.origin,
                          as_path=(self.local.as_number,) + best.attrs.as_path,
                          as_set=best.attrs.as_set, communities=best.attrs.communities)

    def passes_learned(self, target: Peer) -> bool:
        """Whether ``target`` may be sent routes this node learned from other peers."""
        return target.ebgp or self.local.cluster_id is not None

    def full(self, target: Peer, best: Mapping[IPv4Network, Path]) -> dict[IPv4Network, Attributes]:
        """Everything announced to ``target``."""
        routes: dict[IPv4Network, Attributes] = {}
        for prefix in self.originated() | (best.keys() if self.passes_learned(target) else set()):
            attrs = self.export(target, prefix, best.get(prefix))
            if attrs is not None:
                routes[prefix] = attrs
        return routes


def adj_rib_out(local: LocalSpeaker, peers: Mapping[IPv4Address, Peer], established: set[IPv4Address],
                own: tuple[IPv4Network, ...], services: tuple[IPv4Network, ...],
                best: Mapping[IPv4Network, Path], pools: tuple[IPv4Network, ...] = ()) -> AdjRibOut:
    """For every established, configured peer: prefix -> attributes to announce."""
    policy = ExportPolicy(local, peers, frozenset(own), frozenset(services), frozenset(pools))
    return {address: policy.full(target, best) for address, target in peers.items()
            if address in established and target.error is None}
