"""Moving pods to a new IPPool without an outage (the recipe of docs/install.md, "Upgrade"), and
an overlapping IPPool refused by the daemons. Three nodes on one L2 segment, a full mesh and
plain routing, so the lab runs on the host kernel.

Expected: with the old pool disabled, new pods get addresses from the new pool only; the old
pods keep answering from pods on the other nodes, and their blocks stay blackholed on their
node and advertised to and installed by every other node, until they are deleted. Once the
old pool and its blocks are deleted, their routes go everywhere. An IPPool overlapping the
pool in use, applied with kubectl, is refused with a Warning Event naming it, spec.cidr, its
value and the pool it overlaps, and the pool in use keeps working.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from ipaddress import IPv4Network, ip_address
from pathlib import Path

import pytest

from calyx.cni import ipam
from calyx.kube.datastore import CONFLICT_REASON
from calyxlab import pods, pytest_plugin
from e2e_support import (KUBECTL, POD_NAMESPACE, Pod, add_pod, assert_full_matrix, bgp_routes, core_api,
                         custom_api, routes, wait_for, wait_sessions)

pytestmark = [pytest.mark.lab]

TOPOLOGY = Path(__file__).parent / "topologies" / "pool-migration" / "pool-migration.clab.yml"
NODES = {"node1": "10.0.0.21", "node2": "10.0.0.22", "node3": "10.0.0.23"}
OLD_POOL, OLD_CIDR = "old-pool", IPv4Network("10.244.0.0/16")
NEW_POOL, NEW_CIDR = "new-pool", IPv4Network("10.245.0.0/16")
OVERLAPPING = "aaa-overlapping-pool"      # sorts before the pool it overlaps


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with pytest_plugin.module_lab(request, unique_lab_name("pool-migration"), TOPOLOGY, kernel="host") as lab:
        yield lab


def kubectl(lab, *argv: str, stdin: str | None = None) -> str:
    res = subprocess.run([KUBECTL, *argv], input=stdin, text=True, capture_output=True, timeout=60,
                         env={**os.environ, "KUBECONFIG": str(lab.kubeconfig)})
    assert res.returncode == 0, f"kubectl {' '.join(argv)} exited {res.returncode}: {res.stderr}"
    return res.stdout.strip()


def apply_pool(lab, name: str, cidr: IPv4Network) -> None:
    kubectl(lab, "apply", "-f", "-", stdin=(
        f"apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata:\n  name: {name}\n"
        f"spec:\n  cidr: {cidr}\n  blockSize: 26\n  ipipMode: Never\n  nodeSelector: all()\n"))


def blackholes(lab, node: str) -> set[IPv4Network]:
    return {IPv4Network(r["dst"]) for r in routes(lab, node, "type", "blackhole")}


def installed(lab, node: str) -> dict[IPv4Network, str]:
    """Prefixes bgpd installed on ``node`` -> their next hop."""
    return {IPv4Network(dst): r.get("gateway") for dst, r in bgp_routes(lab, node).items()}


def blocks_of(lab, pool: str) -> dict[str, IPv4Network]:
    """node -> the block it holds of ``pool`` (one each in this test)."""
    items = custom_api(lab).list_cluster_custom_object("calyx.dev", "v1", "ipamblocks")["items"]
    held = {b["spec"]["affinity"].removeprefix("host:"): IPv4Network(b["spec"]["cidr"])
            for b in items if b["spec"].get("pool") == pool and b["spec"].get("affinity")}
    assert sorted(held) == sorted(NODES), f"blocks of {pool}: {held}"
    return held


def assert_blocks_routed(lab, held: dict[str, IPv4Network]) -> None:
    """Each block blackholed on its node and installed via that node on every other node."""
    for node in NODES:
        wait_for(f"node {node}: blackhole for its block {held[node]}",
                 lambda node=node: held[node] in blackholes(lab, node))
        want = {held[o]: NODES[o] for o in NODES if o != node}
        wait_for(f"node {node}: the other nodes' blocks installed {want}",
                 lambda node=node, want=want: all(installed(lab, node).get(b) == nh for b, nh in want.items()))


def wait_ipam_cache_expired(lab, since: float) -> None:
    """The CNI plugin trusts the node's cached blocks for ipam_cache_ttl after it last asked the
    API (docs/cni-ipam.md): a pool disabled meanwhile is seen by the first ADD after that."""
    ttl = float(pods.installed_netconf(lab, "node1").get("ipam_cache_ttl", ipam.CACHE_TTL_S))
    time.sleep(max(0.0, since + ttl + 1.0 - time.monotonic()))


def test_pods_move_to_a_new_pool_while_the_old_ones_keep_working(lab):
    old = [add_pod(lab, node, f"old-{node}") for node in NODES]
    asked_api_at = time.monotonic()
    for node in NODES:
        wait_sessions(lab, node, {a: "node-to-node mesh" for n, a in NODES.items() if n != node})
    assert all(ip_address(p.ip) in OLD_CIDR for p in old), old
    old_blocks = blocks_of(lab, OLD_POOL)
    assert_blocks_routed(lab, old_blocks)
    assert_full_matrix(lab, old, "old pool")

    # The recipe: create the new pool, disable the old one, recreate the pods.
    apply_pool(lab, NEW_POOL, NEW_CIDR)
    kubectl(lab, "patch", "ippool", OLD_POOL, "--type", "merge", "-p", '{"spec":{"disabled":true}}')
    wait_ipam_cache_expired(lab, asked_api_at)
    new = [add_pod(lab, node, f"new-{node}") for node in NODES]
    assert all(ip_address(p.ip) in NEW_CIDR for p in new), new
    new_blocks = blocks_of(lab, NEW_POOL)

    # Old and new pods answer each other across the nodes; both pools' blocks stay routed.
    assert_blocks_routed(lab, old_blocks)
    assert_blocks_routed(lab, new_blocks)
    assert_full_matrix(lab, old + new, "old pool disabled, new pool in use")

    for pod in old:
        pods.delete_pod(lab, POD_NAMESPACE, pod.name)
    assert_full_matrix(lab, new, "old pods deleted")

    # Then the old pool goes, and with it its (now empty) blocks: their routes go everywhere.
    kubectl(lab, "delete", "ippool", OLD_POOL)
    kubectl(lab, "delete", "ipamblocks", *sorted(str(b).replace(".", "-").replace("/", "-")
                                                 for b in old_blocks.values()))
    gone = set(old_blocks.values())
    for node in NODES:
        wait_for(f"node {node}: no route left to the old pool's blocks",
                 lambda node=node: not gone & (blackholes(lab, node) | set(installed(lab, node))))
    assert_blocks_routed(lab, new_blocks)
    assert_full_matrix(lab, new, "old pool deleted")


def conflict_events(lab, name: str) -> list[dict]:
    events = core_api(lab).list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    return [{"reason": e.reason, "message": e.message, "type": e.type, "source": e.source.component}
            for e in events if e.reason == CONFLICT_REASON]


def test_an_overlapping_pool_is_refused_and_the_pool_in_use_keeps_working(lab):
    """Runs on the cluster the test above leaves: the new pool in use, one pod per node in it."""
    new_blocks = blocks_of(lab, NEW_POOL)
    apply_pool(lab, OVERLAPPING, IPv4Network("10.245.0.0/17"))
    message = (f"IPPool '{OVERLAPPING}': spec.cidr: '10.245.0.0/17': overlaps IPPool '{NEW_POOL}' "
               f"({NEW_CIDR}), which was created earlier; the pool is not used for allocation or routing")
    events = wait_for(f"Warning Events {CONFLICT_REASON} on IPPool {OVERLAPPING} from felix and bgpd",
                      lambda: (e := conflict_events(lab, OVERLAPPING))
                      and {x["source"] for x in e} >= {"felix", "bgpd"} and e)
    print(json.dumps(events, indent=1))
    assert all(e["type"] == "Warning" and e["message"] == message for e in events), events

    # the pool in use keeps its routes, its pods and its allocations
    assert_blocks_routed(lab, new_blocks)
    late = add_pod(lab, "node2", "after-overlap")
    assert ip_address(late.ip) in new_blocks["node2"], late
    core = core_api(lab)      # the pods the first test moved to the new pool
    new = [Pod(node, f"new-{node}", core.read_namespaced_pod(f"new-{node}", POD_NAMESPACE).status.pod_ip)
           for node in NODES]
    assert_full_matrix(lab, new + [late], "overlapping pool refused")
