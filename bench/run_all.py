"""Run every benchmark in turn (``make bench``); each prints its table and appends its figures
to bench/RESULTS.md. Extra arguments (``--quick``, ``--no-record``, ``--results FILE``) are
passed to each.

    .venv/bin/python -m bench.run_all [--quick] [--no-record] [--only felix_routes,memory]
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from typing import Sequence

BENCHMARKS = ("felix_routes", "bgp_propagation", "exabgp_api", "e2e_latency", "failover", "memory", "mesh_scale",
              "rr_fanout", "services", "policy")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=lambda s: tuple(s.split(",")), default=BENCHMARKS,
                        help="comma-separated benchmarks to run (default: all)")
    args, passthrough = parser.parse_known_args(argv)
    unknown = [b for b in args.only if b not in BENCHMARKS]
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    failed = []
    for name in args.only:
        print(f"\n=== bench.{name} {' '.join(passthrough)}", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(f"bench.{name}").main(passthrough)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"=== bench.{name}: {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"benchmarks that did not complete: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
