"""End-to-end latency: a pod created in the API on node A -> its address usable from node B.

A cluster of N nodes (full mesh, plain BGP) runs felix and bgpd on every node. Each pod's
host-side cali veth already exists on node A (as the CNI plugin would have made it), its other
end holds the pod address in a pod namespace. For each of P pods in turn: the Pod is created
and given its IP in the API (create + status patch), and a probe in node B's namespace sends
UDP to the pod until the pod's kernel answers (ICMP port unreachable). Latency = from the
create call to that answer; it covers the API watch, felix's calculation and netlink write on
A, and forwarding B -> A -> pod over the route bgpd installed for A's block.

    .venv/bin/python -m bench.e2e_latency [--quick] [--sizes 3,10] [--pods 200]
"""
from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
import time
from typing import Sequence

from bench.cluster import Topology, build, node_block, start, wait_converged
from bench.common import REPO, Report, parse_sizes, percentile, wait_until
from bench.testbed import Node, Testbed, ip_batch
from calyx.naming import FELIX_ROUTE_PROTOCOL, cali_interface_name

NAMESPACE = "default"


def prepare_pods(bed: Testbed, node: Node, count: int, block: str) -> list[tuple[str, str]]:
    """Pod namespace + cali veths on ``node``; [(pod name, pod IP)]."""
    pods_ns = bed.netns("pods")
    hosts = ipaddress.IPv4Network(block).hosts()
    next(hosts)                                          # .0 is the tunnel address by convention
    pods = [(f"pod-{i}", str(next(hosts))) for i in range(count)]
    ip_batch([f"link add {cali_interface_name(NAMESPACE, name)} up type veth peer name p{i} netns {pods_ns}"
              for i, (name, _) in enumerate(pods)], node.netns)
    # as the CNI plugin sets up each host-side veth: answer the pod's ARP for its gateway at once
    subprocess.run(["ip", "netns", "exec", node.netns, "sysctl", "-qw", "net.ipv4.conf.all.proxy_arp=1"]
                   + [f"net.ipv4.neigh.{cali_interface_name(NAMESPACE, name)}.proxy_delay=0" for name, _ in pods],
                   check=True)
    cmds = []
    for i, (_, pod_ip) in enumerate(pods):
        cmds += [f"addr add {pod_ip}/32 dev p{i}", f"link set p{i} up"]
    # replies leave through the first pod's veth; the node answers ARP for its gateway (proxy ARP)
    cmds.append("route add default via 169.254.1.1 dev p0 onlink")
    ip_batch(cmds, pods_ns)
    # every pod answers B's probes from this one namespace: lift the 1/s ICMP rate limit per peer
    subprocess.run(["ip", "netns", "exec", pods_ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0", "net.ipv4.icmp_ratelimit=0"], check=True)
    return pods


def measure(nodes: int, pod_count: int) -> list[float]:
    topo = Topology(nodes=nodes, felix=True)
    with Testbed("cxe2") as bed:
        members = build(bed, topo)
        a, b = members[0], members[1]
        pods = prepare_pods(bed, a, pod_count, node_block(0))
        procs = start(bed, members, topo)
        wait_converged(members, procs, nodes - 1, 300)
        # felix has done its first full sync everywhere once each node's block blackhole is in
        wait_until(lambda: all(n.routes(FELIX_ROUTE_PROTOCOL) >= 1 for n in members), 300, 0.1, "felix ready")
        probe = subprocess.Popen(["ip", "netns", "exec", b.netns, sys.executable, str(REPO / "bench" / "probe.py")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert probe.stdout.readline().strip() == "ready"
            latencies = []
            for name, pod_ip in pods:
                t0 = time.monotonic()
                bed.core.create_namespaced_pod(NAMESPACE, {
                    "metadata": {"name": name},
                    "spec": {"nodeName": a.name, "containers": [{"name": "c", "image": "pause"}]}})
                bed.core.patch_namespaced_pod_status(name, NAMESPACE, {"status": {
                    "phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}})
                probe.stdin.write(pod_ip + "\n")
                probe.stdin.flush()
                address, when = probe.stdout.readline().split()
                if when == "timeout":
                    raise RuntimeError(f"pod {name} ({pod_ip}) never became reachable from {b.name}")
                latencies.append(float(when) - t0)
        finally:
            probe.stdin.close()
            probe.kill()
            probe.wait()
    return latencies


def main(argv: Sequence[str] | None = None) -> Report:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--pods", type=int)
    known, rest = pre.parse_known_args(argv)
    sizes = parse_sizes(__doc__.split("\n\n")[0], (3, 10), (3,), rest, "node counts")
    pod_count = known.pods or (20 if sizes.quick else 200)
    report = Report(f"End-to-end latency: pod created in the API on node A -> usable from node B ({pod_count} pods)",
                    ".venv/bin/python -m bench.e2e_latency" + (" --quick" if sizes.quick else ""),
                    ("nodes", "pods", "p50 ms", "p90 ms", "p99 ms", "max ms"))
    for n in sizes.values:
        lat = [x * 1000 for x in measure(n, pod_count)]
        report.add(n, len(lat), percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), max(lat))
    report.note("Pods are created one after another; each latency includes the two API calls (create, status "
                "patch), felix's debounce (FELIX_DEBOUNCE, default 50 ms) and the 2 ms probe interval.")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
