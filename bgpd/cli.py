"""The ``bgpd`` command: ``bgpd run`` (the daemon; also plain ``bgpd``), ``bgpd status`` and
``bgpd routes`` (ask the running daemon over its control socket)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from calyx.config import ConfigError, load_config
from calyx.naming import BGPD_SOCKET
from calyx.logs import configure_logging

DEFAULT_RUN_DIR = "/var/run/calyx"


def _since(ts: float) -> str:
    age = max(0, int(time.time() - ts))
    if age < 86400:
        return time.strftime("%H:%M:%S", time.localtime(ts))
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [sep]
    for n, row in enumerate(rows):
        out.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if n == 0:
            out.append(sep)
    out.append(sep)
    return "\n".join(out)


def format_status(status: dict[str, Any]) -> str:
    head = f"bgpd on {status['node']}: router ID {status['router_id']}, AS {status['as_number']}"
    if status.get("cluster_id"):
        head += f", route reflector (cluster ID {status['cluster_id']})"
    lines = [head]
    if status.get("error"):
        lines.append(f"configuration error: {status['error']}")
    rows = [["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "BFD", "INFO", "RECEIVED", "ACCEPTED", "ADVERTISED"]]
    for p in status["peers"]:
        info = p["info"] or p["state"]
        rows.append([p["peer_address"], p["peer_type"], p["state"], _since(p["since"]), p.get("bfd") or "-", info,
                     str(p["prefixes_received"]), str(p["prefixes_accepted"]), str(p["prefixes_advertised"])])
    lines.append("IPv4 BGP status")
    lines.append(render_table(rows) if len(rows) > 1 else "No IPv4 peers found.")
    return "\n".join(lines)


def format_routes(routes: dict[str, Any]) -> str:
    learned = [["PREFIX", "PEER", "NEXT HOP", "AS PATH", "VERDICT"]]
    for r in routes["learned"]:
        verdict = "accepted" if r["accepted"] else f"refused: {r['reason']}"
        if r.get("stale"):
            verdict += " (stale)"
        learned.append([r["prefix"], r["peer"], r["next_hop"], r["as_path"] or "-", verdict])
    installed = [["PREFIX", "NEXT HOP", "MODE", "POOL", "KERNEL ROUTE"]]
    for r in routes["installed"]:
        kernel = r["route"] or f"NOT INSTALLED: {r['error']}"
        mode = r["mode"] if r.get("ipip_in") is None else f'{r["mode"]} (ipip in {r["ipip_in"]} s)'
        installed.append([r["prefix"], r["next_hop"], mode, r["pool"] or "-", kernel])
    parts = ["Learned", render_table(learned) if len(learned) > 1 else "none",
             "Installed (proto bgp)", render_table(installed) if len(installed) > 1 else "none"]
    if routes.get("adopted_stale"):
        parts += ["Adopted at start, awaiting re-learning"] + routes["adopted_stale"]
    return "\n".join(parts)


def _query(command: str, output: str) -> int:
    from bgpd.control import DaemonNotRunning, request
    path = Path(os.environ.get("CALYX_RUN_DIR", DEFAULT_RUN_DIR)) / BGPD_SOCKET
    try:
        result = request(path, command)
    except DaemonNotRunning as exc:
        print(f"bgpd {command}: {exc}", file=sys.stderr)
        return 3
    except (OSError, RuntimeError) as exc:
        print(f"bgpd {command}: {exc}", file=sys.stderr)
        return 1
    if output == "json":
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_status(result) if command == "status" else format_routes(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("status", "routes"):
        parser = argparse.ArgumentParser(prog=f"bgpd {args[0]}")
        parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
        opts = parser.parse_args(args[1:])
        return _query(args[0], opts.output)
    if args and args[0] == "run":
        args = args[1:]
    from bgpd.daemon import BgpdConfig, run
    try:
        cfg = load_config(BgpdConfig, args, prog="bgpd", description="Calyx BGP speaker (drives ExaBGP)")
    except ConfigError as exc:
        print(f"bgpd: {exc}", file=sys.stderr)
        return 2
    configure_logging(cfg.log_level, cfg.log_format)
    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
