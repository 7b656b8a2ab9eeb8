"""Route-reflector fan-out: one route reflector reflects K prefixes from one client to C other
clients (K x C routes installed in all).

Nodes: one RR, one source client, C receiving clients, each a real bgpd + ExaBGP in its own
namespace (plain BGP). Blocks are given as Calyx IPAM gives them: every node's first block is
an ``IPAMBlock`` (/26, ``affinity: host:<node>``) made before the daemons start, and no Node
has ``spec.podCIDRs`` (which would hide its blocks). With the sessions up and idle, the
source's K more IPAMBlocks are created concurrently through the API server in a pool of their
own, ``bench-source`` (beside the cluster's pool: pools may not overlap), that starts with
``disableBGPExport: true``
(a real API server has no bulk create and takes tens of seconds for 10k creates; see
:class:`bench.testbed.BlockWrites`). Once they are written and seen, one replace of
``bench-source`` enables their export; timed from that write until every receiving client's
kernel holds all K (plus the other nodes' blocks), so the figure is the speakers', not the
API's. bgpd hands ExaBGP its announcements in batches per peer and ExaBGP groups identical
attributes into shared UPDATEs (``group-updates``), as in the other benchmarks.

    .venv/bin/python -m bench.rr_fanout [--quick] [--sizes 1000x10,10000x5,10000x10]
"""
from __future__ import annotations

import argparse
import ipaddress
import time
from pathlib import Path
from typing import Sequence

from bench.cluster import Topology, build, start, wait_converged
from bench.common import RESULTS, Report, machine_facts, wait_until
from bench.testbed import BGP_PROTO, WRITERS, Testbed, check_alive

FULL = ((1000, 10), (10000, 5), (10000, 10))
QUICK = ((100, 2),)


SOURCE_POOL = ipaddress.IPv4Network("100.128.0.0/12")   # beside the cluster's 100.64.0.0/10: room for 16k /26s
SOURCE_POOL_NAME = "bench-source"
SEEN = 3.0      # seconds for the source's bgpd to take in the last of its blocks before the timed write


def measure(k: int, c: int) -> tuple[float, float]:
    """(seconds from the write enabling the export to all K on every receiving client, seconds
    the API took to create the K blocks beforehand)."""
    topo = Topology(nodes=c + 2, route_reflectors=1, blocks=True, ipam_blocks=True)
    with Testbed("cxrr") as bed:
        members = build(bed, topo)
        source, clients = members[1], members[2:]
        pool = {"cidr": str(SOURCE_POOL), "ipipMode": "Never", "blockSize": 26}
        bed.put("ippools", SOURCE_POOL_NAME, {**pool, "disableBGPExport": True})
        procs = start(bed, members, topo)
        wait_converged(members, procs, len(members) - 1, 120 + 20 * len(members))
        blocks = [str(b) for b, _ in zip(SOURCE_POOL.subnets(new_prefix=26), range(k))]
        writes = bed.create_blocks([(source.name, cidr) for cidr in blocks], pool=SOURCE_POOL_NAME)
        time.sleep(SEEN)
        expected = len(members) - 1 + k          # every other node's block, the source's K more
        early = [n.name for n in clients if n.routes(BGP_PROTO) > len(members) - 1]
        if early:
            raise RuntimeError(f"{', '.join(early)} learned the source's blocks before their export was enabled")
        pending = list(clients)
        start_time = time.monotonic()
        bed.put("ippools", SOURCE_POOL_NAME, pool)

        def everywhere() -> bool:
            check_alive(procs)
            pending[:] = [n for n in pending if n.routes(BGP_PROTO) != expected]
            return not pending

        done = wait_until(everywhere, 300 + k / 10 + k * c / 100, 0.05, f"{k} reflected prefixes on {c} clients")
        return done - start_time, writes.seconds


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
                    ("K prefixes", "C clients", "K x C", "seconds", "installed routes/s",
                     "source's block creates s (untimed)"),
                    facts=machine_facts())
    for k, c in pairs:
        seconds, api = measure(k, c)
        report.add(k, c, k * c, seconds, k * c / seconds, api)
    report.note("Timed from the one IPPool replace that lets the source client advertise its K blocks (written "
                "beforehand, with disableBGPExport) to the last receiving client holding all K. K x C counts routes "
                f"installed on the receiving clients. The last column is how long the API took ({WRITERS} concurrent "
                "writers) to create the K blocks before the timed part.")
    report.finish(None if args.no_record else args.results)
    return report


if __name__ == "__main__":
    main()
