"""Which IPPools Calyx uses: the rules across pools that one IPPool object cannot state.

Pure calculation. The API server checks each IPPool alone (the CRD schema, and
:func:`calyx.model.parse_ippool`); it cannot check one pool against the others, the Service CIDR
or the nodes' networks. :func:`refusals` does, over what a snapshot holds, and felix and bgpd
(through :class:`calyx.kube.datastore.Datastore`, which leaves refused pools out of every
snapshot and reports them) and the CNI plugin's IPAM (:mod:`calyx.cni.blocks`) all call it, so
every component refuses the same pools.

A pool is refused, and then used neither for allocation nor for routing, when its CIDR overlaps

* the CIDR of another pool that is kept: of two overlapping pools the one created later
  (``metadata.creationTimestamp``; the name breaks ties) is refused, so the pool in use stays;
* a Service CIDR (``BGPConfiguration`` ``spec.serviceClusterIPs``);
* the network of a node's address (``NodeInfo.bgp_address`` with its prefix length; a node
  known only by its InternalIP contributes that single address).

Pools are checked oldest first; a pool refused for any reason does not make a later one
overlapping it refused as well.

A pool already *in use* (some IPAM block or node pod CIDR lies in it: pods may hold its
addresses) is never refused for overlapping a Service CIDR or a node network: such an overlap
appears when a node joins or a Service CIDR is added after the pool, and refusing the pool then
would cut off pods that work. It is kept and the overlap is reported all the same
(:func:`conflicts`), for the operator to migrate the pool away.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from typing import AbstractSet, Iterable, Mapping

from calyx.model import KIND_IPPOOL, BGPConfiguration, IPAMBlock, IPPool, NodeInfo, Snapshot, ValidationError

CIDR_FIELD = "spec.cidr"


def _age_order(pool: IPPool) -> tuple[bool, str, str]:
    """Oldest first; a pool without a creation time (never so from the API) after all others."""
    return (not pool.created, pool.created, pool.name)


def _node_networks(nodes: Iterable[NodeInfo]) -> dict[IPv4Network, str]:
    """The network of each node's address -> the first node (by name) on it: what a message names,
    the same whatever order the nodes come in."""
    networks: dict[IPv4Network, str] = {}
    for node in nodes:
        if node.bgp_address is not None:
            network = node.bgp_address.network
            if network not in networks or node.name < networks[network]:
                networks[network] = node.name
    return networks


NOT_USED = "the pool is not used for allocation or routing"


def _error(pool: IPPool, problem: str) -> ValidationError:
    return ValidationError(KIND_IPPOOL, pool.name, CIDR_FIELD, str(pool.cidr), problem)


@dataclass(frozen=True)
class PoolConflict:
    """One pool's conflict with another pool, a Service CIDR or a node network."""

    error: ValidationError      # names the pool, spec.cidr, its value and what it overlaps
    refused: bool               # False: the pool is in use and kept all the same


def pools_in_use(pools: Mapping[str, IPPool], blocks: Iterable[IPAMBlock],
                 nodes: Iterable[NodeInfo]) -> frozenset[str]:
    """The names of the pools holding an IPAM block (not being deleted) or a node's
    ``spec.podCIDRs``: pods may hold their addresses."""
    held = [block.cidr for block in blocks if not block.deleted]
    held += [cidr for node in nodes for cidr in node.pod_cidrs]
    return frozenset(name for name, pool in pools.items() if any(c.overlaps(pool.cidr) for c in held))


def conflicts(pools: Mapping[str, IPPool], nodes: Mapping[str, NodeInfo] | Iterable[NodeInfo],
              config: BGPConfiguration, in_use: AbstractSet[str] = frozenset()) -> dict[str, PoolConflict]:
    """pool name -> its conflict, for every pool that overlaps a kept pool, a Service CIDR or a
    node's network. A pool in ``in_use`` overlapping only a Service CIDR or a node network is
    kept (``refused`` False); every other conflict refuses the pool."""
    node_values = nodes.values() if isinstance(nodes, Mapping) else nodes
    node_networks = _node_networks(node_values)
    kept: list[IPPool] = []
    found: dict[str, PoolConflict] = {}
    for pool in sorted(pools.values(), key=_age_order):
        service = next((cidr for cidr in config.service_cluster_ips if cidr.overlaps(pool.cidr)), None)
        node_network = min((net for net in node_networks if net.overlaps(pool.cidr)), default=None)
        older = next((other for other in kept if other.cidr.overlaps(pool.cidr)), None)
        problem = None
        if service is not None:
            problem = (f"overlaps the Service CIDR {service} "
                       f"(BGPConfiguration {config.name!r} spec.serviceClusterIPs)")
        elif node_network is not None:
            problem = f"overlaps the network {node_network} of Node {node_networks[node_network]!r}"
        if problem is not None and older is None and pool.name in in_use:
            found[pool.name] = PoolConflict(_error(pool, f"{problem}; the pool is in use and stays in use: "
                                                         "migrate its pods to another pool"), refused=False)
            kept.append(pool)
        elif problem is not None:
            found[pool.name] = PoolConflict(_error(pool, f"{problem}; {NOT_USED}"), refused=True)
        elif older is not None:
            found[pool.name] = PoolConflict(_error(pool, f"overlaps IPPool {older.name!r} ({older.cidr}), "
                                                         f"which was created earlier; {NOT_USED}"), refused=True)
        else:
            kept.append(pool)
    return found


def refusals(pools: Mapping[str, IPPool], nodes: Mapping[str, NodeInfo] | Iterable[NodeInfo],
             config: BGPConfiguration, in_use: AbstractSet[str] = frozenset()) -> dict[str, ValidationError]:
    """pool name -> why it is refused (the :func:`conflicts` that refuse)."""
    return {name: c.error for name, c in conflicts(pools, nodes, config, in_use).items() if c.refused}


def accepted(pools: Mapping[str, IPPool], nodes: Mapping[str, NodeInfo] | Iterable[NodeInfo],
             config: BGPConfiguration, in_use: AbstractSet[str] = frozenset()) -> dict[str, IPPool]:
    """The pools Calyx uses: ``pools`` without those :func:`refusals` names."""
    refused = refusals(pools, nodes, config, in_use)
    return {name: pool for name, pool in pools.items() if name not in refused}


def without_refused_pools(snapshot: Snapshot) -> tuple[Snapshot, dict[str, PoolConflict]]:
    """``snapshot`` with the refused pools left out of ``ippools``, and every pool's conflict
    (those kept because they are in use included). A pool is in use when one of the snapshot's
    IPAM blocks (not being deleted) or node pod CIDRs lies in it."""
    found = conflicts(snapshot.ippools, snapshot.nodes, snapshot.bgp_configuration,
                      pools_in_use(snapshot.ippools, snapshot.blocks.values(), snapshot.nodes.values()))
    refused = {name for name, conflict in found.items() if conflict.refused}
    if not refused:
        return snapshot, found
    kept = {name: pool for name, pool in snapshot.ippools.items() if name not in refused}
    return replace(snapshot, ippools=kept), found
