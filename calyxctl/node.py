"""``calyxctl node status [NODE]``: the BGP view of one node, as ``bgpd status`` shows it.

Without NODE: this node's bgpd, over its control socket (``$CALYX_RUN_DIR/bgpd.sock``, the
path ``bgpd status`` uses). With NODE: that node's bgpd over the network, from the read-only
``/status`` path of its health server, at the Node's address (``calyx.dev/ipv4-address``
annotation, else InternalIP) and ``--bgpd-port`` (the chart's ``bgpd.healthPort``; the port
must listen on the node's addresses: chart value ``metricsOnAllInterfaces: true``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


from calyx import model, naming
from calyx.kube import resources
from calyxctl import daemonviews, kubeaccess, statusview

DEFAULT_BGPD_PORT = 9098     # the chart's bgpd.healthPort


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("node", help="node commands (status)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="BGP peers of this node, or of NODE",
                              description="Show the BGP daemon's peers: this node's through its "
                                          "control socket, another node's through its health port.")
    status.add_argument("node", nargs="?", metavar="NODE", help="another node (default: this one)")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.add_argument("--run-dir", default=None,
                        help=f"this node's Calyx run directory (default: CALYX_RUN_DIR, else {naming.DEFAULT_RUN_DIR})")
    status.add_argument("--bgpd-port", type=int, default=DEFAULT_BGPD_PORT,
                        help=f"bgpd's health port on NODE (default {DEFAULT_BGPD_PORT}, the chart's)")
    kubeaccess.add_arguments(status)
    status.set_defaults(run=run)


def local_status(run_dir: Path) -> dict[str, Any]:
    from bgpd.control import DaemonNotRunning, request
    try:
        return request(run_dir / naming.BGPD_SOCKET, "status")
    except DaemonNotRunning as exc:
        raise daemonviews.ViewUnavailable(str(exc)) from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise daemonviews.ViewUnavailable(f"{run_dir / naming.BGPD_SOCKET}: {exc}") from None


def node_address(args: argparse.Namespace, node: str) -> str:
    """The address of ``node``'s health port, from its Node object."""
    raw = kubeaccess.read(f"Node {node!r}", lambda: kubeaccess.get_raw(kubeaccess.load(args), resources.NODES, node))
    try:
        return daemonviews.node_address(model.parse_node(raw))
    except model.ValidationError as exc:
        raise daemonviews.ViewUnavailable(str(exc)) from None


def remote_status(args: argparse.Namespace, node: str) -> dict[str, Any]:
    return daemonviews.fetch_json(f"http://{node_address(args, node)}:{args.bgpd_port}/status")


def run(args: argparse.Namespace) -> int:
    try:
        if args.node:
            status = remote_status(args, args.node)
        else:
            run_dir = Path(args.run_dir or os.environ.get("CALYX_RUN_DIR") or naming.DEFAULT_RUN_DIR)
            status = local_status(run_dir)
    except daemonviews.ViewUnavailable as exc:
        where = f"on node {args.node}" if args.node else "on this node"
        print(statusview.not_running(where, str(exc)), file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(statusview.format_status(status, time.time()))
    return 0
