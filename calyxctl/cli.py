"""The ``calyxctl`` command: one argparse parser whose subcommands each live in their own
module exposing ``add_parser(subparsers)`` (which sets ``run`` as the parser's default) and
``run(args) -> int``. Adding a command is one import and one entry in :data:`COMMANDS`."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from calyxctl import get, ipam, node, policy
from calyxctl.trace import command as trace

COMMANDS = (node, ipam, get, policy, trace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calyxctl", description="Inspect a Calyx cluster: BGP status, "
                                     "IP address management, Calyx resources, NetworkPolicy, a packet's path.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
