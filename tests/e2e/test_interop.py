"""Scenario ``interop``: a three-node Calyx mesh, a BIRD 2 node, a GoBGP node and an FRR node,
all iBGP in AS 64512. BIRD advertises 10.10.1.0/24, GoBGP 10.10.2.0/24, FRR 10.10.3.0/24, each
Calyx node its block. The pool routes without encapsulation, so the lab runs on the host kernel.

Routes flow in every direction: Calyx nodes install the three foreign CIDRs (proto bgp, plain);
BIRD and GoBGP each learn every Calyx block and each other's CIDR; BIRD installs what it
learned, so pods reach the BIRD node's own network and it answers them.

Last, graceful restart: node1's bgpd, its ExaBGP, and all its daemons are each SIGKILLed and
come back (the kubelet restarts the containers) under a continuous ping in both directions
between a pod on node1 and a pod on node2, with a route monitor in the kernel of every peer
that installs routes (node2, node3, BIRD, FRR): no ping lost, no peer withdraws node1's block.
"""
from __future__ import annotations

import json
import re
import time

import pytest

from calyxlab.routemonitor import RouteMonitor
from calyxlab.traffic import POD_NAMESPACE, ContinuousPing
from e2e_support import (BGPD, add_pods, assert_full_matrix, bgpd_status, bgpd_status_table, deployed, node_block,
                         ping_once, routes, wait_for, wait_install_modes, wait_sessions)
from trace_support import check_every_pair, fibmatch, route_text, trace

pytestmark = [pytest.mark.lab]

NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12", "node3": "10.0.0.13"}
BIRD, GOBGP, FRR = "10.0.0.14", "10.0.0.15", "10.0.0.16"
BIRD_NET, GOBGP_NET, FRR_NET = "10.10.1.0/24", "10.10.2.0/24", "10.10.3.0/24"


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


def test_calyx_sessions_with_mesh_bird_gobgp_and_frr(lab, cluster_pods):
    for node in NODES:
        expected = {a: "node-to-node mesh" for n, a in NODES.items() if n != node}
        expected.update({BIRD: "global", GOBGP: "global", FRR: "global"})
        wait_sessions(lab, node, expected)
    print(bgpd_status_table(lab, "node1"))


def test_calyx_nodes_install_the_bird_gobgp_and_frr_cidrs(lab, blocks):
    for node in NODES:
        expected = {blocks[o]: (NODES[o], False) for o in NODES if o != node}
        expected.update({BIRD_NET: (BIRD, False), GOBGP_NET: (GOBGP, False), FRR_NET: (FRR, False)})
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


def test_calyxctl_trace_follows_every_pair_and_the_way_to_birds_network(lab, cluster_pods, blocks):
    """``calyxctl trace`` on node1: every pod pair complete, plain routing, each hop's route the
    one that node's kernel matches; to BIRD's network (outside every pool) the path leaves by
    the route bgpd installed from BIRD."""
    check_every_pair(lab, cluster_pods, "none")
    rc, body, _ = trace(lab, f"{POD_NAMESPACE}/{cluster_pods['node1'].name}", "10.10.1.1", text=True)
    assert rc == 0 and body["complete"], body["problems"]
    assert route_text(body["hops"][1]) == fibmatch(lab, "node1", "10.10.1.1")
    assert body["hops"][1]["route"]["owner"] == "bgpd", body["hops"][1]


def frr_routes(lab) -> dict[str, str]:
    """FRR's BGP routes in its kernel table: destination -> gateway."""
    return {r["dst"]: r.get("gateway") for r in routes(lab, "frr", "proto", "bgp")}


def test_frr_installs_every_block(lab, blocks):
    want = {blocks[n]: NODES[n] for n in NODES}
    wait_for(f"FRR's kernel table to hold {want}",
             lambda: (r := frr_routes(lab)) and all(r.get(k) == v for k, v in want.items()))


def frr_connections(lab, address: str) -> int:
    """How many times FRR's session with ``address`` has been established."""
    res = lab.exec("frr", ["vtysh", "-c", f"show bgp neighbors {address} json"], check=True)
    return json.loads(res.stdout)[address]["connectionsEstablished"]


MONITORED_PEERS = ("node2", "node3", "bird", "frr")   # the peers that install what they learn


def restart(lab, node: str, what: str) -> None:
    """SIGKILL ``what`` on ``node``: the bgpd or felix containers (the kubelet restarts them),
    or bgpd's ExaBGP (bgpd restarts it)."""
    if what == "exabgp":
        pids = [bgpd_status(lab, node)["exabgp_pid"]]
    else:
        pids = [lab.daemon_pid(node, d) for d in what.split("+")]
    lab.run_root(["kill", "-9", *map(str, pids)], check=True)


