"""Mesh scale: N nodes (bgpd + ExaBGP each, plain BGP), full mesh and with 2 route reflectors.

Cold start: from starting every node's bgpd at once until every node's kernel holds every other
node's block. Then one new block on node 0 until every other node holds it. Blocks are given as
Calyx IPAM gives them: each node's first block is an ``IPAMBlock`` (/26, ``affinity:
host:<node>``) created before the daemons start, and the new block is one more IPAMBlock for
node 0, timed from its create; the create alone (sent to answered) is reported beside it. No
Node has ``spec.podCIDRs``, which would hide its blocks and may not change once set.
Every node is a real bgpd process with its own ExaBGP in its own namespace, all on this
machine's cores, so cold start is bounded by CPU (2N Python processes starting together).

    .venv/bin/python -m bench.mesh_scale [--quick] [--sizes 10,20,30]
"""
from __future__ import annotations

import ipaddress
from typing import Sequence

from bench.cluster import BLOCK_SIZE, POOL, Topology, up
from bench.common import Report, parse_sizes, wait_until
from bench.testbed import BGP_PROTO, Testbed, check_alive
from calyx.netlink import RouteTable


def extra_block() -> ipaddress.IPv4Network:
    """The block node 0 gets once the cluster is up (far from the nodes' first blocks)."""
    return ipaddress.IPv4Network((int(POOL.network_address) + (4000 << 8), BLOCK_SIZE))


def measure(nodes: int, rrs: int) -> tuple[float, float, float, int]:
    """(cold-start seconds, new-block seconds, of which its API write, BGP sessions in the cluster)."""
    topo = Topology(nodes=nodes, route_reflectors=rrs, ipam_blocks=True)
    with Testbed("cxms") as bed:
        members, procs, cold = up(bed, topo, timeout=120 + 20 * nodes)
        new = extra_block()
        writes = bed.write_blocks([(members[0].name, str(new))])
        pending = list(members[1:])

        def everywhere() -> bool:
            check_alive(procs)
            if not writes.done():          # not all there before the last create is answered (BlockWrites.done)
                return False
            keep = []
            for node in pending:
                with RouteTable(netns=node.netns) as table:
                    if new not in table.dump(proto=BGP_PROTO):
                        keep.append(node)
            pending[:] = keep
            return not pending

        done = wait_until(everywhere, 180, 0.05, f"{new} on every node")
        writes.join(60)
        sessions = nodes * (nodes - 1) // 2 if not rrs else rrs * (nodes - rrs) + rrs * (rrs - 1) // 2
        return cold, done - writes.started, writes.seconds, sessions


def main(argv: Sequence[str] | None = None) -> Report:
    sizes = parse_sizes(__doc__.split("\n\n")[0], (10, 20, 30), (4,), argv, "node counts")
    report = Report("Mesh scale: convergence of N nodes, full mesh vs 2 route reflectors (plain BGP)",
                    ".venv/bin/python -m bench.mesh_scale" + (" --quick" if sizes.quick else ""),
                    ("nodes", "topology", "sessions", "cold start s", "new block everywhere s", "API write s"))
    for n in sizes.values:
        for rrs, label in ((0, "full mesh"), (2, "2 route reflectors")):
            if rrs >= n:
                continue
            cold, new, api, sessions = measure(n, rrs)
            report.add(n, label, sessions, cold, new, api)
    report.note(f"BGP routes counted per node with proto {BGP_PROTO}; each node expects N-1 blocks. Cold start "
                "includes Python start-up of N bgpd and N ExaBGP processes on 2 cores.")
    report.note("Every block is an IPAMBlock (affinity host:<node>); the new block is timed from its create "
                "to the last node holding it, and 'API write' is that create alone (sent -> answered).")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
