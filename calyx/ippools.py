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
"""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network
from typing import Iterable, Mapping

from calyx.model import KIND_IPPOOL, BGPConfiguration, IPPool, NodeInfo, Snapshot, ValidationError

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


def _refused(pool: IPPool, problem: str) -> ValidationError:
    return ValidationError(KIND_IPPOOL, pool.name, CIDR_FIELD, str(pool.cidr),
                           f"{problem}; the pool is not used for allocation or routing")


def refusals(pools: Mapping[str, IPPool], nodes: Mapping[str, NodeInfo] | Iterable[NodeInfo],
             config: BGPConfiguration) -> dict[str, ValidationError]:
    """pool name -> why it is refused (naming the pool, spec.cidr, its value and what it
    overlaps), for every pool that overlaps a kept pool, a Service CIDR or a node's network."""
    node_values = nodes.values() if isinstance(nodes, Mapping) else nodes
    node_networks = _node_networks(node_values)
    kept: list[IPPool] = []
    refused: dict[str, ValidationError] = {}
    for pool in sorted(pools.values(), key=_age_order):
        service = next((cidr for cidr in config.service_cluster_ips if cidr.overlaps(pool.cidr)), None)
        node_network = min((net for net in node_networks if net.overlaps(pool.cidr)), default=None)
        older = next((other for other in kept if other.cidr.overlaps(pool.cidr)), None)
        if service is not None:
            refused[pool.name] = _refused(pool, f"overlaps the Service CIDR {service} "
                                                f"(BGPConfiguration {config.name!r} spec.serviceClusterIPs)")
        elif node_network is not None:
            refused[pool.name] = _refused(pool, f"overlaps the network {node_network} of Node "
                                                f"{node_networks[node_network]!r}")
        elif older is not None:
            refused[pool.name] = _refused(pool, f"overlaps IPPool {older.name!r} ({older.cidr}), "
                                                "which was created earlier")
        else:
            kept.append(pool)
    return refused


def accepted(pools: Mapping[str, IPPool], nodes: Mapping[str, NodeInfo] | Iterable[NodeInfo],
             config: BGPConfiguration) -> dict[str, IPPool]:
    """The pools Calyx uses: ``pools`` without those :func:`refusals` names."""
    refused = refusals(pools, nodes, config)
    return {name: pool for name, pool in pools.items() if name not in refused}


def without_refused_pools(snapshot: Snapshot) -> tuple[Snapshot, dict[str, ValidationError]]:
    """``snapshot`` with the refused pools left out of ``ippools``, and why each was refused."""
    refused = refusals(snapshot.ippools, snapshot.nodes, snapshot.bgp_configuration)
    if not refused:
        return snapshot, refused
    kept = {name: pool for name, pool in snapshot.ippools.items() if name not in refused}
    return replace(snapshot, ippools=kept), refused
