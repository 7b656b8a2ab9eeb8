"""Import policy and install-mode decision for learned routes.

Pure code. A path received from a peer is accepted or refused (with the reason shown by
``bgpd routes``):

* From cluster peers (other nodes, whatever the session type): only prefixes inside an
  IPPool, and never one overlapping this node's own pod CIDRs or addresses (no
  hijack of local pods, in either direction). A ``disabled`` pool counts (disabling stops
  new allocations only; its pods keep being routed); a pool refused by :mod:`calyx.ippools`
  is absent from the snapshot.
* From external peers: anything, except a prefix inside (or equal to) this node's own pod
  CIDRs or addresses, and except a prefix inside an IPPool unless its NEXT_HOP is
  another cluster node (pod blocks belong to the nodes: an external route reflector may
  relay them, nobody else may claim them). Less specific routes such as a default route are
  accepted: longest match keeps local and pod traffic on the cluster's own routes.
* A next hop that is this node itself, or inside its pod CIDRs, is refused.

The install mode of an accepted route follows the ipipMode of the pool containing
the prefix, using the route's BGP NEXT_HOP (not the session peer, so it works behind route
reflectors): Always -> IPIP (via NH dev tunl0 onlink); Never -> direct (via NH); CrossSubnet
-> direct when NH is inside this node's subnet, else IPIP. Routes outside every pool are
direct. A prefix inside a pool with a vxlanMode other than Never is carried by felix (its VXLAN
route, or its direct route in CrossSubnet, from the API): bgpd installs nothing there, and a
route it installed before is left for felix to replace in place (:mod:`calyx.ownership`).

A mode change of an installed route toward IPIP is held back for a settle delay
(:func:`settle_ipip`): each node reacts to an IPPool change on its own, and the receiving node
decapsulates only once its felix has raised ``tunl0``. A change toward direct is immediate
(receivers keep decapsulating for felix's teardown grace), and a route installed for the first
time takes its mode at once (the receiving node's tunnel is already up, see docs/bgpd.md).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Mapping

from calyx.model import EncapMode, IPPool, pool_wants_vxlan, routing_pool_containing

from bgpd.rib import Path


class InstallMode(str, enum.Enum):
    IPIP = "ipip"        # via NH dev tunl0 onlink
    DIRECT = "direct"    # via NH (interface from the kernel's route to NH)
    VXLAN = "vxlan"      # a VXLAN pool's block: felix programs it, bgpd installs nothing


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
    ipip_at: float | None = None    # held direct until then (settle delay), IPIP afterwards


@dataclass(frozen=True)
class Installed:
    """How a prefix is routed in the kernel now (VXLAN: by felix's route to a VXLAN pool's block)."""

    mode: InstallMode
    next_hop: IPv4Address | None    # None: not known (a route adopted at start)


@dataclass(frozen=True)
class Settled:
    """:func:`settle_ipip`'s result: the decisions to install and the state for the next call."""

    decisions: dict[IPv4Network, InstallDecision]
    ipip_wanted_since: dict[IPv4Network, float]    # installed direct, IPIP wanted: since when
    wake_at: float | None                          # the earliest end of a hold


def refusal(path: Path, from_cluster_node: bool, ctx: ImportContext) -> str | None:
    """Why ``path`` is not accepted, or None when it is."""
    prefix, nh = path.prefix, path.attrs.next_hop
    for own in ctx.protected:
        if prefix.overlaps(own) and (from_cluster_node or prefix.subnet_of(own)):
            return f"prefix {prefix} overlaps this node's own {own}"
    if nh == ctx.local.ip or any(nh in own for own in ctx.own_networks):
        return f"next hop {nh} is this node"
    pool = routing_pool_containing(ctx.pools, prefix)
    if from_cluster_node:
        if pool is None:
            return f"prefix {prefix} is outside every IPPool"
    elif pool is not None and nh not in ctx.cluster_next_hops:
        return (f"prefix {prefix} is inside IPPool {pool.name!r} with next hop {nh}, which is no cluster "
                "node; only cluster nodes announce pod blocks")
    return None


def install_mode(prefix: IPv4Network, next_hop: IPv4Address, ctx: ImportContext) -> tuple[InstallMode, str | None]:
    pool = routing_pool_containing(ctx.pools, prefix)
    if pool is None:
        return InstallMode.DIRECT, None
    if pool_wants_vxlan(pool):
        return InstallMode.VXLAN, pool.name
    if pool.ipip_mode is EncapMode.ALWAYS:
        return InstallMode.IPIP, pool.name
    if pool.ipip_mode is EncapMode.CROSS_SUBNET and next_hop not in ctx.local.network:
        return InstallMode.IPIP, pool.name
    return InstallMode.DIRECT, pool.name


def decision(path: Path, ctx: ImportContext) -> InstallDecision:
    """The install decision for the best (already accepted) path of its prefix."""
    mode, pool = install_mode(path.prefix, path.attrs.next_hop, ctx)
    return InstallDecision(prefix=path.prefix, next_hop=path.attrs.next_hop, mode=mode, pool=pool, peer=path.peer)


def decide(best: Mapping[IPv4Network, Path], ctx: ImportContext) -> dict[IPv4Network, InstallDecision]:
    """Install decisions for the best (already accepted) path of each prefix."""
    return {prefix: decision(path, ctx) for prefix, path in best.items()}


def settle_ipip(wanted: Mapping[IPv4Network, InstallDecision], installed: Mapping[IPv4Network, Installed],
                ipip_wanted_since: Mapping[IPv4Network, float], now: float, delay: float) -> Settled:
    """Hold back the move of installed direct routes to IPIP until ``delay`` seconds after it
    was first wanted (``ipip_wanted_since``, from the previous call).

    Only a mode transition toward the same node is held: a route installed direct via the next
    hop it now wants in IPIP (or via an unknown one: adopted at start), or felix's VXLAN route
    to a block whose pool moved to IPIP (held in VXLAN mode: felix's route keeps carrying the
    traffic). New prefixes, changed next hops and moves to direct are installed as wanted. A
    prefix wanted direct again during its hold forgets it.
    """
    decisions: dict[IPv4Network, InstallDecision] = {}
    since_out: dict[IPv4Network, float] = {}
    wake_at: float | None = None
    for prefix, decision in wanted.items():
        have = installed.get(prefix)
        if (decision.mode is InstallMode.IPIP and have is not None
                and have.mode in (InstallMode.DIRECT, InstallMode.VXLAN)
                and have.next_hop in (None, decision.next_hop)):
            since = min(ipip_wanted_since.get(prefix, now), now)
            since_out[prefix] = since     # kept until installed: a failed write is retried at once
            due = since + delay
            if now < due:
                decisions[prefix] = replace(decision, mode=have.mode, ipip_at=due)
                wake_at = due if wake_at is None else min(wake_at, due)
                continue
        decisions[prefix] = decision
    return Settled(decisions=decisions, ipip_wanted_since=since_out, wake_at=wake_at)


def max_prefix_exceeded(received: int, limit: int | None) -> bool:
    return limit is not None and limit > 0 and received > limit
