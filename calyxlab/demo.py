"""``python -m calyxlab.demo`` (``make demo``): a lab deployed, shown working, destroyed.

Deploys ``containerlab/two-nodes.clab.yml`` with the kernel chosen automatically, prints the
inspect table, lists the cluster's Nodes with kubectl from inside a node, pings from one node
to the other over their link, and destroys the lab - also when a step fails.
"""
from __future__ import annotations

import argparse
import secrets
import shutil
import sys
from pathlib import Path

from calyxlab.cli import format_table
from calyxlab.lab import REPO_ROOT, Lab, LabError, leftovers, subnet_in_use
from calyxlab.subnets import claim_free_subnet, release_subnet
from calyxlab.topology import load

TOPOLOGY = REPO_ROOT / "containerlab" / "two-nodes.clab.yml"


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def show(lab: Lab, node: str, argv: list[str]) -> None:
    print(f"$ calyx-lab exec --name {lab.name} --node {node} -- {' '.join(argv)}", flush=True)
    res = lab.exec(node, argv, env={"KUBECONFIG": str(lab.kubeconfig)}, timeout=120)
    sys.stdout.write(res.stdout + res.stderr)
    if res.returncode != 0:
        raise LabError(f"node {node}: {' '.join(argv)} exited {res.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calyxlab.demo", description=__doc__)
    parser.add_argument("--kernel", default="auto", choices=("host", "uml", "auto"))
    args = parser.parse_args(argv)
    topo = load(TOPOLOGY)
    claimed = None
    if subnet_in_use(topo.mgmt.subnet):
        claimed = claim_free_subnet()
        print(f"(mgmt subnet {topo.mgmt.subnet} is in use here; using {claimed})")
    name = f"demo-{secrets.token_hex(2)}"
    kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    banner(f"calyx-lab deploy -t {TOPOLOGY.relative_to(REPO_ROOT)} --name {name}")
    try:
        with Lab.deploy(TOPOLOGY, name=name, kernel=args.kernel, printer=print,
                        mgmt_subnet=str(claimed) if claimed else None) as lab:
            banner(f"calyx-lab inspect --name {name}")
            print(format_table(lab.inspect()))
            banner("the Kubernetes API, seen from node1")
            show(lab, "node1", [kubectl, "get", "nodes", "-o", "wide"])
            banner("node1 -> node2 over their link")
            show(lab, "node1", ["ping", "-c", "3", "-i", "0.2", "10.0.0.2"])
            banner(f"calyx-lab destroy --name {name} --cleanup")
            lab.destroy(cleanup=True)
        left = leftovers(name)
        if left:
            print(f"demo: left behind: {', '.join(left)}", file=sys.stderr)
            return 1
        print("demo: done, nothing left behind")
        return 0
    except LabError as exc:
        print(f"demo: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if claimed:
            release_subnet(claimed)


if __name__ == "__main__":
    sys.exit(main())
