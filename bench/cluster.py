"""A Calyx cluster on the test bed: N nodes with one pod block each in a plain-BGP pool, the API
objects for a full mesh or for route reflectors, bgpd (and optionally felix) on every node,
and the wait for every node to hold every other node's block in its kernel.

A node gets its block in one of the two ways :func:`calyx.model.node_pod_cidrs` reads:
* ``spec.podCIDRs`` (a /24, set when the Node is created), as in a cluster whose
  controller-manager allocates node CIDRs. The API server lets that field be set once and never
  changed, so this suits only benchmarks that never give a node another block;
* an ``IPAMBlock`` (a /26, the pool's blockSize, ``affinity: host:<node>``) as Calyx IPAM
  claims it (``Topology(ipam_blocks=True)``), created before any daemon starts. A node with
  podCIDRs would hide its IPAMBlocks, so every benchmark that adds blocks to a running node
  (:meth:`bench.testbed.Testbed.write_blocks`) uses this.
"""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Sequence

from bench.common import wait_until
from bench.testbed import BGP_PROTO, POOL_NAME, Node, Proc, Testbed, check_alive

POOL = ipaddress.IPv4Network("100.64.0.0/10")
BLOCK_SIZE = 26                 # the pool's blockSize: every IPAMBlock is a /26
POD_CIDR_SIZE = 24              # a node's spec.podCIDRs entry
RR_CLUSTER_ID = "224.0.0.1"


def node_block(index: int, prefix: int = POD_CIDR_SIZE) -> str:
    """Node ``index``'s block: the start of 100.64.<index>.0/24 (and so on past 255), as a /24
    (``spec.podCIDRs``) or, with ``prefix=BLOCK_SIZE``, a /26 (an IPAMBlock)."""
    return str(ipaddress.IPv4Network((int(POOL.network_address) + (index << 8), prefix)))


@dataclass(frozen=True)
class Topology:
    nodes: int
    route_reflectors: int = 0          # the first this many nodes reflect; 0: full mesh
    felix: bool = False
    hold_time: str | None = None       # e.g. "3s": sessions through a BGPPeer with this hold time
    restart_time: str | None = None    # graceful-restart time (BGPPeer maxRestartTime / nodeMeshMaxRestartTime)
    blocks: bool = True                # give each node its pod block from the start
    ipam_blocks: bool = False          # the block as an IPAMBlock (/26), not spec.podCIDRs (/24)
    bfd: bool = False                  # failure detection BFDIfDirectlyConnected (default timers 300 ms x 3)

    def block(self, index: int) -> str:
        """Node ``index``'s initial block (when ``blocks``)."""
        return node_block(index, BLOCK_SIZE if self.ipam_blocks else POD_CIDR_SIZE)


def build(bed: Testbed, topo: Topology, bgpd_env: dict[str, str] | None = None) -> list[Node]:
    """Namespaces, the Kubernetes control plane and objects; no daemon started yet."""
    nodes = [bed.add_node(f"node-{i}") for i in range(topo.nodes)]
    bed.start_api()
    bed.put("ippools", POOL_NAME, {"cidr": str(POOL), "ipipMode": "Never", "blockSize": BLOCK_SIZE})
    explicit = topo.route_reflectors > 0 or topo.hold_time is not None
    config: dict[str, object] = {"nodeToNodeMeshEnabled": not explicit}
    if topo.restart_time is not None:
        config["nodeMeshMaxRestartTime"] = topo.restart_time
    if topo.bfd:
        config["nodeMeshFailureDetectionMode"] = "BFDIfDirectlyConnected"
    bed.put("bgpconfigurations", "default", config)
    timers: dict[str, object] = {"failureDetectionMode": "BFDIfDirectlyConnected"} if topo.bfd else {}
    if topo.hold_time is not None:
        timers["holdTime"] = topo.hold_time
    if topo.restart_time is not None:
        timers["maxRestartTime"] = topo.restart_time
    if topo.route_reflectors:
        bed.put("bgppeers", "to-route-reflectors", {"nodeSelector": "all()",
                                                    "peerSelector": "route-reflector == 'true'", **timers})
    elif explicit:
        bed.put("bgppeers", "all-nodes", {"nodeSelector": "all()", "peerSelector": "all()", **timers})
    for i, node in enumerate(nodes):
        rr = i < topo.route_reflectors
        bed.create_node(node, pod_cidrs=[topo.block(i)] if topo.blocks and not topo.ipam_blocks else [],
                        annotations={"calyx.dev/route-reflector-cluster-id": RR_CLUSTER_ID} if rr else None,
                        labels={"route-reflector": "true"} if rr else None)
    if topo.blocks and topo.ipam_blocks:
        bed.create_blocks([(node.name, topo.block(i)) for i, node in enumerate(nodes)])
    return nodes


def start(bed: Testbed, nodes: Sequence[Node], topo: Topology, **bgpd_env: str) -> list[Proc]:
    procs = []
    for node in nodes:
        procs.append(bed.start_bgpd(node, **bgpd_env))
        if topo.felix:
            procs.append(bed.start_felix(node))
    return procs


def wait_converged(nodes: Sequence[Node], procs: Sequence[Proc], expected: int, timeout: float,
                   interval: float = 0.1) -> float:
    """Wait until every node's kernel holds ``expected`` BGP routes; the monotonic time it did."""
    remaining = list(nodes)

    def done() -> bool:
        check_alive(procs)
        remaining[:] = [n for n in remaining if n.routes(BGP_PROTO) != expected]
        return not remaining

    return wait_until(done, timeout, interval, f"{expected} BGP routes on every node")


def up(bed: Testbed, topo: Topology, timeout: float = 300.0, **bgpd_env: str) -> tuple[list[Node], list[Proc], float]:
    """Build, start and wait for convergence; (nodes, processes, seconds from start to converged)."""
    nodes = build(bed, topo)
    t0 = time.monotonic()
    procs = start(bed, nodes, topo, **bgpd_env)
    done = wait_converged(nodes, procs, topo.nodes - 1 if topo.blocks else 0, timeout)
    return nodes, procs, done - t0
