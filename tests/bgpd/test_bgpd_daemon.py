"""The real ``bgpd run`` process in lab nodes (NODENAME, KUBECONFIG, CALYX_RUN_DIR as the lab
sets them) against the lab's kube-apiserver: ``bgpd status`` / ``status -o json`` / ``routes`` over the
control socket, ``/livez`` ``/readyz`` ``/metrics``, peer-set changes through the API without
resetting unchanged sessions, keepOriginalNextHop deciding the next hop the router sees,
adoption of installed routes on restart, ExaBGP restarted after it is killed, a session with
sourceAddress None coming up from the source the kernel picks, and logSeverityScreen changing
bgpd's log level while it runs.

Lab ``labs/daemon``: node1..3 (10.0.0.11-13, pod CIDRs 10.244.N.0/24, pool in Never mode) in a
full mesh, and a BIRD router (10.0.0.254, AS 65001) announcing 198.51.100.0/24 that becomes a
peer once a BGPPeer for it is created. The tests of this module run in order on one lab.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time

from pathlib import Path

import pytest

from calyx.kube import client as kube_client
from calyx.kube import resources
from calyxlab import nodeview
from calyxlab.routemonitor import RouteMonitor
from bgpd_lab import (BGPD, apply, bgp_peer, bgp_routes, bgpd_cli, http_get, mesh_of, metric,
                      module_lab, peers, routes, status, wait_for, wait_sessions)

pytestmark = pytest.mark.lab

NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12", "node3": "10.0.0.13"}
CIDRS = {"node1": "10.244.1.0/24", "node2": "10.244.2.0/24", "node3": "10.244.3.0/24"}
ROUTER, ROUTER_NET = "10.0.0.254", "198.51.100.0/24"
HEALTH_PORT = 9098


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with module_lab(request, unique_lab_name, "daemon", kernel="host") as lab:
        yield lab


def plain_routes(node: str, others=None) -> dict[str, str]:
    return {CIDRS[o]: f"via {NODES[o]} dev eth1" for o in (others or NODES) if o != node}


def test_status_routes_and_kernel_in_the_mesh(lab):
    for node in NODES:
        st = wait_sessions(lab, node, mesh_of(NODES, node))
        assert st["node"] == node and st["router_id"] == NODES[node] and st["as_number"] == 64512
        wait_for(f"{node}: prefix counts", lambda n=node: all(
            (p["prefixes_received"], p["prefixes_accepted"], p["prefixes_advertised"]) == (1, 1, 1)
            and p["end_of_rib_received"] and p["end_of_rib_sent"]
            for p in status(lab, n)["peers"]))
        wait_for(f"{node}: kernel routes", lambda n=node: bgp_routes(lab, n) == plain_routes(n))
    table = bgpd_cli(lab, "node1", "status")
    assert table.returncode == 0, table.stderr
    print(table.stdout)
    header = next(line for line in table.stdout.splitlines() if "PEER ADDRESS" in line)
    assert [c.strip() for c in header.strip("| ").split("|")] == [
        "PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "BFD", "INFO", "RECEIVED", "ACCEPTED", "ADVERTISED"]
    rows = [line for line in table.stdout.splitlines() if line.startswith("| 10.0.0.1")]
    assert len(rows) == 2 and all("node-to-node mesh" in r and "Established" in r for r in rows)

    r = routes(lab, "node1")
    installed = {i["prefix"]: i for i in r["installed"]}
    assert set(installed) == {CIDRS["node2"], CIDRS["node3"]}
    assert installed[CIDRS["node2"]]["mode"] == "direct" and installed[CIDRS["node2"]]["pool"] == "pool"
    assert installed[CIDRS["node2"]]["next_hop"] == NODES["node2"]
    assert all(i["accepted"] for i in r["learned"]) and r["adopted_stale"] == []
    assert r["advertised"] == {NODES["node2"]: [CIDRS["node1"]], NODES["node3"]: [CIDRS["node1"]]}
    text = bgpd_cli(lab, "node1", "routes")
    assert text.returncode == 0 and "Learned" in text.stdout and "Installed (proto bgp)" in text.stdout
    assert f"{CIDRS['node2']} | {NODES['node2']}" in text.stdout


def test_health_endpoints_and_metrics(lab):
    assert http_get(lab, "node1", HEALTH_PORT, "/livez")[0] == 200
    code, body = wait_for("readyz 200", lambda: (r := http_get(lab, "node1", HEALTH_PORT, "/readyz"))[0] == 200 and r)
    code, text = http_get(lab, "node1", HEALTH_PORT, "/metrics")
    assert code == 200
    assert metric(text, "bgpd_sessions", 'state="Established"') == 2.0
    assert metric(text, "bgpd_prefixes_received", f'peer="{NODES["node2"]}"') == 1.0
    assert metric(text, "bgpd_prefixes_advertised", f'peer="{NODES["node3"]}"') == 1.0
    assert metric(text, "bgpd_route_writes_total") == 2.0      # the two routes, written once
    assert metric(text, "bgpd_route_install_errors_total") == 0.0


def test_status_without_a_daemon_is_a_clear_error():
    with tempfile.TemporaryDirectory(prefix="bgpdtest") as run_dir:
        res = subprocess.run([BGPD, "status"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "CALYX_RUN_DIR": run_dir})
    assert res.returncode == 3
    assert "no bgpd is running" in res.stderr and "bgpd.sock" in res.stderr


def test_adding_a_bgppeer_keeps_the_mesh_sessions(lab):
    before = {n: status(lab, n) for n in NODES}
    apply(lab, bgp_peer("office-router", peerIP=ROUTER, asNumber=65001))
    for node in NODES:
        st = wait_sessions(lab, node, {**mesh_of(NODES, node), ROUTER: "global"})
        # Unchanged sessions were not reset: same SINCE, same ExaBGP, no restart.
        for address, p in peers(before[node]).items():
            assert peers(st)[address]["since"] == p["since"], f"{node}: session to {address} was reset"
        assert st["exabgp_pid"] == before[node]["exabgp_pid"] and st["exabgp_restarts"] == 0
        row = wait_for(f"{node}: router prefix counts", lambda n=node: (
            p := peers(status(lab, n))[ROUTER]) and p["prefixes_received"] == 1 and p["prefixes_advertised"] == 4 and p)
        assert row["prefixes_accepted"] == 1 and row["peer_as"] == 65001
        wait_for(f"{node}: route to the router's network",
                 lambda n=node: bgp_routes(lab, n).get(ROUTER_NET) == f"via {ROUTER} dev eth1")
    # The router learned every pod CIDR (from each node: its own block and, over eBGP, the other
    # nodes' blocks it learned in the mesh) and the service CIDR.
    bird = wait_for("BIRD learns the cluster's routes", lambda: (
        out := lab.exec("router", ["birdc", "show", "route"]).stdout) and all(c in out for c in CIDRS.values())
        and "10.96.0.0/12" in out and out)
    print(bird)


def router_next_hop(lab, prefix: str, protocol: str) -> str | None:
    """The next hop of the route the router learned for ``prefix`` over BIRD protocol ``protocol``."""
    out = lab.exec("router", ["birdc", "show", "route", prefix, "protocol", protocol]).stdout
    found = re.search(r"\bvia (\d+\.\d+\.\d+\.\d+)", out)
    return found.group(1) if found else None


def router_next_hops(lab) -> dict[tuple[str, str], str | None]:
    """(session's node, prefix) -> the next hop the router holds, for every pod CIDR and node."""
    return {(node, CIDRS[other]): router_next_hop(lab, CIDRS[other], node) for node in NODES for other in NODES}


def test_keep_original_next_hop_decides_the_next_hop_the_router_sees(lab):
    before = {n: status(lab, n) for n in NODES}
    # By default each node is the next hop of everything it sends the router, its own block
    # and the blocks it learned from the other nodes.
    itself = {(node, CIDRS[other]): NODES[node] for node in NODES for other in NODES}
    wait_for("the router sees each node as next hop", lambda: router_next_hops(lab) == itself)
    apply(lab, bgp_peer("office-router", peerIP=ROUTER, asNumber=65001, keepOriginalNextHop=True))
    original = {(node, CIDRS[other]): NODES[other] for node in NODES for other in NODES}
    got = wait_for("the router sees the originating node as next hop",
                   lambda: (hops := router_next_hops(lab)) == original and hops)
    print(got)
    print(lab.exec("router", ["birdc", "show", "route", CIDRS["node2"], "all"]).stdout)
    apply(lab, bgp_peer("office-router", peerIP=ROUTER, asNumber=65001, keepOriginalNextHop=False))
    wait_for("each node is the next hop again", lambda: router_next_hops(lab) == itself)
    for node in NODES:     # a change of export policy only: no session was reset
        after = status(lab, node)
        assert {a: p["since"] for a, p in peers(after).items()} == \
            {a: p["since"] for a, p in peers(before[node]).items()}, node
        assert after["exabgp_pid"] == before[node]["exabgp_pid"]


def test_mesh_off_with_a_route_reflector_keeps_the_reflector_sessions(lab):
    before = {n: peers(status(lab, n)) for n in NODES}
    rr = [
        {"apiVersion": "v1", "kind": "Node",
         "metadata": {"name": "node1", "labels": {"route-reflector": "true"},
                      "annotations": {"calyx.dev/route-reflector-cluster-id": "244.0.0.1"}}},
        bgp_peer("peer-with-route-reflectors", nodeSelector="all()", peerSelector="route-reflector == 'true'"),
    ]
    apply(lab, *rr)
    wait_for("node2 sees node1 as its reflector", lambda: peers(status(lab, "node2"))[NODES["node1"]]["peer_type"]
             == "route reflector")
    apply(lab, {"apiVersion": "calyx.dev/v1", "kind": "BGPConfiguration", "metadata": {"name": "default"},
                "spec": {"nodeToNodeMeshEnabled": False}})
    st1 = wait_sessions(lab, "node1", {NODES["node2"]: "route reflector client",
                                       NODES["node3"]: "route reflector client", ROUTER: "global"})
    assert st1["cluster_id"] == "244.0.0.1"
    for client in ("node2", "node3"):
        st = wait_sessions(lab, client, {NODES["node1"]: "route reflector", ROUTER: "global"})
        assert st["exabgp_restarts"] == 0
        for address in (NODES["node1"], ROUTER):
            assert peers(st)[address]["since"] == before[client][address]["since"], \
                f"{client}: session to {address} was reset"
    for address in (NODES["node2"], NODES["node3"], ROUTER):
        assert peers(st1)[address]["since"] == before["node1"][address]["since"]
    # Clients reach each other through the reflector, next hop kept.
    for node in NODES:
        want = {**plain_routes(node), ROUTER_NET: f"via {ROUTER} dev eth1"}
        wait_for(f"{node}: routes through the reflector", lambda n=node, w=want: bgp_routes(lab, n) == w)
    learned = {(r["prefix"], r["peer"]) for r in routes(lab, "node2")["learned"]}
    assert (CIDRS["node3"], NODES["node1"]) in learned and all(p != NODES["node3"] for _, p in learned)


def test_restart_adopts_installed_routes_without_a_write(lab, tmp_path):
    node = "node2"
    before = bgp_routes(lab, node)
    assert len(before) == 3
    monitor = RouteMonitor(lab, node, tmp_path / "monitor.log")
    try:
        lab.stop_daemons(node, ["bgpd"])
        wait_for("bgpd stopped", lambda: bgpd_cli(lab, node, "status").returncode == 3, timeout=120)
        assert bgp_routes(lab, node) == before      # a stopped bgpd leaves its routes
        lab.start_daemons(node, ["bgpd"])
        wait_sessions(lab, node, {NODES["node1"]: "route reflector", ROUTER: "global"})
        def relearned() -> bool:
            r = routes(lab, node)
            return len(r["installed"]) == 3 and all(i["route"] for i in r["installed"]) and not r["adopted_stale"]
        wait_for("routes re-learned", relearned)
        time.sleep(2)
        events = monitor.stop()
    finally:
        if lab.alive(monitor.handle):
            lab.kill(monitor.handle)
    assert bgp_routes(lab, node) == before
    assert events == [], f"route events while bgpd restarted: {events}"
    text = http_get(lab, node, HEALTH_PORT, "/metrics")[1]
    assert metric(text, "bgpd_route_writes_total") == 0.0
    assert "adopted_routes" in lab.daemon_log(node, "bgpd")


def test_exabgp_killed_is_restarted_and_everything_reannounced(lab):
    node = "node3"
    st = status(lab, node)
    old_pid = st["exabgp_pid"]
    killed_at = time.time()
    lab.exec(node, ["kill", "-9", str(old_pid)], check=True)
    st = wait_for("ExaBGP restarted", lambda: (s := status(lab, node))["exabgp_restarts"] == 1
                  and s["exabgp_pid"] not in (None, old_pid) and s)
    st = wait_sessions(lab, node, {NODES["node1"]: "route reflector", ROUTER: "global"})
    assert all(p["since"] > killed_at for p in st["peers"])
    wait_for("re-announced to every peer", lambda: all(
        p["prefixes_advertised"] == (4 if p["peer_address"] == ROUTER else 1)
        for p in status(lab, node)["peers"]))
    # The peers saw new sessions and have node3's routes again.
    row = wait_for("node1 receives node3's block again", lambda: (
        p := peers(status(lab, "node1"))[NODES["node3"]]) and p["state"] == "Established"
        and p["prefixes_received"] == 1 and p)
    assert row["since"] > killed_at
    wait_for("node2 routes to node3 again", lambda: bgp_routes(lab, "node2").get(CIDRS["node3"])
             == f"via {NODES['node3']} dev eth1")
    assert "exabgp_exited" in lab.daemon_log(node, "bgpd")


def test_source_address_none_lets_the_kernel_pick_the_session_source(lab):
    """node1 gets a second address, 10.0.1.11/24, and the router 10.0.1.254/24 on the same link;
    the router expects node1 there (BIRD protocol node1_second, neighbor 10.0.1.11). Toward
    10.0.1.254 the kernel picks 10.0.1.11 as source: a session with sourceAddress None comes up
    from it, one bound to the node's address (UseNodeIP, 10.0.0.11) does not."""
    node, second, router_second = "node1", "10.0.1.11", "10.0.1.254"
    lab.exec(node, ["ip", "addr", "add", f"{second}/24", "dev", "eth1"], check=True)
    lab.exec("router", ["ip", "addr", "add", f"{router_second}/24", "dev", "eth1"], check=True)
    try:
        apply(lab, bgp_peer("second-link", peerIP=router_second, asNumber=65001, node=node,
                            sourceAddress="None"))
        st = wait_for("node1's session to the router's second address is up", lambda: (
            p := peers(status(lab, node)).get(router_second)) and p["state"] == "Established" and p)
        assert st["peer_type"] == "node specific"
        bird = lab.exec("router", ["birdc", "show", "protocols", "all", "node1_second"]).stdout
        print(bird)
        assert "Established" in bird and f"Neighbor address: {second}" in bird
        # What node1 originates goes with the session's own address as next hop.
        wait_for("the router has node1's block over that session, next hop 10.0.1.11",
                 lambda: router_next_hop(lab, CIDRS[node], "node1_second") == second)
        config = (Path(nodeview.calyx_run_dir(lab.names, node)) / "bgpd" / "exabgp.conf").read_text()
        block = config.split(f"neighbor {router_second} {{", 1)[1].split("\n}", 1)[0]
        assert "local-address auto;" in block

        # Bound to the node's address the session cannot come up: the router expects 10.0.1.11.
        apply(lab, bgp_peer("second-link", peerIP=router_second, asNumber=65001, node=node,
                            sourceAddress="UseNodeIP"))
        wait_for("the session bound to 10.0.0.11 goes down", lambda: (
            peers(status(lab, node))[router_second]["state"] != "Established"))
        wait_for("the router no longer has it", lambda: "Established" not in lab.exec(
            "router", ["birdc", "show", "protocols", "node1_second"]).stdout)
    finally:
        lab.exec(node, ["ip", "addr", "del", f"{second}/24", "dev", "eth1"])
        lab.exec("router", ["ip", "addr", "del", f"{router_second}/24", "dev", "eth1"])
        api = kube_client.load(str(lab.kubeconfig))
        try:
            resources.delete_object(api, resources.BGPPEERS, "second-link")
        finally:
            api.close()
    wait_for("node1 without the session", lambda: router_second not in peers(status(lab, node)))


def test_log_severity_screen_sets_bgpds_level_without_a_restart(lab):
    node = "node1"
    starts = lab.daemon_log(node, "bgpd").count("event=bgpd_started")
    http_get(lab, node, HEALTH_PORT, "/livez")
    assert DEBUG_LINE not in lab.daemon_log(node, "bgpd")     # info: no debug line so far
    apply(lab, bgp_configuration(logSeverityScreen="Debug"))
    wait_for("bgpd logs at debug", lambda: "now=debug" in lab.daemon_log(node, "bgpd"))
    wait_for("a debug line of bgpd's health server", lambda: (
        http_get(lab, node, HEALTH_PORT, "/livez") and DEBUG_LINE in lab.daemon_log(node, "bgpd")))
    apply(lab, bgp_configuration(logSeverityScreen="Info"))
    wait_for("bgpd logs at info again", lambda: "now=info" in lab.daemon_log(node, "bgpd"))
    http_get(lab, node, HEALTH_PORT, "/livez")
    assert lab.daemon_log(node, "bgpd").count("event=bgpd_started") == starts     # no restart
    log = lab.daemon_log(node, "bgpd")
    after = log[log.rindex("now=info"):]
    assert DEBUG_LINE not in after, after


DEBUG_LINE = 'event="http request"'


def bgp_configuration(**spec) -> dict:
    return {"apiVersion": "calyx.dev/v1", "kind": "BGPConfiguration", "metadata": {"name": "default"},
            "spec": spec}
