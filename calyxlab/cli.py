"""``calyx-lab``: containerlab's verbs (deploy, destroy, inspect, exec) over namespaces.

Argument parsing and output formatting only; the work is done by :mod:`calyxlab.lab`.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Sequence

import yaml

from calyxlab import lab as labmod
from calyxlab import pods
from calyxlab.backend import CommandError
from calyxlab.manifests import ManifestError
from calyxlab.roles import RoleError
from calyxlab.state import STATE_ROOT
from calyxlab.topology import TopologyError
from calyxlab.uml import UmlError


def _lab_name(args: argparse.Namespace) -> str:
    """The lab's name: --name, else the topology file's ``name`` (read without validation)."""
    if args.name:
        return args.name
    if not args.topo:
        raise SystemExit("calyx-lab: give -t FILE or --name LAB")
    try:
        doc = yaml.safe_load(Path(args.topo).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"calyx-lab: {args.topo}: cannot read the lab name: {exc}")
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise SystemExit(f"calyx-lab: {args.topo}: /name: the topology has no name")
    return doc["name"]


def format_table(rows: list[dict]) -> str:
    """containerlab-style inspect table (pure)."""
    headers = ["#", "Name", "Kind", "Image", "State", "IPv4 Address"]
    body = [[str(i + 1), r["name"], r["kind"], r["image"], r["state"], r["ipv4_address"]]
            for i, r in enumerate(rows)]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
              for i, h in enumerate(headers)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    line = lambda cells: "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths)) + "|"
    return "\n".join([sep, line(headers), sep] + [line(r) for r in body] + [sep])


def cmd_deploy(args: argparse.Namespace) -> int:
    lab = labmod.Lab.deploy(args.topo, name=args.name, mgmt_subnet=args.mgmt_subnet,
                            kernel=args.kernel, uml_memory=args.uml_memory, printer=print)
    print(format_table(lab.inspect()))
    if lab.api_url:
        print(f"Kubernetes API: {lab.api_url}  (KUBECONFIG={lab.kubeconfig})")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    names = []
    if args.all:
        names = sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir()) \
            if STATE_ROOT.is_dir() else []
    else:
        names = [_lab_name(args)]
    for name in names:
        found = labmod.destroy(name, printer=print, cleanup=args.cleanup)
        print(f"Destroyed lab {name!r}" if found else f"Lab {name!r}: nothing to destroy")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    lab = labmod.Lab.attach(_lab_name(args))
    rows = lab.inspect()
    if args.format == "json":
        print(json.dumps({lab.name: rows}, indent=2))
    else:
        print(format_table(rows))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("calyx-lab exec: give the command after --")
    lab = labmod.Lab.attach(_lab_name(args))
    res = lab.exec(args.node, command, timeout=args.timeout)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calyx-lab", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)

    def common(p: argparse.ArgumentParser, topo_required: bool = False) -> None:
        p.add_argument("-t", "--topo", required=topo_required, help="topology file (*.clab.yml)")
        p.add_argument("--name", help="lab name (overrides the topology's name)")

    p = sub.add_parser("deploy", help="build a lab from a topology file")
    common(p, topo_required=True)
    p.add_argument("--mgmt-subnet", help="overrides mgmt.ipv4-subnet")
    p.add_argument("--kernel", choices=labmod.KERNELS, default="auto",
                   help="host, uml, or auto (uml when this kernel cannot create ipip devices)")
    p.add_argument("--uml-memory", default="2G", help="memory of the UML kernel (e.g. 2G)")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("destroy", help="remove a lab and everything it created")
    common(p)
    p.add_argument("-a", "--all", action="store_true", help="every lab on this machine")
    p.add_argument("-c", "--cleanup", action="store_true", help="also remove logs")
    p.set_defaults(func=cmd_destroy)

    p = sub.add_parser("inspect", help="list a lab's nodes")
    common(p)
    p.add_argument("-o", "--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("exec", help="run a command in a node: exec -t FILE --node N -- CMD...")
    common(p)
    p.add_argument("--node", required=True)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)
    pods.register(sub)
    return parser


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)      # unwinds like Ctrl-C: a deploy removes what it built


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Restored on return: main() also runs inside other programs (tests), whose forked
    # children (pyroute2 forks to enter a namespace) must keep the default SIGTERM action.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return args.func(args)
    except (TopologyError, labmod.LabError, ManifestError, CommandError, UmlError, RoleError,
            KeyError) as exc:
        print(f"calyx-lab: error: {exc.args[0] if isinstance(exc, KeyError) else exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("calyx-lab: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
