"""felix route programming against the physical floor.

For each N: a scratch namespace gets N cali veths (made with ``ip -batch``, not timed), a
Snapshot holds N running pods on this node plus its block, and felix's calculation and route
manager (the code the daemon runs: ``desired_dataplane`` -> ``RouteManager.resync`` ->
``RouteManager.reconcile``, over the shared netlink layer) program the /32s. Timed: from the
snapshot to every route in the kernel. Then, with everything in place, a fresh route manager
(felix restarting) resyncs and reconciles: its time and the number of netlink writes (expected
0). The floor is ``ip -batch`` adding the same routes to a second namespace with the same links.

    .venv/bin/python -m bench.felix_routes [--quick] [--sizes 1000,10000,50000]
"""
from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
import time
from typing import Sequence

from prometheus_client import CollectorRegistry

from bench.common import Report, parse_sizes
from bench.testbed import Testbed, ip_batch
from calyx import model
from calyx.naming import FELIX_ROUTE_PROTOCOL, cali_interface_name
from calyx.netlink import RouteTable
from felix.calc import LocalFacts, desired_dataplane
from felix.dataplane.routes import RouteManager
from felix.metrics import FelixMetrics

NODE = "bench-node"
POOL = ipaddress.IPv4Network("100.64.0.0/10")


def snapshot(n: int) -> model.Snapshot:
    """N running pods on NODE with consecutive addresses in one big node CIDR."""
    cidr = ipaddress.IPv4Network(f"100.64.0.0/{32 - max(8, (n + 2).bit_length())}")
    hosts = cidr.hosts()
    pods = {}
    for i in range(n):
        name = f"pod-{i}"
        pods[("bench", name)] = model.PodInfo(namespace="bench", name=name, node=NODE, ips=(next(hosts),),
                                              phase="Running")
    node = model.NodeInfo(name=NODE, pod_cidrs=(cidr,))
    pool = model.IPPool(name="bench", cidr=POOL)
    return model.Snapshot(nodes={NODE: node}, pods=pods, ippools={"bench": pool})


def with_running_pods(snap: model.Snapshot, pods: dict[str, str]) -> model.Snapshot:
    """``snap`` with more running pods on NODE (name -> address), e.g. pods wired for traffic."""
    extra = {("bench", name): model.PodInfo(namespace="bench", name=name, node=NODE,
                                            ips=(ipaddress.IPv4Address(ip),), phase="Running")
             for name, ip in pods.items()}
    return dataclasses.replace(snap, pods={**snap.pods, **extra})


def make_links(netns: str, peers: str, snap: model.Snapshot) -> None:
    """N cali veths, up, whose other ends go to ``peers`` (as pod ends live in pod namespaces:
    the node's namespace holds one link per pod). IPv6 is off in both namespaces first:
    otherwise thousands of links going up start IPv6 autoconfiguration work that holds the
    kernel's rtnl lock for many seconds and would be timed as route programming."""
    for name in (netns, peers):
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
    names = [cali_interface_name(p.namespace, p.name) for p in snap.pods.values()]
    ip_batch((f"link add {name} up type veth peer name p{i} netns {peers}" for i, name in enumerate(names)), netns)


def writes_of(metrics: FelixMetrics) -> float:
    return metrics.netlink_writes.labels("route")._value.get()


def felix_program(netns: str, snap: model.Snapshot) -> tuple[float, float, float, int]:
    """(calc seconds, resync seconds, apply seconds, routes in the kernel) for a first programming."""
    with RouteTable(netns=netns) as table:
        metrics = FelixMetrics.create(CollectorRegistry())
        manager = RouteManager(table, metrics)
        t0 = time.perf_counter()
        desired = desired_dataplane(snap, LocalFacts(NODE))
        t1 = time.perf_counter()
        manager.resync()
        t2 = time.perf_counter()
        plan = manager.reconcile(desired.routes, desired.reasons)
        t3 = time.perf_counter()
        if plan.pending or plan.conflicts:
            raise RuntimeError(f"felix left {len(plan.pending)} pending, {len(plan.conflicts)} conflicting routes")
        programmed = len(table.dump(proto=FELIX_ROUTE_PROTOCOL))
    return t1 - t0, t2 - t1, t3 - t2, programmed


def felix_resync(netns: str, snap: model.Snapshot) -> tuple[float, float]:
    """(seconds, netlink writes) for a fresh route manager with everything already in place."""
    with RouteTable(netns=netns) as table:
        metrics = FelixMetrics.create(CollectorRegistry())
        manager = RouteManager(table, metrics)
        t0 = time.perf_counter()
        desired = desired_dataplane(snap, LocalFacts(NODE))
        manager.resync()
        manager.reconcile(desired.routes, desired.reasons)
        elapsed = time.perf_counter() - t0
        return elapsed, writes_of(metrics)


def ip_batch_floor(netns: str, snap: model.Snapshot) -> float:
    desired = desired_dataplane(snap, LocalFacts(NODE))
    lines = []
    for route in desired.routes.values():
        if route.kind == "blackhole":
            lines.append(f"route add blackhole {route.dst} proto {FELIX_ROUTE_PROTOCOL}")
        else:
            lines.append(f"route add {route.dst} dev {route.dev} scope link proto {FELIX_ROUTE_PROTOCOL}")
    t0 = time.perf_counter()
    ip_batch(lines, netns)
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> Report:
    sizes = parse_sizes(__doc__.split("\n\n")[0], (1000, 10000, 50000), (200,), argv, "pod counts")
    report = Report("felix route programming (pod /32 routes into one namespace)",
                    ".venv/bin/python -m bench.felix_routes" + (" --quick" if sizes.quick else ""),
                    ("pods", "felix s", "= calc s", "+ dump s", "+ write s", "ip -batch s", "felix/ip ratio",
                     "resync s", "resync writes"))
    for n in sizes.values:
        snap = snapshot(n)
        with Testbed("cxfr") as bed:
            felix_ns, floor_ns = bed.netns("f"), bed.netns("i")
            make_links(felix_ns, bed.netns("fp"), snap)
            make_links(floor_ns, bed.netns("ip"), snap)
            calc, dump, write, programmed = felix_program(felix_ns, snap)
            if programmed != n + 1:
                raise RuntimeError(f"{programmed} felix routes in the kernel, expected {n + 1}")
            floor = ip_batch_floor(floor_ns, snap)
            again, writes = felix_resync(felix_ns, snap)
        total = calc + dump + write
        report.add(n, total, calc, dump, write, floor, total / floor, again, int(writes))
    report.note("felix s = calc (snapshot -> desired routes) + dump (first read of the kernel's routes and "
                "links) + write (netlink batches); link creation is not timed. Routes include the block blackhole.")
    report.note("The kernel's cost per `dev` route grows with the number of links in the namespace (the "
                "ip -batch floor is 0.1 s for 5k routes over one link, seconds over 5k links), so both columns "
                "grow faster than N.")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
