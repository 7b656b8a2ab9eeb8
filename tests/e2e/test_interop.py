"""Scenario ``interop``: a three-node Calyx mesh, a BIRD 2 node and a GoBGP node, all iBGP in
AS 64512. BIRD advertises 10.10.1.0/24, GoBGP 10.10.2.0/24, each Calyx node its block.
The pool routes without encapsulation, so the lab runs on the host kernel.

Routes flow in every direction: Calyx nodes install both foreign CIDRs (proto bgp, plain);
BIRD and GoBGP each learn every Calyx block and each other's CIDR; BIRD installs what it
learned, so pods reach the BIRD node's own network and it answers them.
"""
from __future__ import annotations

import json

import pytest

from e2e_support import (add_pods, assert_full_matrix, bgpd_status_table, deployed, node_block,
                         ping_once, routes, wait_for, wait_install_modes, wait_sessions)

pytestmark = [pytest.mark.lab]

NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12", "node3": "10.0.0.13"}
BIRD, GOBGP = "10.0.0.14", "10.0.0.15"
BIRD_NET, GOBGP_NET = "10.10.1.0/24", "10.10.2.0/24"


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with deployed(request, unique_lab_name, "interop", kernel="host") as lab:
        yield lab


@pytest.fixture(scope="module")
def cluster_pods(lab):
    return add_pods(lab, list(NODES))


@pytest.fixture(scope="module")
def blocks(lab, cluster_pods):
    return {n: wait_for(f"node {n}: its block", lambda n=n: node_block(lab, n)) for n in NODES}


def test_calyx_sessions_with_mesh_bird_and_gobgp(lab, cluster_pods):
    for node in NODES:
        expected = {a: "node-to-node mesh" for n, a in NODES.items() if n != node}
        expected.update({BIRD: "global", GOBGP: "global"})
        wait_sessions(lab, node, expected)
    print(bgpd_status_table(lab, "node1"))


def test_calyx_nodes_install_the_bird_and_gobgp_cidrs(lab, blocks):
    for node in NODES:
        expected = {blocks[o]: (NODES[o], False) for o in NODES if o != node}
        expected.update({BIRD_NET: (BIRD, False), GOBGP_NET: (GOBGP, False)})
        wait_install_modes(lab, node, expected)


def bird_routes(lab) -> dict[str, str]:
    """BIRD's BGP routes in its kernel table: destination -> gateway."""
    return {r["dst"]: r.get("gateway") for r in routes(lab, "bird", "proto", "bird")}


def gobgp_rib(lab) -> dict[str, set[str]]:
    res = lab.exec("gobgp", ["gobgp", "global", "rib", "-a", "ipv4", "-j"], check=True)
    table = json.loads(res.stdout or "{}")
    return {prefix: {p["nexthop"] if "nexthop" in p else
                     next((a["nexthop"] for a in p.get("attrs", []) if "nexthop" in a), "")
                     for p in paths} for prefix, paths in table.items()}


def test_bird_learns_every_block_and_the_gobgp_cidr(lab, blocks):
    want = {blocks[n]: NODES[n] for n in NODES}
    want[GOBGP_NET] = GOBGP
    have = wait_for(f"BIRD's kernel table to hold {want}",
                    lambda: (r := bird_routes(lab)) and all(r.get(k) == v for k, v in want.items())
                    and r)
    print(f"bird: {have}")
    print(lab.exec("bird", ["birdc", "show", "protocols"]).stdout)


def test_gobgp_learns_every_block_and_the_bird_cidr(lab, blocks):
    want = {blocks[n]: NODES[n] for n in NODES}
    want[BIRD_NET] = BIRD
    have = wait_for(f"GoBGP's RIB to hold {want}",
                    lambda: (r := gobgp_rib(lab)) and all(v in r.get(k, ()) for k, v in want.items())
                    and r)
    print(f"gobgp: {have}")


def test_pods_reach_each_other_and_the_bird_network(lab, cluster_pods, blocks):
    assert_full_matrix(lab, list(cluster_pods.values()), "interop mesh, plain BGP")
    for pod in cluster_pods.values():
        assert wait_for(f"{pod.name} -> 10.10.1.1 (BIRD's network)",
                        lambda p=pod: ping_once(lab, p, "10.10.1.1"), timeout=60)
