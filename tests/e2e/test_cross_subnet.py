"""Scenario ``cross-subnet``: four nodes in two subnets joined by an FRR router, pool in
CrossSubnet mode. Runs in the UML kernel (the pool uses IPIP across the router).

Expected: routes to a block in the same subnet go ``via NH dev eth1`` (plain), to a block
behind the router ``via NH dev tunl0 onlink`` (IPIP); on the wire, node1 -> node2 carries pod
addresses, node1 -> node3 carries IP protocol 4 between the two nodes' addresses.
"""
from __future__ import annotations

import pytest

from e2e_support import (add_pods, assert_full_matrix, bgpd_status_table, capture_icmp,
                         deployed, node_block, wait_for, wait_install_modes, wait_sessions)
from trace_support import check_every_pair

pytestmark = [pytest.mark.lab, pytest.mark.uml]

NODES = {"node1": "10.0.1.11", "node2": "10.0.1.12", "node3": "10.0.2.13", "node4": "10.0.2.14"}


def subnet(node: str) -> str:
    return NODES[node].rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with deployed(request, unique_lab_name, "cross-subnet", kernel="uml") as lab:
        yield lab


@pytest.fixture(scope="module")
def cluster_pods(lab):
    return add_pods(lab, list(NODES))


@pytest.fixture(scope="module")
def blocks(lab, cluster_pods):
    return {n: wait_for(f"node {n}: its block", lambda n=n: node_block(lab, n)) for n in NODES}


def test_mesh_sessions_across_the_router(lab, cluster_pods):
    for node in NODES:
        wait_sessions(lab, node, {a: "node-to-node mesh" for n, a in NODES.items() if n != node})
    print(bgpd_status_table(lab, "node1"))


def test_routes_are_plain_within_a_subnet_and_ipip_across(lab, blocks):
    for node in NODES:
        wait_install_modes(lab, node, {blocks[o]: (NODES[o], subnet(o) != subnet(node))
                                       for o in NODES if o != node})


def test_ping_matrix(lab, cluster_pods, blocks):
    assert_full_matrix(lab, list(cluster_pods.values()), "CrossSubnet")


def test_calyxctl_trace_follows_every_pair(lab, cluster_pods, blocks):
    """``calyxctl trace`` from the lab's host: every pod pair complete, plain within a subnet and
    IPIP across the router, each hop's route the one that node's kernel matches."""
    check_every_pair(lab, cluster_pods, {(a, b): "ipip" if subnet(a) != subnet(b) else "none"
                                         for a in NODES for b in NODES}, node=None)


def test_same_subnet_traffic_is_plain_on_the_wire(lab, cluster_pods):
    # switch-a:eth2 faces node2
    packets = capture_icmp(lab, "switch-a", "eth2", cluster_pods["node1"], cluster_pods["node2"])
    print(f"switch-a:eth2 (node1 <-> node2): {packets}")
    assert all(p.outer_src is None for p in packets), \
        f"same subnet: expected plain pod addresses on the wire, got {packets}"


def test_cross_subnet_traffic_is_ipip_on_the_wire(lab, cluster_pods):
    # switch-a:eth3 faces the router: node1 -> node3 crosses it
    packets = capture_icmp(lab, "switch-a", "eth3", cluster_pods["node1"], cluster_pods["node3"])
    print(f"switch-a:eth3 (node1 <-> node3 through the router): {packets}")
    assert all({p.outer_src, p.outer_dst} == {NODES["node1"], NODES["node3"]}
               for p in packets), \
        f"across subnets: expected IP protocol 4 between node1 and node3, got {packets}"
