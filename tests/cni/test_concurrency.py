"""Races: 200 ADDs at once on one node (processes, one lock, one state file), and block claims by
many nodes at once through a real kube-apiserver."""
from __future__ import annotations

import ipaddress
import json
import resource
import subprocess
import threading
import time

import pytest

from calyx import crds, model
from calyx.cni import blocks
from calyx.cni.config import CniError
from calyx.kube import client as kube_client
from cnitest_support import Namespaces, reap, sh

pytestmark = pytest.mark.lab

PODS = 200


def _children_cpu() -> float:
    """CPU seconds used by this test's finished child processes (the plugins)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# Most ADDs allocate from the blocks cached on disk without loading the Kubernetes client; only
# the few that claim a block do. No timing is asserted (the figure is printed); the timeout
# only bounds a hang (200 namespaces are made and removed too, on a machine that may be busy).
@pytest.mark.timeout(600)
def test_200_concurrent_adds_on_one_node_get_distinct_addresses(cluster):
    cluster.create_pool("pool-a", "10.90.0.0/22", block_size=26)   # 63 pod addresses per block: 4 blocks
    pod_nss = [cluster.namespaces.add(f"c{i}") for i in range(PODS)]
    procs: list[subprocess.Popen] = []
    try:
        _adds_then_dels(cluster, pod_nss, procs)
    finally:
        reap(procs)


def _adds_then_dels(cluster, pod_nss: list[str], procs: list[subprocess.Popen]) -> None:
    conf = json.dumps(cluster.netconf())
    for i, ns in enumerate(pod_nss):
        procs.append(cluster.spawn_plugin(cluster.env("ADD", f"cid-{i}", Namespaces.path(ns), ("load", f"pod-{i}")),
                                          feed=False))
    started, cpu_before = time.monotonic(), _children_cpu()
    for proc in procs:          # every ADD gets its config at once: they all race for the node lock
        proc.stdin.write(conf)
        proc.stdin.close()
    results, slow_paths = [], 0
    for proc in procs:
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait(timeout=400)
        assert proc.returncode == 0, out + err
        results.append(json.loads(out)["ips"][0]["address"])
        slow_paths += err.count("asking the API")
    add_seconds, add_cpu = time.monotonic() - started, _children_cpu() - cpu_before
    print(f"\n{PODS} concurrent ADDs: {add_seconds:.1f} s wall, {add_cpu:.1f} s CPU "
          f"({add_cpu / PODS * 1000:.0f} ms each); {slow_paths} of them asked the API")
    assert len(set(results)) == PODS
    # One API round per block claimed (4), plus at most a few re-confirmations of the cache.
    assert 4 <= slow_paths <= 12, slow_paths
    addresses = {ipaddress.ip_interface(a).ip for a in results}
    node_blocks = sorted(ipaddress.ip_network(b["spec"]["cidr"]) for b in cluster.blocks())
    assert node_blocks == list(ipaddress.ip_network("10.90.0.0/22").subnets(new_prefix=26))[:4]
    assert not addresses & {b.network_address for b in node_blocks}        # kept for tunl0
    assert all(any(a in b for b in node_blocks) for a in addresses)

    state = json.loads((cluster.workdir / "run" / "ipam" / "state.json").read_text())
    assert sorted(a["address"] for a in state["allocations"]) == sorted(str(a) for a in addresses)
    routes = sh("ip", "route", "show", "proto", "80", netns=cluster.node_ns).stdout.splitlines()
    assert len(routes) == PODS
    assert f"inet {results[123]}" in sh("ip", "addr", "show", "eth0", netns=pod_nss[123]).stdout

    # And all DELs at once: every address is released, every veth gone.
    procs.clear()
    started, cpu_before = time.monotonic(), _children_cpu()
    for i, ns in enumerate(pod_nss):
        procs.append(cluster.spawn_plugin(cluster.env("DEL", f"cid-{i}", Namespaces.path(ns), ("load", f"pod-{i}")),
                                          feed=False))
    for proc in procs:
        out, err = proc.communicate(conf, timeout=400)
        assert proc.returncode == 0, out + err
    del_cpu = _children_cpu() - cpu_before
    print(f"{PODS} concurrent DELs: {time.monotonic() - started:.1f} s wall, {del_cpu:.1f} s CPU "
          f"({del_cpu / PODS * 1000:.0f} ms each)")
    state = json.loads((cluster.workdir / "run" / "ipam" / "state.json").read_text())
    assert state["allocations"] == []
    assert sh("ip", "route", "show", "proto", "80", netns=cluster.node_ns).stdout.strip() == ""


def _race(cluster, nodes: list[str], claims_each: int) -> dict[str, list]:
    """Every node claims ``claims_each`` blocks, all starting at the same instant (own client each)."""
    barrier = threading.Barrier(len(nodes))
    got: dict[str, list] = {n: [] for n in nodes}

    def node_main(node: str) -> None:
        claimer = blocks.BlockClaimer(blocks.Api(kube_client.load(cluster.kubeconfig)), node)
        barrier.wait(timeout=60)
        for _ in range(claims_each):
            try:
                got[node].append(claimer.claim_more())
            except CniError as exc:
                got[node].append(exc)

    threads = [threading.Thread(target=node_main, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return got


@pytest.mark.parametrize("node_count, claims_each", [(20, 3), (50, 1)])
def test_racing_nodes_never_share_a_block(cluster, node_count, claims_each):
    nodes = [f"race-{i:02d}" for i in range(node_count)]
    for n in nodes:
        cluster.create_node(n)
    total = node_count * claims_each
    cluster.create_pool("pool-r", "10.91.0.0/20", block_size=28)   # 256 blocks
    got = _race(cluster, nodes, claims_each)
    claimed = [c for cs in got.values() for c in cs]
    assert all(isinstance(c, ipaddress.IPv4Network) for c in claimed), claimed
    assert len(claimed) == total and len(set(claimed)) == total
    # What each node believes it owns is exactly what the API says it owns.
    in_api = {}
    for raw in cluster.blocks():
        b = model.parse_ipam_block(raw, crds.spec_schemas())
        in_api[b.cidr] = b.node
    assert in_api == {c: n for n, cs in got.items() for c in cs}
    # Lowest blocks first: no holes left behind by the race.
    assert sorted(in_api) == list(ipaddress.ip_network("10.91.0.0/20").subnets(new_prefix=28))[:total]


def test_exhaustion_of_every_pool_is_reported_naming_node_and_pools(cluster):
    nodes = [f"ex-{i}" for i in range(6)]
    for n in nodes:
        cluster.create_node(n)
    cluster.create_pool("tiny-1", "10.92.0.0/27", block_size=29)      # 4 blocks
    cluster.create_pool("tiny-2", "10.92.1.0/28", block_size=29)      # 2 blocks
    cluster.create_pool("off", "10.92.2.0/24", block_size=29, disabled=True)
    got = _race(cluster, nodes, 2)                                    # 12 wanted, 6 exist
    claimed = [c for cs in got.values() for c in cs if isinstance(c, ipaddress.IPv4Network)]
    errors = [c for cs in got.values() for c in cs if isinstance(c, CniError)]
    assert len(claimed) == 6 and len(set(claimed)) == 6
    assert all(c.subnet_of(ipaddress.ip_network("10.92.0.0/23")) for c in claimed)
    assert len(errors) == 6
    for err in errors:
        assert err.code == 100
        assert "tiny-1 (10.92.0.0/27" in err.msg and "tiny-2 (10.92.1.0/28" in err.msg and "off" not in err.msg
    assert any("'ex-" in e.msg for e in errors)


def test_node_selector_limits_the_pools_a_node_draws_from(cluster):
    cluster.create_node("edge-1", labels={"zone": "edge"})
    cluster.create_pool("core", "10.93.0.0/24", block_size=28, nodeSelector="zone == 'core'")
    cluster.create_pool("edge", "10.93.1.0/24", block_size=28, nodeSelector="zone == 'edge'")
    got = _race(cluster, ["edge-1"], 1)
    assert got["edge-1"] == [ipaddress.ip_network("10.93.1.0/28")]
