"""Failure convergence: node A fails -> node B has removed A's routes from its kernel.

Three nodes, plain BGP, bgpd on each. Two kinds of failure:
* killed: A's bgpd and ExaBGP get SIGKILL. A's kernel closes the TCP session, so B notices at
  once; what then governs is graceful restart (B keeps A's routes as stale for the restart time
  A advertised, default 120 s; Calico's BIRD keeps them likewise).
* cut off: A's link to the network goes down without a word; B notices when its hold timer
  expires (ExaBGP's default 180 s), then graceful restart applies as above; with BFD
  (failureDetectionMode BFDIfDirectlyConnected, 300 ms x 3) B notices within about 0.9 s and
  drops A's routes at once.
Each with the default timers and with the fastest supported setting: BGPPeer holdTime 3s (the
RFC 4271 minimum) and maxRestartTime 0s (graceful restart off). Timed from the kill/cut until
A's block is gone from B's kernel (with BFD: from every other node's kernel), polled every
100 ms. A last scenario keeps BFD sessions under CPU saturation (2 busy-loop processes per
core for 2 minutes) and counts the sessions that went down although no peer failed.

    .venv/bin/python -m bench.failover [--quick]      # --quick: scenarios 2 and 5 (fast kill, BFD)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from bench.cluster import Topology, node_block, up
from bench.common import Report, parse_sizes, wait_until
from bench.testbed import VENV_BIN, Testbed

BFD = "BFD 300 ms x 3; hold 180 s, graceful restart 120 s"
SATURATION_SECONDS = 120.0
SCENARIOS = {
    # code: (failure, timer settings, Topology keyword arguments)
    1: ("killed (SIGKILL)", "defaults: hold 180 s, graceful restart 120 s", {}),
    2: ("killed (SIGKILL)", "fast: holdTime 3s, maxRestartTime 0s", {"hold_time": "3s", "restart_time": "0s"}),
    3: ("cut off (link down)", "defaults: hold 180 s, graceful restart 120 s", {}),
    4: ("cut off (link down)", "fast: holdTime 3s, maxRestartTime 0s", {"hold_time": "3s", "restart_time": "0s"}),
    5: ("cut off (link down)", BFD, {"bfd": True}),
    6: ("none: CPU saturated 2 min (2 busy loops per core)", BFD, {"bfd": True}),
}


def measure(code: int) -> str:
    failure, _, timers = SCENARIOS[code]
    topo = Topology(nodes=3, **timers)
    with Testbed("cxfo") as bed:
        nodes, procs, _ = up(bed, topo)
        a, others = nodes[0], nodes[1:]
        time.sleep(1.0)          # sessions settled (keepalives flowing)
        if topo.bfd:
            wait_until(lambda: all(_bfd_states(n) == {"up"} for n in nodes), 60, 0.2, "BFD up everywhere")
        if code == 6:
            flaps, polls = _false_flaps(nodes)
            return f"{flaps} false flaps ({polls} status polls)"
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
        watched = others if topo.bfd else others[:1]
        done = wait_until(lambda: not any(_has_route(n, a_block) for n in watched), 600.0, 0.1,
                          f"{a_block} gone from {', '.join(n.name for n in watched)}")
        return f"{done - start:.3g} s"


def _has_route(node, block: str) -> bool:
    from calyx.netlink import RouteTable
    from ipaddress import IPv4Network
    with RouteTable(netns=node.netns) as table:
        return IPv4Network(block) in table.dump(proto=186)


def _status(node) -> dict:
    out = subprocess.run([str(VENV_BIN / "bgpd"), "status", "-o", "json"], capture_output=True, text=True,
                         env={**os.environ, "CALYX_RUN_DIR": str(node.run_dir)}, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"bgpd status on {node.name} exited {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def _bfd_states(node) -> set[str]:
    return {p["bfd"] for p in _status(node)["peers"]}


def _false_flaps(nodes) -> tuple[int, int]:
    """Saturate every core for SATURATION_SECONDS; (sessions that went down, status polls): a
    session counts when any poll shows its BFD not up, it not Established, or its 'since'
    changed."""
    before = {n.name: {p["peer_address"]: p["since"] for p in _status(n)["peers"]} for n in nodes}
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(2 * (os.cpu_count() or 1))]
    flapped: set[tuple[str, str]] = set()
    polls = 0
    try:
        deadline = time.monotonic() + SATURATION_SECONDS
        while time.monotonic() < deadline:
            for n in nodes:
                peers = _status(n)["peers"]
                polls += 1
                if len(peers) != len(before[n.name]):
                    raise RuntimeError(f"{n.name}: {len(peers)} peers, {len(before[n.name])} before")
                for p in peers:
                    if p["bfd"] != "up" or p["state"] != "Established" \
                            or p["since"] != before[n.name].get(p["peer_address"]):
                        flapped.add((n.name, p["peer_address"]))
            time.sleep(0.5)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    return len(flapped), polls


def main(argv: Sequence[str] | None = None) -> Report:
    sizes = parse_sizes(__doc__.split("\n\n")[0], (1, 2, 3, 4, 5, 6), (2, 5), argv, "scenario numbers (1-6)")
    report = Report("Failure convergence: node A fails -> B has removed A's routes (3 nodes, plain BGP)",
                    ".venv/bin/python -m bench.failover" + (" --quick" if sizes.quick else ""),
                    ("#", "failure", "timers", "result"))
    for code in sizes.values:
        failure, timers, _ = SCENARIOS[code]
        report.add(code, failure, timers, measure(code))
    report.note("BIRD/Calico behave alike by design: a closed session keeps routes for the graceful-restart "
                "time, a silent peer is noticed only at hold-timer expiry unless BFD runs. With BFD the time "
                "is until A's block is gone from every other node's kernel.")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
