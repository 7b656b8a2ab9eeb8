"""Garbage collection of IPAM blocks: a deleted Node's blocks are released only once no Pod is
bound to it any more; live nodes' blocks and young blocks are never touched."""
from __future__ import annotations

import subprocess
import sys

import pytest
from kubernetes import client as k8s

from calyx.cni import blocks
from calyx.kube import client as kube_client

pytestmark = pytest.mark.lab


def _pod(name: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]}}


def _owners(cluster) -> dict[str, str]:
    return {b["spec"]["cidr"]: b["spec"]["affinity"] for b in cluster.blocks()}


def test_blocks_of_a_deleted_node_are_released_once_its_pods_are_gone(cluster):
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

    # Young blocks are kept (a node may claim before its Node object exists).
    assert blocks.collect_garbage(api, min_age_s=3600) == []
    assert len(cluster.blocks()) == 4

    assert blocks.collect_garbage(api, min_age_s=0) == ["10-95-0-16-28"]
    assert _owners(cluster) == {"10.95.0.0/28": "host:gc-keep", "10.95.0.32/28": "host:gc-busy",
                                "10.95.0.48/28": "host:gc-busy"}

    core.delete_namespaced_pod("still-there", "default")
    # The command operators (or the chart's CronJob/DaemonSet) run:
    run = subprocess.run([sys.executable, "-m", "calyx.cni.plugin", "gc", "--kubeconfig", cluster.kubeconfig,
                          "--min-age", "0"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "10-95-0-32-28" in run.stderr and "10-95-0-48-28" in run.stderr
    assert _owners(cluster) == {"10.95.0.0/28": "host:gc-keep"}

    # A released block is free again: the next node to need one gets the lowest.
    cluster.create_node("gc-new")
    assert str(blocks.BlockClaimer(api, "gc-new").claim_more()) == "10.95.0.16/28"
