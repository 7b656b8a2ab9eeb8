"""felix's outgoing-NAT calculation: a Snapshot -> the NAT state this node should program for
IPPools with ``natOutgoing``.

Traffic whose source lies in a pool with ``natOutgoing: true`` and whose destination lies
outside every pool and is not an address of a node of the cluster leaves the node masqueraded
to the node's own address. Traffic between pods, to pools without ``natOutgoing`` and to node
addresses keeps its pod source address. Disabled pools count like any other: ``disabled``
only stops new allocations, and the pods already holding addresses from them keep working.
Every node programs every such pool, whatever its nodeSelector: only nodes with pods of the
pool ever see its traffic.

Pure code: the result is data; :mod:`felix.dataplane.nftjson` turns it into nftables commands.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, collapse_addresses
from typing import Iterable

from calyx import model


@dataclass(frozen=True)
class NatState:
    """The outgoing NAT a node programs. Empty (no masquerade source) means no NAT at all."""

    masquerade_sources: tuple[IPv4Network, ...] = ()   # CIDRs of pools with natOutgoing, collapsed
    pool_cidrs: tuple[IPv4Network, ...] = ()           # CIDRs of every pool, collapsed
    node_addresses: tuple[IPv4Address, ...] = ()       # every node's address(es), sorted
    reason: str = "no IPPool has natOutgoing"

    @property
    def wanted(self) -> bool:
        return bool(self.masquerade_sources)


NO_NAT = NatState()


def collapse(cidrs: Iterable[IPv4Network]) -> tuple[IPv4Network, ...]:
    """Sorted CIDRs with nested and adjacent ones merged, so no two overlap (an nftables interval
    set refuses overlapping elements)."""
    return tuple(sorted(collapse_addresses(set(cidrs))))


def node_addresses(nodes: Iterable[model.NodeInfo]) -> tuple[IPv4Address, ...]:
    """The addresses nodes are reached at: the BGP address and the InternalIP of each."""
    found: set[IPv4Address] = set()
    for node in nodes:
        if node.bgp_address is not None:
            found.add(node.bgp_address.ip)
        if node.internal_ip is not None:
            found.add(node.internal_ip)
    return tuple(sorted(found))


def desired_nat(snapshot: model.Snapshot) -> NatState:
    """The NAT state every node should program according to ``snapshot`` (disabled pools
    included)."""
    pools = [snapshot.ippools[name] for name in sorted(snapshot.ippools)]
    nat_pools = [pool for pool in pools if pool.nat_outgoing]
    if not nat_pools:
        return NO_NAT
    return NatState(masquerade_sources=collapse(pool.cidr for pool in nat_pools),
                    pool_cidrs=collapse(pool.cidr for pool in pools),
                    node_addresses=node_addresses(snapshot.nodes.values()),
                    reason=f"natOutgoing on IPPool(s) {', '.join(pool.name for pool in nat_pools)}")
