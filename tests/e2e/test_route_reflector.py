"""Scenario ``route-reflector``: two in-cluster route reflectors (rr1, rr2, one cluster ID)
and four clients, node-to-node mesh disabled. The pool routes without encapsulation (all
nodes share one L2 segment), so the lab runs on the host kernel.

Expected: each client has exactly two sessions (type ``route reflector``); each reflector has
its four clients (``route reflector client``) and the other reflector (``node specific``, from
the BGPPeer selecting route reflectors); every client learns every other client's block with
the originating node as next hop; ``calyxctl trace`` follows every client pair as the kernels
route it; with rr1's daemons stopped, every pod on a node whose daemons still run stays
reachable; with rr2's stopped too, the clients drop the routes after the reflectors'
graceful-restart time and the trace names the BGP sessions as the cause.
"""
from __future__ import annotations

import time

import pytest

from calyxlab.traffic import POD_NAMESPACE, ContinuousPing
from e2e_support import (MAX_LOST_DURING_MODE_SWITCHES, add_pods, assert_full_matrix,
                         bgpd_status, bgpd_status_table, deployed, node_block, routes,
                         wait_for, wait_install_modes, wait_sessions)
from trace_support import check_every_pair, trace

pytestmark = [pytest.mark.lab]

REFLECTORS = {"rr1": "10.0.0.11", "rr2": "10.0.0.12"}
CLIENTS = {"node1": "10.0.0.13", "node2": "10.0.0.14", "node3": "10.0.0.15", "node4": "10.0.0.16"}
NODES = {**REFLECTORS, **CLIENTS}


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with deployed(request, unique_lab_name, "route-reflector", kernel="host") as lab:
        yield lab


@pytest.fixture(scope="module")
def cluster_pods(lab):
    return add_pods(lab, list(NODES))


@pytest.fixture(scope="module")
def blocks(lab, cluster_pods):
    return {n: wait_for(f"node {n}: its block", lambda n=n: node_block(lab, n)) for n in NODES}


def test_sessions_clients_to_reflectors_only(lab, cluster_pods):
    for node in CLIENTS:
        wait_sessions(lab, node, {a: "route reflector" for a in REFLECTORS.values()})
    for rr, address in REFLECTORS.items():
        expected = {a: "route reflector client" for a in CLIENTS.values()}
        expected.update({a: "node specific" for r, a in REFLECTORS.items() if r != rr})
        status = wait_sessions(lab, rr, expected)
        assert status["cluster_id"] == "244.0.0.1", status
        print(bgpd_status_table(lab, rr))
    print(bgpd_status_table(lab, "node1"))


def test_every_client_learns_every_other_block(lab, blocks):
    for node in CLIENTS:
        wait_install_modes(lab, node, {blocks[o]: (NODES[o], False) for o in NODES if o != node})


def test_ping_matrix(lab, cluster_pods, blocks):
    assert_full_matrix(lab, list(cluster_pods.values()), "route reflectors, plain BGP")


def test_calyxctl_trace_follows_every_client_pair(lab, cluster_pods, blocks):
    check_every_pair(lab, {n: cluster_pods[n] for n in CLIENTS}, "none")


def test_stopping_one_reflector_keeps_pods_reachable(lab, cluster_pods, blocks):
    run = ContinuousPing(lab, cluster_pods["node1"], cluster_pods["node4"]).start()
    try:
        started = time.monotonic()
        lab.stop_daemons("rr1")
        for node in CLIENTS:
            wait_for(f"node {node}: session to rr1 down", lambda n=node: next(
                p for p in bgpd_status(lab, n)["peers"]
                if p["peer_address"] == REFLECTORS["rr1"])["state"] != "Established")
        print(f"rr1 stopped: every client saw its session drop after "
              f"{time.monotonic() - started:.1f} s")
        for node in CLIENTS:
            wait_install_modes(lab, node, {blocks[o]: (NODES[o], False)
                                           for o in NODES if o not in (node, "rr1")})
        time.sleep(1.0)
    finally:
        sent, lost = run.stop()
    print(f"continuous ping node1 pod -> node4 pod while rr1 stops: {sent} sent, {lost} lost")
    assert lost <= MAX_LOST_DURING_MODE_SWITCHES, f"{lost} packets lost when rr1 stopped"
    alive = [p for n, p in cluster_pods.items() if n != "rr1"]
    assert_full_matrix(lab, alive, "with rr1 stopped")


def test_calyxctl_trace_says_the_sessions_are_down(lab, cluster_pods, blocks):
    """Last: rr1 is stopped (above), now rr2 too. node1 keeps what it learned for the reflectors'
    graceful-restart time (maxRestartTime 10s), then has no route to node4's block, and
    ``calyxctl trace`` names the cause: none of node1's BGP sessions is Established."""
    src, dst = cluster_pods["node1"], cluster_pods["node4"]
    lab.stop_daemons("rr2")
    try:
        wait_for("node1: node4's block gone once the reflectors' restart time is over",
                 lambda: blocks["node4"] not in {r["dst"] for r in routes(lab, "node1", "proto", "bgp")})
        rc, body, _ = trace(lab, f"{POD_NAMESPACE}/{src.name}", f"{POD_NAMESPACE}/{dst.name}", text=True)
    finally:
        lab.start_daemons("rr2")
        lab.start_daemons("rr1")
    assert rc == 1 and body["broken_at"] == {"hop": 2, "node": "node1"}, body
    assert [(p["cause"], p["node"]) for p in body["problems"]] == [("session-down", "node1")], body["problems"]
    message = body["problems"][0]["message"]
    assert "none of its BGP sessions is Established" in message and REFLECTORS["rr2"] in message, message
