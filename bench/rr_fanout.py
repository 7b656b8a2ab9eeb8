"""Route-reflector fan-out: one route reflector reflects K prefixes from one client to C other
clients (K x C routes installed in all).

Nodes: one RR, one source client, C receiving clients, each a real bgpd + ExaBGP in its own
namespace (plain BGP). Blocks are given as Calyx IPAM gives them: every node's first block is
an ``IPAMBlock`` (/26, ``affinity: host:<node>``) made before the daemons start, and no Node
has ``spec.podCIDRs`` (which would hide its blocks). With the sessions up and idle, K more
IPAMBlocks for the source are created concurrently through the API server (it has no bulk
create; see :class:`bench.testbed.BlockWrites`); timed from the first create until every
receiving client's kernel holds all K (plus the other nodes' blocks), with the API writes
alone (first create sent to last one answered) reported beside it. bgpd hands ExaBGP its
announcements in batches per peer and ExaBGP groups identical attributes into shared UPDATEs
(``group-updates``), as in the other benchmarks.

    .venv/bin/python -m bench.rr_fanout [--quick] [--sizes 1000x10,10000x5,10000x10]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from bench.bgp_propagation import prefixes
from bench.cluster import Topology, build, start, wait_converged
from bench.common import RESULTS, Report, machine_facts, wait_until
from bench.testbed import BGP_PROTO, WRITERS, Testbed, check_alive

FULL = ((1000, 10), (10000, 5), (10000, 10))
QUICK = ((100, 2),)


def measure(k: int, c: int) -> tuple[float, float]:
    """(seconds from the first create to all K on every receiving client, of which the API writes)."""
    topo = Topology(nodes=c + 2, route_reflectors=1, blocks=True, ipam_blocks=True)
    with Testbed("cxrr") as bed:
        members = build(bed, topo)
        rr, source, clients = members[0], members[1], members[2:]
        procs = start(bed, members, topo)
        wait_converged(members, procs, len(members) - 1, 120 + 20 * len(members))
        # K /26 blocks clear of the /24 slots holding the nodes' own blocks (100.64.0.0 - 100.64.x.0)
        skip = 64 * (len(members) + 1)
        writes = bed.write_blocks([(source.name, cidr) for cidr in prefixes(k + skip)[skip:]])
        expected = len(members) - 1 + k          # every other node's block, the source's K more
        pending = list(clients)

        def everywhere() -> bool:
            check_alive(procs)
            if not writes.done():          # not all there before the last create is answered (BlockWrites.done)
                return False
            pending[:] = [n for n in pending if n.routes(BGP_PROTO) != expected]
            return not pending

        done = wait_until(everywhere, 300 + k / 10 + k * c / 100, 0.05, f"{k} reflected prefixes on {c} clients")
        writes.join(120)
        return done - writes.started, writes.seconds


def main(argv: Sequence[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"small sizes {QUICK}")
    parser.add_argument("--sizes", type=lambda s: tuple(tuple(int(x) for x in p.split("x")) for p in s.split(",")),
                        help="comma-separated KxC pairs (default " + ",".join(f"{k}x{c}" for k, c in FULL) + ")")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    pairs = args.sizes or (QUICK if args.quick else FULL)
    report = Report("Route-reflector fan-out: 1 RR reflects K prefixes to C clients (plain BGP)",
                    ".venv/bin/python -m bench.rr_fanout" + (" --quick" if args.quick else ""),
                    ("K prefixes", "C clients", "K x C", "seconds", "API writes s", "installed routes/s"),
                    facts=machine_facts())
    for k, c in pairs:
        seconds, api = measure(k, c)
        report.add(k, c, k * c, seconds, api, k * c / seconds)
    report.note(f"Timed from the first of the source client's K IPAMBlock creates ({WRITERS} concurrent writers) "
                "to the last receiving client holding all K; 'API writes' is the part of it from the first "
                "create sent to the last one answered. K x C counts routes installed on the receiving clients.")
    report.finish(None if args.no_record else args.results)
    return report


if __name__ == "__main__":
    main()
