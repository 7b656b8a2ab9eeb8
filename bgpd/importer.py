"""Import policy and install-mode decision for learned routes.

Pure code. A path received from a peer is accepted or refused (with the reason shown by
``bgpd routes``):

* From cluster peers (other nodes, whatever the session type): only prefixes inside an
  enabled IPPool, and never one overlapping this node's own pod CIDRs or addresses (no
  hijack of local pods, in either direction).
* From external peers: anything, except a prefix inside (or equal to) this node's own pod
  CIDRs or addresses, and except a prefix inside an enabled IPPool unless its NEXT_HOP is
  another cluster node (pod blocks belong to the nodes: an external route reflector may
  relay them, nobody else may claim them). Less specific routes such as a default route are
  accepted: longest match keeps local and pod traffic on the cluster's own routes.
* A next hop that is this node itself, or inside its pod CIDRs, is refused.

The install mode of an accepted route follows the ipipMode of the enabled pool containing
the prefix, using the route's BGP NEXT_HOP (not the session peer, so it works behind route
reflectors): Always -> IPIP (via NH dev tunl0 onlink); Never -> direct (via NH); CrossSubnet
-> direct when NH is inside this node's subnet, else IPIP. Routes outside every pool are
direct.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Mapping

from calyx.model import EncapMode, IPPool, pool_containing

from bgpd.rib import Path


class InstallMode(str, enum.Enum):
    IPIP = "ipip"        # via NH dev tunl0 onlink
    DIRECT = "direct"    # via NH (interface from the kernel's route to NH)


@dataclass(frozen=True)
class ImportContext:
    """What the import policy needs to know about this node and the cluster."""

    local: IPv4Interface                      # this node's BGP address with its subnet
    own_networks: tuple[IPv4Network, ...]     # pod CIDRs, tunnel address, other local addresses
    pools: Mapping[str, IPPool]
    cluster_next_hops: frozenset[IPv4Address] = frozenset()   # other nodes' BGP addresses

    @property
    def protected(self) -> tuple[IPv4Network, ...]:
        return self.own_networks + (IPv4Network(f"{self.local.ip}/32"),)


@dataclass(frozen=True)
class InstallDecision:
    prefix: IPv4Network
    next_hop: IPv4Address
    mode: InstallMode
    pool: str | None
    peer: IPv4Address


def refusal(path: Path, from_cluster_node: bool, ctx: ImportContext) -> str | None:
    """Why ``path`` is not accepted, or None when it is."""
    prefix, nh = path.prefix, path.attrs.next_hop
    for own in ctx.protected:
        if prefix.overlaps(own) and (from_cluster_node or prefix.subnet_of(own)):
            return f"prefix {prefix} overlaps this node's own {own}"
    if nh == ctx.local.ip or any(nh in own for own in ctx.own_networks):
        return f"next hop {nh} is this node"
    pool = pool_containing(ctx.pools, prefix)
    if from_cluster_node:
        if pool is None:
            return f"prefix {prefix} is outside every enabled IPPool"
    elif pool is not None and nh not in ctx.cluster_next_hops:
        return (f"prefix {prefix} is inside IPPool {pool.name!r} with next hop {nh}, which is no cluster "
                "node; only cluster nodes announce pod blocks")
    return None


def install_mode(prefix: IPv4Network, next_hop: IPv4Address, ctx: ImportContext) -> tuple[InstallMode, str | None]:
    pool = pool_containing(ctx.pools, prefix)
    if pool is None:
        return InstallMode.DIRECT, None
    if pool.ipip_mode is EncapMode.ALWAYS:
        return InstallMode.IPIP, pool.name
    if pool.ipip_mode is EncapMode.CROSS_SUBNET and next_hop not in ctx.local.network:
        return InstallMode.IPIP, pool.name
    return InstallMode.DIRECT, pool.name


def decide(best: Mapping[IPv4Network, Path], ctx: ImportContext) -> dict[IPv4Network, InstallDecision]:
    """Install decisions for the best (already accepted) path of each prefix."""
    out: dict[IPv4Network, InstallDecision] = {}
    for prefix, path in best.items():
        mode, pool = install_mode(prefix, path.attrs.next_hop, ctx)
        out[prefix] = InstallDecision(prefix=prefix, next_hop=path.attrs.next_hop, mode=mode,
                                      pool=pool, peer=path.peer)
    return out


def max_prefix_exceeded(received: int, limit: int | None) -> bool:
    return limit is not None and limit > 0 and received > limit
