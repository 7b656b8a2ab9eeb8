"""NetworkPolicy at scale on one node: P policies over N pods (100 of them local), from the
policies to the node's nftables table on the real kernel (a scratch network namespace, the real
libnftables), from cold and after one pod's label change.

The cluster: 50 namespaces of N/50 pods, labelled ``app`` (one of 20) and ``tier`` (one of
3); P policies spread over the namespaces, each selecting one ``app`` of its namespace and
allowing ingress from one ``app`` of its namespace on TCP 8080 and from one other namespace
(namespaceSelector) on TCP 9090 — the shapes of the Kubernetes documentation's examples.

Figures per size: the calculation from cold (:func:`felix.policycalc.node_policy`, the table
and the plan), the transaction that builds the table (nftables commands, time to apply), and
for one remote pod changing its ``app`` label (so it leaves some peer sets and joins others):
the recalculation, the commands of the plan (set elements only) and their application. The
policy calculation of that change is timed twice: as felix does it, by
:class:`felix.policyindex.PolicyIndex` following the snapshot, and from scratch
(:func:`~felix.policycalc.node_policy`, the reference column).
Calico's felix publishes no comparable figure for iptables or nftables programming that we
could find; the reference column is the same work done as a full rebuild of the table.

    .venv/bin/python -m bench.policy [--quick] [--sizes 1000]
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Sequence

from bench.common import Report, parse_sizes
from calyx import model
from calyx import networkpolicy as np
from felix import policycalc as pc
from felix.dataplane import policynft
from felix.dataplane.nfttable import LibNftables
from felix.policyindex import PolicyIndex

NAMESPACES = 50
APPS = 20
LOCAL_PODS = 100
NODE = "node-0"


def cluster(pod_count: int) -> tuple[list[pc.PolicyPod], dict[str, dict[str, str]]]:
    pods = []
    for i in range(pod_count):
        ns = f"ns-{i % NAMESPACES:02d}"
        node = NODE if i < LOCAL_PODS else f"node-{1 + i % 49}"
        pods.append(pc.PolicyPod(ns, f"pod-{i:05d}", node, IPv4Address(f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"),
                                 {"app": f"app-{i % APPS}", "tier": f"tier-{i % 3}"}))
    namespaces = {f"ns-{n:02d}": {"kubernetes.io/metadata.name": f"ns-{n:02d}", "team": f"team-{n}"}
                  for n in range(NAMESPACES)}
    return pods, namespaces


def policies(count: int) -> list[np.NetworkPolicy]:
    out = []
    for i in range(count):
        ns, app = i % NAMESPACES, i // NAMESPACES % APPS      # 1,000 distinct (namespace, app)
        out.append(np.parse_network_policy({"metadata": {"name": f"policy-{i:04d}", "namespace": f"ns-{ns:02d}"},
                                            "spec": {
            "podSelector": {"matchLabels": {"app": f"app-{app}"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"app-{(app + 1) % APPS}"}}}],
                         "ports": [{"port": 8080 + i % 7}]},
                        {"from": [{"namespaceSelector": {"matchLabels": {"team": f"team-{(ns + 1) % NAMESPACES}"}}}],
                         "ports": [{"port": 9090}]}]}}))
    return out


def label_change(count: int, pods: list[pc.PolicyPod]) -> tuple[pc.PolicyPod, str]:
    """A remote pod and the app label that makes it join the peer set of the first policy that
    selects a local pod: the change is one element in one set, whatever the size."""
    for i in range(count):
        ns, app = i % NAMESPACES, i // NAMESPACES % APPS
        if not any(j % NAMESPACES == ns and j % APPS == app for j in range(LOCAL_PODS)):
            continue
        target = (app + 1) % APPS
        moved = next(p for j, p in enumerate(pods) if j >= LOCAL_PODS and j % NAMESPACES == ns and j % APPS != target)
        return moved, f"app-{target}"
    raise ValueError(f"none of {count} policies selects a local pod")


def snapshot_of(pols: list[np.NetworkPolicy], pods: list[pc.PolicyPod],
                namespaces: dict[str, dict[str, str]]) -> model.Snapshot:
    """The same cluster as the datastore hands it to felix."""
    infos = [model.PodInfo(p.namespace, p.name, p.node, (p.ip,) if p.ip else (), labels=tuple(sorted(p.labels.items())))
             for p in pods]
    return model.Snapshot(pods={i.key: i for i in infos}, namespaces=namespaces,
                          network_policies={p.key: p for p in pols})


def table_for(pols, pods, namespaces) -> tuple[policynft.PolicyTable, float]:
    started = time.perf_counter()
    result = pc.node_policy(NODE, pols, pods, namespaces)
    devices = {key: f"cali{abs(hash(key)) % 10**10:010d}"[:15] for key in result.endpoints}
    table = policynft.desired_table(result, devices)
    return table, time.perf_counter() - started


def measure(nft: LibNftables, count: int, pod_count: int, report: Report) -> None:
    pods, namespaces = cluster(pod_count)
    pols = policies(count)
    table, calc = table_for(pols, pods, namespaces)
    index = PolicyIndex(NODE)
    snapshot = snapshot_of(pols, pods, namespaces)
    started = time.perf_counter()
    index.update(snapshot)
    index_cold = time.perf_counter() - started
    started = time.perf_counter()
    plan = policynft.plan(table, None)
    plan_seconds = time.perf_counter() - started
    started = time.perf_counter()
    nft.run(plan.commands)
    apply_cold = time.perf_counter() - started
    elements = sum(len(e) for _, e in table.sets.values())
    report.add(f"{count} policies, {pod_count} pods", "cold: calculation + plan", calc + plan_seconds,
               f"{len(table.chains)} chains, {len(table.sets)} sets, {elements} elements", "")
    report.add(f"{count} policies, {pod_count} pods", "cold: transaction", apply_cold,
               f"{len(plan.commands)} commands", "")

    moved, app = label_change(count, pods)
    relabelled = [pc.PolicyPod(p.namespace, p.name, p.node, p.ip, {**p.labels, "app": app})
                  if p is moved else p for p in pods]
    started = time.perf_counter()
    listing = nft.list_table(policynft.FAMILY, policynft.TABLE)
    observed = policynft.parse_table(listing)
    read_seconds = time.perf_counter() - started
    new_table, recalc = table_for(pols, relabelled, namespaces)
    started = time.perf_counter()
    from_scratch = pc.node_policy(NODE, pols, relabelled, namespaces)
    full_calc = time.perf_counter() - started
    info = snapshot.pods[(moved.namespace, moved.name)]
    next_snapshot = replace(snapshot, pods={**snapshot.pods, info.key: replace(info, labels=tuple(sorted(
        {**info.label_map, "app": app}.items())))})
    started = time.perf_counter()
    delta = index.update(next_snapshot)
    incremental = time.perf_counter() - started
    assert index.policy == from_scratch, "PolicyIndex differs from node_policy"
    started = time.perf_counter()
    change = policynft.plan(new_table, observed)
    plan_seconds = time.perf_counter() - started
    started = time.perf_counter()
    nft.run(change.commands)
    apply_change = time.perf_counter() - started
    rebuild = policynft.plan(new_table, None)
    nft.run([{"delete": {"table": {"family": policynft.FAMILY, "name": policynft.TABLE}}}])
    started = time.perf_counter()
    nft.run(rebuild.commands)
    apply_rebuild = time.perf_counter() - started
    report.add(f"{count} policies, {pod_count} pods", "label change: calculation + plan", recalc + plan_seconds,
               f"{len(change.commands)} commands ({change.action})", "")
    report.add(f"{count} policies, {pod_count} pods", "label change: policy calculation (PolicyIndex)", incremental,
               f"{len(delta.sets)} sets changed, {delta.evaluations} selector tests",
               f"{full_calc:.4f} s (node_policy from scratch)")
    report.add(f"{count} policies, {pod_count} pods", "label change: transaction", apply_change,
               "", f"{apply_rebuild:.3f} s ({len(rebuild.commands)} commands)")
    report.note(f"{count} policies: PolicyIndex from cold (felix's first snapshot) took {index_cold:.3f} s")
    report.note(f"{count} policies: reading the table back for the plan took {read_seconds:.2f} s "
                f"(done at felix's start and every resync, not per change)")
    nft.run([{"delete": {"table": {"family": policynft.FAMILY, "name": policynft.TABLE}}}])


def main(argv: Sequence[str] | None = None) -> int:
    sizes = parse_sizes(__doc__.split("\n\n")[0], full=(1000,), quick=(50,), argv=argv, what="policy counts")
    pod_count = 500 if sizes.quick else 5000
    report = Report("NetworkPolicy programming on one node (felix.policycalc + ip calyx-policy)",
                    f".venv/bin/python -m bench.policy{' --quick' if sizes.quick else ''}",
                    ("cluster", "step", "seconds", "size", "reference: full rebuild"))
    netns = f"cxbench-policy-{time.monotonic_ns() % 100000}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        nft = LibNftables(netns)
        for count in sizes.values:
            measure(nft, count, pod_count, report)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    report.finish(sizes.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
