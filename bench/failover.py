"""Failure convergence: node A fails -> node B has removed A's routes from its kernel.

Three nodes, plain BGP, bgpd on each. Two kinds of failure:
* killed: A's bgpd and ExaBGP get SIGKILL. A's kernel closes the TCP session, so B notices at
  once; what then governs is graceful restart (B keeps A's routes as stale for the restart time
  A advertised, default 120 s; Calico's BIRD keeps them likewise).
* cut off: A's link to the network goes down without a word; B notices when its hold timer
  expires (ExaBGP's default 180 s), then graceful restart applies as above.
Each with the default timers and with the fastest supported setting: BGPPeer holdTime 3s (the
RFC 4271 minimum) and maxRestartTime 0s (graceful restart off). Timed from the kill/cut until
A's block is gone from B's kernel (polled every 100 ms).

    .venv/bin/python -m bench.failover [--quick]      # --quick: the fast settings only
"""
from __future__ import annotations

import os
import signal
import time
from typing import Sequence

from bench.cluster import Topology, node_block, up
from bench.common import Report, parse_sizes, wait_until
from bench.testbed import Testbed

SCENARIOS = {
    # code: (failure, timer settings, Topology keyword arguments)
    1: ("killed (SIGKILL)", "defaults: hold 180 s, graceful restart 120 s", {}),
    2: ("killed (SIGKILL)", "fast: holdTime 3s, maxRestartTime 0s", {"hold_time": "3s", "restart_time": "0s"}),
    3: ("cut off (link down)", "defaults: hold 180 s, graceful restart 120 s", {}),
    4: ("cut off (link down)", "fast: holdTime 3s, maxRestartTime 0s", {"hold_time": "3s", "restart_time": "0s"}),
}


def measure(code: int) -> float:
    failure, _, timers = SCENARIOS[code]
    topo = Topology(nodes=3, **timers)
    with Testbed("cxfo") as bed:
        nodes, procs, _ = up(bed, topo)
        a, b = nodes[0], nodes[1]
        time.sleep(1.0)          # sessions settled (keepalives flowing)
        a_block = node_block(0)
        if failure.startswith("killed"):
            bgpd = a.procs["bgpd"]
            pids = [bgpd.pid] + bgpd.descendants()
            start = time.monotonic()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            start = time.monotonic()
            bed.cut(a)
        with_timeout = 600.0
        done = wait_until(lambda: not _has_route(b, a_block), with_timeout, 0.1, f"{a_block} gone from {b.name}")
        return done - start


def _has_route(node, block: str) -> bool:
    from calyx.netlink import RouteTable
    from ipaddress import IPv4Network
    with RouteTable(netns=node.netns) as table:
        return IPv4Network(block) in table.dump(proto=186)


def main(argv: Sequence[str] | None = None) -> Report:
    sizes = parse_sizes(__doc__.split("\n\n")[0], (1, 2, 3, 4), (2, 4), argv, "scenario numbers (1-4)")
    report = Report("Failure convergence: node A fails -> B has removed A's routes (3 nodes, plain BGP)",
                    ".venv/bin/python -m bench.failover" + (" --quick" if sizes.quick else ""),
                    ("#", "failure", "timers", "seconds"))
    for code in sizes.values:
        failure, timers, _ = SCENARIOS[code]
        report.add(code, failure, timers, measure(code))
    report.note("BIRD/Calico behave alike by design: a closed session keeps routes for the graceful-restart "
                "time, a silent peer is noticed only at hold-timer expiry. BFD (not supported) would detect "
                "a silent peer in well under a second.")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
