"""Memory: resident set size of felix, bgpd and ExaBGP on a node, idle and with N learned
routes, against BIRD holding the same routes; and their CPU while nothing changes with the N
routes in place.

The two-node set-up of :mod:`bench.bgp_propagation` (with felix running on both nodes for
Calyx): RSS on node B is read once the session is up and idle, and again a few seconds after
all N routes from node A are in B's kernel. Node A gets its N blocks as Calyx IPAM gives them,
N ``IPAMBlock`` objects (``affinity: host:node-a``) created concurrently through the API
server; a note records how long those writes and the whole propagation took. ExaBGP's figure
includes its API bridge process.

    .venv/bin/python -m bench.memory [--quick] [--sizes 10000]
"""
from __future__ import annotations

from typing import Sequence

from bench.bgp_propagation import run_bird, run_calyx
from bench.common import Report, parse_sizes

SETTLE = 3.0


def main(argv: Sequence[str] | None = None) -> Report:
    sizes = parse_sizes(__doc__.split("\n\n")[0], (10000,), (100,), argv, "learned route counts")
    report = Report("Memory: RSS per process on the receiving node, idle and with N learned routes",
                    ".venv/bin/python -m bench.memory" + (" --quick" if sizes.quick else ""),
                    ("learned routes", "process", "idle MiB", "loaded MiB", "growth MiB", "CPU % idle, loaded"))
    for n in sizes.values:
        calyx = run_calyx(n, with_felix=True, settle=SETTLE)
        bird = run_bird(n, settle=SETTLE)
        total_idle = total_loaded = 0.0
        for name in ("felix", "bgpd", "ExaBGP (+API bridge)"):
            idle, loaded = calyx.rss_idle[name], calyx.rss_loaded[name]
            total_idle += idle
            total_loaded += loaded
            report.add(n, name, idle, loaded, loaded - idle, calyx.cpu_loaded.get(name, 0.0))
        report.add(n, "Calyx total", total_idle, total_loaded, total_loaded - total_idle,
                   sum(calyx.cpu_loaded.values()))
        idle, loaded = bird.rss_idle["BIRD"], bird.rss_loaded["BIRD"]
        report.add(n, "BIRD", idle, loaded, loaded - idle, bird.cpu_loaded.get("BIRD", 0.0))
        report.note(f"N={n}: 'CPU % idle, loaded' is each process's CPU over {SETTLE:.0f} s with the N routes in place "
                    "and nothing changing, in % of one core.")
        report.note(f"N={n}: Calyx total / BIRD = {total_loaded / loaded:.0f}x loaded, "
                    f"{total_idle / idle:.0f}x idle.")
        report.note(f"N={n}: node A's {n} IPAMBlocks took {calyx.api_seconds:.2f} s to create; all {n} routes "
                    f"were in B's kernel {calyx.seconds:.2f} s after their export was enabled (BIRD: {bird.seconds:.2f} s "
                    f"after `birdc enable`).")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
