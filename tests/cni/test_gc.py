"""Garbage collection of IPAM blocks: a deleted Node's blocks are released only after it has been
gone for the grace period and once no Pod is bound to it; live nodes' blocks are never touched,
and a block changed since it was read is not lost. And of a node's leaked addresses: released
once their pod has not held them for the grace period, never one re-made since it was read."""
from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network

import pytest
from kubernetes import client as k8s

from calyx import crds
from calyx.cni import blocks, gc, ipam, leakgc, leaks
from calyx.kube import client as kube_client
from cnitest_support import Clock

pytestmark = pytest.mark.lab


def _pod(name: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]}}


def _owners(cluster) -> dict[str, str]:
    return {b["spec"]["cidr"]: b["spec"]["affinity"] for b in cluster.blocks()}


def test_blocks_of_a_deleted_node_are_released_after_the_grace_once_its_pods_are_gone(cluster):
    cluster.create_pool("pool-g", "10.95.0.0/24", block_size=28)
    for n in ("gc-keep", "gc-gone", "gc-busy"):
        cluster.create_node(n)
    api = blocks.Api(kube_client.load(cluster.kubeconfig))
    for n in ("gc-keep", "gc-gone", "gc-busy", "gc-busy"):
        blocks.BlockClaimer(api, n).claim_more()
    core = k8s.CoreV1Api(cluster.api)
    core.create_namespaced_pod("default", _pod("still-there", "gc-busy"))
    core.delete_node("gc-gone")
    core.delete_node("gc-busy")

    clock = Clock()
    collector = gc.GarbageCollector(api, node_grace=120, clock=clock)
    assert collector.pass_once() == [] and collector.pending()     # absence seen, grace not over
    clock.t = 119
    assert collector.pass_once() == [] and len(cluster.blocks()) == 4
    clock.t = 120
    assert collector.pass_once() == ["10-95-0-16-28"]
    assert _owners(cluster) == {"10.95.0.0/28": "host:gc-keep", "10.95.0.32/28": "host:gc-busy",
                                "10.95.0.48/28": "host:gc-busy"}

    core.delete_namespaced_pod("still-there", "default", grace_period_seconds=0)   # no kubelet to confirm
    # The command operators run by hand does the same (one run: two looks, grace apart).
    run = subprocess.run([sys.executable, "-m", "calyx.cni.plugin", "gc", "--kubeconfig", cluster.kubeconfig,
                          "--node-grace", "1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "10-95-0-32-28" in run.stderr and "10-95-0-48-28" in run.stderr
    assert _owners(cluster) == {"10.95.0.0/28": "host:gc-keep"}

    # A released block is free again: the next node to need one gets the lowest.
    cluster.create_node("gc-new")
    assert str(blocks.BlockClaimer(api, "gc-new").claim_more()) == "10.95.0.16/28"


def test_a_node_back_within_the_grace_keeps_its_blocks_and_a_changed_block_is_not_deleted(cluster):
    cluster.create_pool("pool-h", "10.95.1.0/24", block_size=28)
    cluster.create_node("back")
    api = blocks.Api(kube_client.load(cluster.kubeconfig))
    blocks.BlockClaimer(api, "back").claim_more()
    core = k8s.CoreV1Api(cluster.api)
    core.delete_node("back")
    clock = Clock()
    collector = gc.GarbageCollector(api, node_grace=10, clock=clock)
    collector.pass_once()
    cluster.create_node("back")                  # re-registered: absence forgotten
    clock.t = 5
    collector.pass_once()
    assert not collector.pending()
    core.delete_node("back")
    clock.t = 6
    collector.pass_once()
    clock.t = 15                                 # only 9 s of absence since it was last seen
    assert collector.pass_once() == []
    # The block is re-written between the collector's read and its delete: the precondition holds it.
    stale = gc.block_refs(api.list_custom(blocks.IPAMBLOCK_PLURAL), crds.spec_schemas())[0]
    raw = api.read_block(stale.name)
    raw["metadata"].setdefault("labels", {})["touched"] = "yes"
    k8s.CustomObjectsApi(cluster.api).replace_cluster_custom_object("calyx.dev", "v1", "ipamblocks",
                                                                    stale.name, raw)
    assert collector._delete(stale) is False
    assert [b["spec"]["cidr"] for b in cluster.blocks()] == ["10.95.1.0/28"]
    clock.t = 16
    assert collector.pass_once() == ["10-95-1-0-28"]        # re-read: now it goes


def test_gc_decisions_are_pure_and_the_smallest_node_name_collects():
    ref = lambda name, node: gc.BlockRef(name, IPv4Network("10.0.0.0/28"), node, "u", "1")  # noqa: E731
    refs = [ref("a", "n1"), ref("b", "n2"), ref("c", None)]
    absent = gc.note_absent_nodes({"n1"}, refs, {}, now=10.0)
    assert absent == {"n2": 10.0}
    assert gc.note_absent_nodes({"n1"}, refs, absent, now=50.0) == {"n2": 10.0}
    assert gc.blocks_to_release(refs, absent, {"n2": 0}, now=129.0, node_grace=120) == []
    assert gc.blocks_to_release(refs, absent, {"n2": 0}, now=130.0, node_grace=120) == [refs[1]]
    assert gc.blocks_to_release(refs, absent, {"n2": 2}, now=130.0, node_grace=120) == []
    assert gc.blocks_to_release(refs, absent, {}, now=130.0, node_grace=120) == []       # pods not counted
    assert gc.is_collector("node-a", ["node-b", "node-a", "worker"])
    assert not gc.is_collector("node-b", ["node-b", "node-a"]) and not gc.is_collector("x", [])


def test_leak_decisions_are_pure_judge_only_pods_and_wait_for_the_grace():
    ip = IPv4Address
    gone, moved, other, mine, starting, anonymous = (
        leaks.Held("c1", "eth0", ip("10.0.0.1"), "ns", "gone"),
        leaks.Held("c2", "eth0", ip("10.0.0.2"), "ns", "moved"),
        leaks.Held("c3", "eth0", ip("10.0.0.3"), "ns", "replaced"),
        leaks.Held("c4", "eth0", ip("10.0.0.4"), "ns", "live"),
        leaks.Held("c5", "eth0", ip("10.0.0.5"), "ns", "starting"),
        leaks.Held("c6", "eth0", ip("10.0.0.6"), "", ""))
    pods = {("ns", "replaced"): (ip("10.0.0.9"),), ("ns", "live"): (ip("10.0.0.4"),), ("ns", "starting"): ()}
    found = leaks.suspects([gone, moved, other, mine, starting, anonymous], pods)
    assert [(s.held, s.reason) for s in found] == [
        (gone, "pod ns/gone is not on this node"), (moved, "pod ns/moved is not on this node"),
        (other, "pod ns/replaced holds 10.0.0.9 instead")]
    since = leaks.note_suspects(found, {}, now=10.0)
    assert leaks.due(found, since, now=69.0, grace=60) == []
    since = leaks.note_suspects(found[1:], since, now=70.0)           # 'gone' came back: forgotten
    assert gone not in since
    assert [s.held for s in leaks.due(found[1:], since, now=70.0, grace=60)] == [moved, other]


def test_leaked_addresses_are_released_after_the_grace_and_only_if_unchanged(cluster, tmp_path):
    store = ipam.AddressStore(str(tmp_path / "run"))

    def alloc(cid: str, address: str, pod: str) -> ipam.Allocation:
        return ipam.Allocation(IPv4Address(address), cid, "eth0", "default", pod, "cali0")

    live, leaked, readded = alloc("c-live", "10.96.0.1", "live"), alloc("c-gone", "10.96.0.2", "gone"), \
        alloc("c-again", "10.96.0.3", "again")
    with store.locked():
        store.write(ipam.State(allocations=(live, leaked, readded)))
    k8s.CoreV1Api(cluster.api).create_namespaced_pod("default", _pod("live", cluster.node))
    api = blocks.Api(kube_client.load(cluster.kubeconfig))
    clock = Clock()
    collector = leakgc.LeakCollector(api, cluster.node, store, leak_grace=30, clock=clock)
    assert collector.pass_once() == [] and collector.pending()
    # Between the collector's read and its release, 'again' is given another address: kept.
    clock.t = 30
    original_read = store.read
    def read_then_change():
        state = original_read()
        store.read = original_read
        with_new = state.with_allocation(alloc("c-again", "10.96.0.4", "again"))
        store.write(with_new)
        return state
    store.read = read_then_change
    assert collector.pass_once() == [leaked]
    assert [(a.container_id, str(a.address)) for a in store.read().allocations] == \
        [("c-live", "10.96.0.1"), ("c-again", "10.96.0.4")]