@pytest.mark.parametrize("what", ["bgpd", "exabgp", "felix+bgpd"])
def test_graceful_restart_loses_nothing(lab, cluster_pods, blocks, what, tmp_path):
    """node1's ``what`` is SIGKILLed under a ping in both directions: its peers keep its block
    (graceful restart helpers) until the restarted bgpd has re-announced it and sent End-of-RIB."""
    node, block = "node1", blocks["node1"]
    peers_of_node = {**{NODES[o]: "node-to-node mesh" for o in NODES if o != node},
                     BIRD: "global", GOBGP: "global", FRR: "global"}
    wait_sessions(lab, node, peers_of_node)
    wait_for("BIRD and FRR hold node1's block", lambda: bird_routes(lab).get(block) == NODES[node]
             and frr_routes(lab).get(block) == NODES[node])
    frr_before = frr_connections(lab, NODES[node])
    wire = lab.spawn(node, ["tcpdump", "-l", "-nn", "-v", "-i", "eth1", f"tcp port 179 and host {FRR}"],
                     log=str(tmp_path / "bgp-to-frr.txt"), name="tcpdump-bgp")
    monitors = {p: RouteMonitor(lab, p, tmp_path / f"{p}.log") for p in MONITORED_PEERS}
    pings = [ContinuousPing(lab, cluster_pods["node1"], cluster_pods["node2"]).start(),
             ContinuousPing(lab, cluster_pods["node2"], cluster_pods["node1"]).start()]
    events: dict[str, list[str]] = {}
    try:
        killed_at = time.time()
        restart(lab, node, what)

        def back() -> bool:
            res = lab.exec(node, [BGPD, "status", "-o", "json"], env=lab.node_env(node), timeout=60)
            if res.returncode != 0:
                return False      # bgpd not back yet
            rows = {p["peer_address"]: p for p in json.loads(res.stdout)["peers"]}
            return set(rows) == set(peers_of_node) and all(
                r["state"] == "Established" and r["since"] > killed_at and r["end_of_rib_sent"]
                for r in rows.values())
        wait_for(f"node1's sessions re-established after {what} was killed, End-of-RIB sent", back)
        # the peers saw the sessions end and come back (else nothing was proven)
        wait_for("node2 has node1's End-of-RIB of the new session", lambda: (
            r := {p["peer_address"]: p for p in bgpd_status(lab, "node2")["peers"]}[NODES[node]])
            ["since"] > killed_at and r["end_of_rib_received"])
        assert frr_connections(lab, NODES[node]) > frr_before
        time.sleep(3)     # End-of-RIB processed: a peer that would sweep our block does it now
    finally:
        results = [(p.src.name, p.dst.name, *p.stop()) for p in pings]
        lab.kill(wire)
        for peer, monitor in monitors.items():
            events[peer] = monitor.stop() if lab.alive(monitor.handle) else ["(monitor died)"]
    for src, dst, sent, lost in results:
        print(f"{what} killed on node1: continuous ping {src} -> {dst} every 50 ms: {sent} sent, {lost} lost")
    for peer, seen in events.items():
        print(f"{what} killed on node1: {peer} route events: {seen}")
    withdrawals = {p: [e for e in seen if block in e and e.startswith("Deleted")] for p, seen in events.items()}
    assert withdrawals == {p: [] for p in MONITORED_PEERS}, f"peers withdrew node1's block {block}"
    assert [lost for *_, lost in results] == [0, 0]
    for peer, get in (("BIRD", bird_routes), ("FRR", frr_routes)):
        assert get(lab).get(block) == NODES[node], f"{peer} lost node1's block"
    # On the wire to FRR, the new session's first End-of-RIB follows node1's block (RFC 4724 4.1).
    sent = bgp_messages((tmp_path / "bgp-to-frr.txt").read_text(), NODES[node])
    assert block in sent and "End-of-RIB" in sent and sent.index(block) < sent.index("End-of-RIB"), \
        f"node1 -> FRR in the new session: {sent}"


def bgp_messages(tcpdump_text: str, sender: str) -> list[str]:
    """From ``tcpdump -v`` of BGP: what ``sender`` sent in the last TCP connection it sent BGP
    messages on: the prefixes it announced and its End-of-RIB markers, in order."""
    by_connection: dict[str, list[str]] = {}
    connection = None
    for line in tcpdump_text.splitlines():
        if m := re.match(r"\s+(\S+) > (\S+):", line):
            connection = m.group(1) if m.group(1).startswith(sender + ".") else None
        elif connection and "End-of-Rib" in line:
            by_connection.setdefault(connection, []).append("End-of-RIB")
        elif connection and (m := re.fullmatch(r"\s+(\d+\.\d+\.\d+\.\d+/\d+)", line)):
            by_connection.setdefault(connection, []).append(m.group(1))
    return list(by_connection.values())[-1] if by_connection else []
