"""``calyxctl ipam show [--show-blocks | --ip ADDR]`` and ``calyxctl ipam check``.

Reads the pools, blocks, Nodes and Pods from the API and each node's address assignments (the
CNI plugin's ``$run_dir/ipam/state.json``): this node's from its run directory, others' from
their felix's ``/ipam`` view (``--felix-port``, the chart's ``felix.healthPort``; it must listen
on the node's addresses: chart value ``metricsOnAllInterfaces: true``) or from a run directory
named with ``--records NODE=DIR``. The analysis is :mod:`calyxctl.ipamview`.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Mapping

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from calyx import crds, model, naming
from calyx.cni.config import CniError
from calyx.cni.ipam import node_ipam_records
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyxctl import daemonviews, ipamview, kubeaccess
from calyxctl.tables import boxed_table, percent

DEFAULT_FELIX_PORT = 9099      # the chart's felix.healthPort

EXIT_PROBLEMS = 1
EXIT_INCOMPLETE = 2
EXIT_ERROR = 3


class IpamReadError(RuntimeError):
    pass


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("ipam", help="IP address management (show, check)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser("show", help="pool usage, blocks, or who holds an address")
    what = show.add_mutually_exclusive_group()
    what.add_argument("--show-blocks", action="store_true", help="each block: its node, addresses in use and free")
    what.add_argument("--ip", metavar="ADDR", help="which pool and block ADDR is in, and who holds it")
    check = verbs.add_parser("check", help="look for leaked addresses, unrecorded pods, orphaned blocks",
                             description="Exit 0: consistent; 1: problems found; 2: no problem found but "
                                         "some node's records could not be read; 3: could not check.")
    for verb in (show, check):
        verb.add_argument("--felix-port", type=int, default=DEFAULT_FELIX_PORT,
                          help=f"felix's health port on the other nodes (default {DEFAULT_FELIX_PORT}, the chart's)")
        verb.add_argument("--records", action="append", default=[], metavar="NODE=DIR",
                          help="read NODE's assignments from the run directory DIR (repeatable)")
        verb.add_argument("--run-dir", default=None,
                          help=f"this node's run directory (default: CALYX_RUN_DIR, else {naming.DEFAULT_RUN_DIR})")
        verb.add_argument("--node-name", default=None, help="this node's name (default: NODENAME, else the hostname)")
        kubeaccess.add_arguments(verb)
        verb.set_defaults(run=run)


# --- reading -------------------------------------------------------------------------------

def _assignments(node: str, records: Mapping[str, Any], where: str) -> tuple[ipamview.Assignment, ...]:
    out = []
    for index, entry in enumerate(records.get("allocations") or []):
        try:
            out.append(ipamview.Assignment(node=node, address=IPv4Address(entry["address"]),
                                           namespace=str(entry["namespace"]), pod=str(entry["pod"]),
                                           container_id=str(entry["containerID"]), ifname=str(entry["ifname"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise IpamReadError(f"{where}: allocations[{index}]: unreadable ({exc})") from None
    return tuple(out)


def _record_dirs(args: argparse.Namespace) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    local = args.node_name or os.environ.get("NODENAME") or socket.gethostname()
    local_dir = Path(args.run_dir or os.environ.get("CALYX_RUN_DIR") or naming.DEFAULT_RUN_DIR)
    if (local_dir / naming.IPAM_DIR).is_dir():
        dirs[local] = local_dir
    for item in args.records:
        node, eq, directory = item.partition("=")
        if not eq or not node or not directory:
            raise IpamReadError(f"--records {item!r}: expected NODE=DIR")
        dirs[node] = Path(directory)
    return dirs


def read_records(args: argparse.Namespace, nodes: Mapping[str, model.NodeInfo]) -> tuple[
        dict[str, tuple[ipamview.Assignment, ...]], dict[str, str]]:
    dirs = _record_dirs(args)
    assignments: dict[str, tuple[ipamview.Assignment, ...]] = {}
    unread: dict[str, str] = {}
    for name in sorted(set(nodes) | set(dirs)):
        try:
            if name in dirs:
                where = str(dirs[name] / naming.IPAM_DIR / "state.json")
                try:
                    records = node_ipam_records(name, dirs[name])
                except CniError as exc:
                    raise IpamReadError(exc.msg) from None
            else:
                where = f"http://{daemonviews.node_address(nodes[name])}:{args.felix_port}/ipam"
                records = daemonviews.fetch_json(where)
            assignments[name] = _assignments(name, records, where)
        except (IpamReadError, daemonviews.ViewUnavailable) as exc:
            unread[name] = str(exc)
    return assignments, unread


def read_snapshot(args: argparse.Namespace) -> ipamview.IpamSnapshot:
    api = kubeaccess.load(args)
    schemas = crds.spec_schemas()
    invalid: list[str] = []
    pools = kubeaccess.parse_each(kubeaccess.list_raw(api, resources.IPPOOLS), lambda o: model.parse_ippool(o, schemas), invalid)
    blocks = kubeaccess.parse_each(kubeaccess.list_raw(api, resources.IPAMBLOCKS),
                        lambda o: model.parse_ipam_block(o, schemas), invalid)
    nodes = kubeaccess.parse_each(kubeaccess.list_raw(api, resources.NODES), model.parse_node, invalid)
    pods: dict[tuple[str, str], model.PodInfo] = {}
    for raw in kubeaccess.list_raw(api, resources.PODS):
        try:
            pod = model.parse_pod(raw)
        except model.ValidationError as exc:
            invalid.append(str(exc))
            continue
        pods[pod.key] = pod
    assignments, unread = read_records(args, nodes)
    return ipamview.IpamSnapshot(pools=pools, blocks=blocks, nodes=nodes, pods=pods, assignments=assignments,
                                 unread=unread, invalid=tuple(invalid))


# --- printing ------------------------------------------------------------------------------

def usage_table(snapshot: ipamview.IpamSnapshot, show_blocks: bool) -> str:
    header = ["GROUPING", "CIDR"] + (["AFFINITY"] if show_blocks else []) + ["IPS TOTAL", "IPS IN USE", "IPS FREE"]
    blocks = ipamview.block_usage(snapshot) if show_blocks else []
    rows = []
    for pool in ipamview.pool_usage(snapshot):
        rows.append(["IP Pool", f"{pool.cidr}"] + ([f"pool {pool.name}"] if show_blocks else [])
                    + [str(pool.total), percent(pool.in_use, pool.total), percent(pool.free, pool.total)])
        for block in blocks:
            if block.pool == pool.name or (block.pool not in snapshot.pools and block.cidr.subnet_of(pool.cidr)):
                rows.append(["Block", str(block.cidr), f"host:{block.node}" if block.node else "(released)",
                             str(block.total), percent(block.in_use, block.total), percent(block.free, block.total)])
    shown = {r[1] for r in rows}
    for block in blocks:
        if str(block.cidr) not in shown:
            rows.append(["Block", str(block.cidr), f"host:{block.node}" if block.node else "(released)",
                         str(block.total), percent(block.in_use, block.total), percent(block.free, block.total)])
    numbers = (3, 4, 5) if show_blocks else (2, 3, 4)
    return boxed_table(header, rows, right_aligned=numbers[:1])


def notes(snapshot: ipamview.IpamSnapshot) -> list[str]:
    lines = []
    leaks = ipamview.leaked(snapshot)
    if leaks:
        lines.append(f"{len(leaks)} leaked address(es): assigned on a node to a pod that no longer holds them "
                     f"({', '.join(str(l.assignment.address) for l in leaks)}); `calyxctl ipam check` lists them.")
    for node, why in sorted(snapshot.unread.items()):
        lines.append(f"Assignments of node {node} not read (counted from its Pods only): {why}")
    for error in snapshot.invalid:
        lines.append(f"Ignored invalid object: {error}")
    return lines


def address_text(report: ipamview.AddressReport) -> str:
    lines = []
    if report.pool is None and report.block is None:
        return f"IP {report.address} is not in any Calyx IP pool"
    if report.assigned:
        lines.append(f"IP {report.address} is in use")
    else:
        lines.append(f"IP {report.address} is not assigned")
    if report.pool is not None:
        lines.append(f"  pool: {report.pool.name} ({report.pool.cidr})")
    if report.block is not None:
        owner = f"node {report.block.node}" if report.block.node else "no node (released)"
        lines.append(f"  block: {report.block.cidr}, affine to {owner}")
    else:
        lines.append("  block: none (no node has claimed the block around it)")
    if report.node_address_of is not None:
        lines.append(f"  the node address of {report.node_address_of} (tunl0), never given to a pod")
    for entry in report.assignments:
        lines += [f"  assigned on node {entry.node}:", f"    namespace: {entry.namespace}", f"    pod: {entry.pod}",
                  f"    handle: {entry.handle}"]
    if report.pod is not None:
        lines.append(f"  held by pod {report.pod.namespace}/{report.pod.name} on node {report.pod.node or '?'} "
                     f"({report.pod.phase or 'no phase'})")
    elif report.assignments:
        lines.append("  no pod in the API holds it: leaked (`calyxctl ipam check`)")
    if report.unread_node is not None:
        lines.append(f"  (the assignments of node {report.unread_node} could not be read)")
    return "\n".join(lines)


def check_text(snapshot: ipamview.IpamSnapshot, report: ipamview.CheckReport) -> str:
    lines = ["Checking IPAM for inconsistencies...", ""]
    lines.append(f"Loaded {len(snapshot.pools)} IP pools, {len(snapshot.blocks)} IPAM blocks, "
                 f"{len(snapshot.nodes)} nodes, {len(snapshot.pods)} pods.")
    for block in sorted(snapshot.blocks.values(), key=lambda b: b.cidr):
        lines.append(f"  IPAM block {block.cidr} affinity={'host:' + block.node if block.node else '(none)'}"
                     + (" (being released)" if block.deleted else ""))
    lines.append("")
    lines.append(f"Read the assignments of {len(snapshot.assignments)} of {len(set(snapshot.nodes) | set(snapshot.assignments))} nodes.")
    for node, count in report.assignments_per_node.items():
        lines.append(f"  {node} has {count} assignments")
    for node, why in report.unchecked_nodes.items():
        lines.append(f"  {node}: not read: {why}")
    lines += ["", "Scanning for addresses assigned but not held by their pod..."]
    lines.append(f"Found {len(report.leaks)} leaked addresses.")
    for leak in report.leaks:
        a = leak.assignment
        lines.append(f"  {a.address} on node {a.node}, handle {a.handle}: {leak.reason}")
    lines += ["Scanning for pods holding an address their node has not assigned..."]
    lines.append(f"Found {len(report.unrecorded)} pods with unrecorded addresses.")
    for item in report.unrecorded:
        lines.append(f"  pod {item.pod.namespace}/{item.pod.name} on node {item.pod.node}: {item.address}")
    lines += ["Scanning for blocks affine to nodes that no longer exist..."]
    lines.append(f"Found {len(report.orphans)} orphaned blocks.")
    for orphan in report.orphans:
        lines.append(f"  block {orphan.block.cidr} (IPAMBlock {orphan.block.name}): node {orphan.block.node} "
                     f"does not exist")
    lines += ["Scanning for addresses held twice..."]
    lines.append(f"Found {len(report.duplicates)} addresses held twice.")
    for dup in report.duplicates:
        lines.append(f"  {dup.address}: {'; '.join(dup.holders)}")
    for error in snapshot.invalid:
        lines.append(f"Ignored invalid object: {error}")
    lines.append("")
    summary = f"Check complete; found {report.problems} problems."
    if not report.complete:
        summary += f" Incomplete: the assignments of {', '.join(report.unchecked_nodes)} could not be read."
    lines.append(summary)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        snapshot = read_snapshot(args)
    except (kube_client.ClientConfigError, IpamReadError) as exc:
        print(f"calyxctl ipam: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ApiException, HTTPError, OSError) as exc:
        print(f"calyxctl ipam: {kubeaccess.describe_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    if args.verb == "check":
        report = ipamview.check(snapshot)
        print(check_text(snapshot, report))
        if report.problems:
            return EXIT_PROBLEMS
        return 0 if report.complete else EXIT_INCOMPLETE
    if args.ip:
        try:
            address = IPv4Address(args.ip)
        except ValueError:
            print(f"calyxctl ipam show: --ip {args.ip!r}: not an IPv4 address", file=sys.stderr)
            return EXIT_ERROR
        print(address_text(ipamview.address_report(snapshot, address)))
        return 0
    print(usage_table(snapshot, args.show_blocks))
    extra = notes(snapshot)
    if extra:
        print()
        print("\n".join(extra))
    return 0
