"""Garbage collection of IPAM blocks: a deleted Node's blocks are released only after it has been
gone for the grace period and once no Pod is bound to it; live nodes' blocks are never touched,
and a block changed since it was read is not lost."""
from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Network

import pytest
from kubernetes import client as k8s

from calyx import crds
from calyx.cni import blocks, gc
from calyx.kube import client as kube_client

pytestmark = pytest.mark.lab


def _pod(name: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]}}


def _owners(cluster) -> dict[str, str]:
    return {b["spec"]["cidr"]: b["spec"]["affinity"] for b in cluster.blocks()}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


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
