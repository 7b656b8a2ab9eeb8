"""Route-reflector fan-out: one route reflector reflects K prefixes from one client to C other
clients (K x C routes installed in all).

Nodes: one RR, one source client, C receiving clients, each a real bgpd + ExaBGP in its own
namespace (plain BGP). With the sessions up and idle, the source's Node object gets K pod
CIDRs (one API patch); timed until every receiving client's kernel holds all K (plus the other
clients' blocks). bgpd hands ExaBGP its announcements in batches per peer and ExaBGP groups
identical attributes into shared UPDATEs (``group-updates``), as in the other benchmarks.

    .venv/bin/python -m bench.rr_fanout [--quick] [--sizes 1000x10,10000x5,10000x10]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from bench.bgp_propagation import prefixes
from bench.cluster import Topology, build, node_block, start, wait_converged
from bench.common import RESULTS, Report, machine_facts, wait_until
from bench.testbed import BGP_PROTO, Testbed, check_alive

FULL = ((1000, 10), (10000, 5), (10000, 10))
QUICK = ((100, 2),)


def measure(k: int, c: int) -> float:
    topo = Topology(nodes=c + 2, route_reflectors=1, blocks=True)
    with Testbed("cxrr") as bed:
        members = build(bed, topo)
        rr, source, clients = members[0], members[1], members[2:]
        procs = start(bed, members, topo)
        wait_converged(members, procs, len(members) - 1, 120 + 20 * len(members))
        # K prefixes that stay clear of the nodes' own /24 blocks (100.64.0.0 - 100.64.x.0)
        blocks = [node_block(1)] + prefixes(k + 64 * (len(members) + 1))[64 * (len(members) + 1):]
        start_t = time.monotonic()
        bed.core.patch_node(source.name, {"spec": {"podCIDRs": blocks}})
        expected = len(members) - 2 + len(blocks)
        pending = list(clients)

        def everywhere() -> bool:
            check_alive(procs)
            pending[:] = [n for n in pending if n.routes(BGP_PROTO) != expected]
            return not pending

        done = wait_until(everywhere, 300 + k * c / 100, 0.05, f"{k} reflected prefixes on {c} clients")
        return done - start_t


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
                    ("K prefixes", "C clients", "K x C", "seconds", "installed routes/s"), facts=machine_facts())
    for k, c in pairs:
        seconds = measure(k, c)
        report.add(k, c, k * c, seconds, k * c / seconds)
    report.note("Timed from the API patch on the source client to the last receiving client holding all K; "
                "K x C counts routes installed on the receiving clients.")
    report.finish(None if args.no_record else args.results)
    return report


if __name__ == "__main__":
    main()
