"""Scenario ``interop``: a three-node Calyx mesh, a BIRD 2 node, a GoBGP node and an FRR node,
all iBGP in AS 64512. BIRD advertises 10.10.1.0/24, GoBGP 10.10.2.0/24, FRR 10.10.3.0/24, each
Calyx node its block. The pool routes without encapsulation, so the lab runs on the host kernel.

Routes flow in every direction: Calyx nodes install the three foreign CIDRs (proto bgp, plain);
BIRD and GoBGP each learn every Calyx block and each other's CIDR; BIRD installs what it
learned, so pods reach the BIRD node's own network and it answers them.

Last, fault cases of the reliability suite: node1's bgpd, its ExaBGP, its felix, all three at
once, and all three on every node at once are SIGKILLed and come back (the kubelet restarts the
containers, bgpd its ExaBGP) under a continuous ping from every pod to every other (one pod per
node), with a route monitor in the kernel of every peer that installs routes (node2,
node3, BIRD, FRR): no ping lost, no peer withdraws a block, no Calyx daemon writes a kernel
route (graceful restart on the BGP side, adoption of the kernel's routes on felix's). Under the
same ping: node1's underlay link flapping, etcd frozen, etcd compacted while the API is down,
and GoBGP announcing pod blocks that are not its own.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from ipaddress import IPv4Network

import pytest

from calyxlab import pods
from calyxlab.lab import LabError
from calyxlab.routemonitor import RouteMonitor
from calyxlab.traffic import POD_NAMESPACE, PingMatrix
from e2e_support import (BGPD, HEALTH_PORTS, KUBECTL, add_pod, add_pods, assert_full_matrix, bgpd_status,
                         bgpd_status_table, calyx_routes, daemon_metric, deployed, node_block, ping_once,
                         relist_counts, routes, wait_for, wait_install_modes, wait_relisted, wait_sessions)
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


# The daemons of a Calyx node (the containers the kubelet restarts, and bgpd's ExaBGP).
KILLED_CASES = {
    "bgpd": ("bgpd", ("node1",)),
    "exabgp": ("exabgp", ("node1",)),
    "felix": ("felix", ("node1",)),
    "all-three": ("felix+bgpd+exabgp", ("node1",)),
    "all-three-every-node": ("felix+bgpd+exabgp", tuple(NODES)),
}


def kill_daemons(lab, node: str, what: str) -> None:
    """SIGKILL ``what`` on ``node`` at once: the felix or bgpd containers (the kubelet restarts
    them), bgpd's ExaBGP (bgpd restarts it), or several of them (``felix+bgpd+exabgp``)."""
    pids = [bgpd_status(lab, node)["exabgp_pid"] if d == "exabgp" else lab.daemon_pid(node, d)
            for d in what.split("+")]
    lab.run_root(["kill", "-9", *map(str, pids)], check=True)


def route_writes(lab) -> dict[tuple[str, str], float]:
    """Kernel route writes so far of felix and bgpd on every Calyx node (a restarted daemon's
    count starts again from 0)."""
    return {(n, d): daemon_metric(lab, n, d, metric) for n in NODES
            for d, metric in (("felix", "felix_netlink_writes_total"), ("bgpd", "bgpd_route_writes_total"))}


def settled(lab) -> tuple[dict[str, list[tuple]], dict[tuple[str, str], float]]:
    """Once every Calyx node's sessions are Established: each node's Calyx routes, and the
    daemons' kernel route writes so far (the state a fault case compares with afterwards)."""
    for node in NODES:
        wait_sessions(lab, node, peers_of(node))
    return {n: calyx_route_set(lab, n) for n in NODES}, route_writes(lab)


def writes_since(lab, before: dict[tuple[str, str], float]) -> int:
    """Kernel route writes of every Calyx daemon since ``before`` (from :func:`route_writes`),
    for daemons that did not restart in between."""
    after = route_writes(lab)
    return int(sum(after[k] - before[k] for k in after))


def felix_ready(lab, node: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{lab.nodes[node].mgmt_ipv4}:{HEALTH_PORTS['felix']}/readyz",
                                    timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.mark.fault
@pytest.mark.parametrize("case_id", list(KILLED_CASES))
def test_killed_daemons_lose_nothing(lab, cluster_pods, blocks, case_id, tmp_path, fault_record):
    """``what`` is SIGKILLed on ``nodes`` under a continuous ping from every pod to every other.
    A restarted felix adopts the kernel's routes; a restarted bgpd's peers keep its
    routes (graceful restart helpers) until it has re-announced them and sent End-of-RIB. No
    packet is lost, no peer withdraws a block, and no Calyx daemon writes a kernel route."""
    what, nodes = KILLED_CASES[case_id]
    bgpd_killed = "bgpd" in what or "exabgp" in what
    for node in nodes:
        wait_sessions(lab, node, peers_of(node))
    wait_for("BIRD and FRR hold every killed node's block", lambda: all(
        bird_routes(lab).get(blocks[n]) == NODES[n] and frr_routes(lab).get(blocks[n]) == NODES[n] for n in nodes))
    frr_before = frr_connections(lab, NODES["node1"])
    wire = lab.spawn("node1", ["tcpdump", "-l", "-nn", "-v", "-i", "eth1", f"tcp port 179 and host {FRR}"],
                     log=str(tmp_path / "bgp-to-frr.txt"), name="tcpdump-bgp")
    monitors = {p: RouteMonitor(lab, p, tmp_path / f"{p}.log") for p in MONITORED_PEERS}
    writes_before = route_writes(lab)
    pids_before = {(n, d): lab.daemon_pid(n, d) for n in NODES for d in ("felix", "bgpd")}
    where = "node1" if nodes == ("node1",) else "every node"
    with fault_record.case(f"SIGKILL {what.replace('+', ' + ')} on {where} (3 nodes, plain BGP)",
                           "0 lost; no block withdrawn; 0 route writes") as case:
        events: dict[str, list[str]] = {}
        try:
            with PingMatrix(lab, list(cluster_pods.values())) as pings:
                killed_at = time.time()
                started = time.monotonic()
                for node in nodes:
                    kill_daemons(lab, node, what)

                def back(node: str) -> bool:
                    if "felix" in what:
                        try:
                            if lab.daemon_pid(node, "felix") == pids_before[(node, "felix")]:
                                return False
                        except LabError:
                            return False     # the kubelet has not restarted the container yet
                        if not felix_ready(lab, node):
                            return False
                    if not bgpd_killed:
                        return True
                    res = lab.exec(node, [BGPD, "status", "-o", "json"], env=lab.node_env(node), timeout=60)
                    if res.returncode != 0:
                        return False      # bgpd not back yet
                    rows = {p["peer_address"]: p for p in json.loads(res.stdout)["peers"]}
                    return set(rows) == set(peers_of(node)) and all(
                        r["state"] == "Established" and r["since"] > killed_at and r["end_of_rib_sent"]
                        for r in rows.values())
                for node in nodes:
                    wait_for(f"{node}: {what} back after SIGKILL (felix ready; sessions re-established, "
                             f"End-of-RIB sent)", lambda node=node: back(node))
                case.recovery_s = time.monotonic() - started
                if bgpd_killed:
                    # the peers saw the sessions end and come back (else nothing was proven)
                    wait_for("node2 has node1's End-of-RIB of the new session", lambda: (
                        r := {p["peer_address"]: p for p in bgpd_status(lab, "node2")["peers"]}[NODES["node1"]])
                        ["since"] > killed_at and r["end_of_rib_received"])
                    assert frr_connections(lab, NODES["node1"]) > frr_before
                time.sleep(3)     # End-of-RIB processed: a peer that would sweep a block does it now
        finally:
            lab.kill(wire)
            for peer, monitor in monitors.items():
                events[peer] = monitor.stop() if lab.alive(monitor.handle) else ["(monitor died)"]
        for peer, seen in events.items():
            print(f"{what} killed on {where}: {peer} route events: {seen}")
        writes_after = route_writes(lab)
        restarted = {key for key, pid in pids_before.items() if lab.daemon_pid(*key) != pid}
        writes = {key: writes_after[key] - (0 if key in restarted else writes_before[key]) for key in writes_after}
        case.packets(pings.lost, pings.sent)
        case.route_writes = int(sum(writes.values()))
        assert restarted == {(n, d) for n in nodes for d in ("felix", "bgpd") if d in what}
        killed_blocks = [blocks[n] for n in nodes]
        withdrawals = {p: [e for e in seen if e.startswith("Deleted") and any(b in e for b in killed_blocks)]
                       for p, seen in events.items()}
        assert withdrawals == {p: [] for p in MONITORED_PEERS}, f"peers withdrew a block of {nodes}"
        assert pings.lost == 0
        assert {k: v for k, v in writes.items() if v} == {}, "Calyx daemons wrote kernel routes"
        for peer, get in (("BIRD", bird_routes), ("FRR", frr_routes)):
            assert all(get(lab).get(blocks[n]) == NODES[n] for n in nodes), f"{peer} lost a block"
        if bgpd_killed:
            # On the wire to FRR, the new session's first End-of-RIB follows node1's block (RFC 4724 4.1).
            sent = bgp_messages((tmp_path / "bgp-to-frr.txt").read_text(), NODES["node1"])
            assert blocks["node1"] in sent and "End-of-RIB" in sent and \
                sent.index(blocks["node1"]) < sent.index("End-of-RIB"), f"node1 -> FRR in the new session: {sent}"


def peers_of(node: str) -> dict[str, str]:
    return {**{NODES[o]: "node-to-node mesh" for o in NODES if o != node},
            BIRD: "global", GOBGP: "global", FRR: "global"}


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


NODE1_SWITCH_PORT = "eth1"     # switch:eth1 faces node1:eth1


def calyx_route_set(lab, node: str) -> list[tuple]:
    """felix's and bgpd's routes in ``node``'s kernel: destination, next hop, device, type, protocol."""
    return sorted((r["dst"], r.get("gateway"), r.get("dev"), r.get("type"), r.get("protocol"))
                  for r in calyx_routes(lab, node))


@pytest.mark.fault
@pytest.mark.parametrize("flaps", [5, pytest.param(20, marks=pytest.mark.fault_full)])
def test_underlay_link_flaps_leave_every_route_as_it_was(lab, cluster_pods, blocks, flaps, fault_record):
    """The switch port facing node1 goes down for a second and up again, ``flaps`` times at
    one flap every three seconds (20 flaps: the fault suite's minute), under a continuous ping
    from every pod to every other. Packets are lost only while the link is down (and only to and
    from node1's pod); afterwards every node's routes
    are exactly as before (none leaked, none missing) and every session is Established."""
    before, writes = settled(lab)
    down_for, period = 1.0, 3.0
    with fault_record.case(f"node1's underlay link flapped {flaps} times in {flaps * period:.0f} s",
                           "loss only while down; routes and sessions as before") as case:
        try:
            with PingMatrix(lab, list(cluster_pods.values())) as pings:
                for _ in range(flaps):
                    lab.exec("switch", ["ip", "link", "set", NODE1_SWITCH_PORT, "down"], check=True)
                    time.sleep(down_for)
                    lab.exec("switch", ["ip", "link", "set", NODE1_SWITCH_PORT, "up"], check=True)
                    time.sleep(period - down_for)
                last_up = time.monotonic()
                for node in NODES:
                    wait_sessions(lab, node, peers_of(node))
                wait_for("every node's routes as before the flaps",
                         lambda: all(calyx_route_set(lab, n) == before[n] for n in NODES))
                assert_full_matrix(lab, list(cluster_pods.values()), f"after {flaps} flaps")
                case.recovery_s = time.monotonic() - last_up
        finally:
            lab.exec("switch", ["ip", "link", "set", NODE1_SWITCH_PORT, "up"])
        case.packets(pings.lost, pings.sent)
        case.route_writes = writes_since(lab, writes)
        # 20 pings a second are lost while the link is down, plus a few while neighbours resolve
        bound = flaps * (down_for / 0.05 + 10)
        case.detail = f"bound {bound:.0f} per direction"
        assert all(c.lost <= bound for c in pings.counts), f"more lost than the link was down: {pings.counts}"


@pytest.mark.fault
def test_stalled_etcd_fails_the_api_and_the_dataplane_stays(lab, cluster_pods, blocks, fault_record):
    """etcd frozen (SIGSTOP) for 25 s: the API answers with errors and timeouts, the daemons'
    watches stall. Nothing is lost or rewritten meanwhile, and once etcd runs again the daemons
    follow the API: a pod made afterwards gets its route and answers."""
    before, writes = settled(lab)
    with fault_record.case("etcd frozen 25 s: the API fails requests (3 nodes, plain BGP)",
                           "0 lost, 0 route writes; daemons follow the API again") as case:
        with PingMatrix(lab, list(cluster_pods.values())) as pings:
            try:
                lab.pause_control_plane("etcd")
                frozen_until = time.monotonic() + 25
                failed = subprocess.run([KUBECTL, "--kubeconfig", str(lab.kubeconfig), "--request-timeout=10s",
                                         "get", "ippools.calyx.dev"], capture_output=True, text=True, timeout=60)
                assert failed.returncode != 0, f"the API answered with etcd frozen: {failed.stdout}"
                while time.monotonic() < frozen_until:
                    assert all(calyx_route_set(lab, n) == before[n] for n in NODES), \
                        "routes changed while etcd was frozen"
                    time.sleep(5)
            finally:
                lab.pause_control_plane("etcd", paused=False)
            thawed = time.monotonic()
            extra = add_pod(lab, "node3", "after-etcd-freeze")
            wait_for(f"node3: the /32 of {extra.ip} (a pod made after etcd ran again)",
                     lambda: any(r["dst"] == extra.ip for r in routes(lab, "node3")))
            wait_for(f"node1's pod reaches {extra.ip}", lambda: ping_once(lab, cluster_pods["node1"], extra.ip))
            case.recovery_s = time.monotonic() - thawed
        case.packets(pings.lost, pings.sent)
        case.detail = "kubectl timed out while etcd was frozen" if "Timeout" in failed.stderr else \
            f"kubectl while etcd was frozen: {(failed.stderr.strip().splitlines() or ['?'])[-1][:60]}"
        assert pings.lost == 0
        # no write but, at most, the new pod's /32 on node3 (when the CNI plugin has not made it)
        after = route_writes(lab)
        grown = {key: after[key] - writes[key] for key in after if after[key] != writes[key]}
        case.route_writes = int(sum(grown.values()))
        pods.delete_pod(lab, POD_NAMESPACE, extra.name, extra.node)
        assert set(grown) <= {("node3", "felix")} and case.route_writes <= 1, f"route writes: {grown}"


def etcd_url(lab) -> str:
    """The client URL of the lab's etcd (from its recorded command line)."""
    argv = next(e["argv"] for e in lab.state.data["control_plane"] if e["name"] == "etcd")
    return argv[argv.index("--listen-client-urls") + 1]


def etcd_compact(lab) -> int:
    """Compact the lab's etcd to its latest revision (through etcd's JSON gateway), as the
    API server's periodic compaction does; the revision."""
    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{etcd_url(lab)}{path}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())
    revision = int(post("/v3/kv/range", {"key": "AA==", "count_only": True})["header"]["revision"])
    post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


@pytest.mark.fault
def test_compacted_etcd_makes_the_daemons_relist_and_rewrite_nothing(lab, cluster_pods, blocks, fault_record):
    """The API server stopped, etcd compacted to its latest revision, the API started again:
    the revisions the daemons watched from are gone from etcd, so they relist (the 410 Gone
    answer itself is tested against the API in tests/kube/test_reflector.py). Nothing is lost or
    rewritten, and the daemons follow a change afterwards."""
    before, writes = settled(lab)
    relists = relist_counts(lab, NODES)
    with fault_record.case("etcd compacted while the API was down (3 nodes, plain BGP)",
                           "relist; 0 lost, 0 route writes") as case:
        with PingMatrix(lab, list(cluster_pods.values())) as pings:
            try:
                lab.stop_api_server()
                revision = etcd_compact(lab)
            finally:
                lab.start_api_server()
            back = time.monotonic()
            wait_relisted(lab, relists, "after the compaction")
            case.recovery_s = time.monotonic() - back
        case.packets(pings.lost, pings.sent)
        case.route_writes = writes_since(lab, writes)
        case.detail = f"compacted at revision {revision}"
        assert pings.lost == 0
        assert {n: calyx_route_set(lab, n) for n in NODES} == before
        assert case.route_writes == 0
    extra = add_pod(lab, "node2", "after-compaction")
    wait_for(f"node1's pod reaches {extra.ip}", lambda: ping_once(lab, cluster_pods["node1"], extra.ip))
    pods.delete_pod(lab, POD_NAMESPACE, extra.name, extra.node)


def learned_routes(lab, node: str) -> list[dict]:
    """What ``node``'s bgpd learned, each with whether its import policy accepted it and why not."""
    res = lab.exec(node, [BGPD, "routes", "-o", "json"], env=lab.node_env(node), check=True, timeout=60)
    return json.loads(res.stdout)["learned"]


@pytest.mark.fault
def test_a_peer_announcing_pod_blocks_diverts_no_packet(lab, cluster_pods, blocks, fault_record):
    """GoBGP, an iBGP peer outside the cluster, announces node2's block and a /28 inside node3's
    with itself as the next hop (a hijack, or a fat-fingered router). Every Calyx node refuses
    both (prefixes inside an IPPool from a next hop that is not a cluster node), so no packet
    between pods goes astray and no kernel route changes; the announcements are then withdrawn."""
    hijacks = [blocks["node2"], str(next(IPv4Network(blocks["node3"]).subnets(new_prefix=28)))]
    before, writes = settled(lab)
    with fault_record.case("an iBGP peer announces a node's pod block and a /28 inside another's",
                           "refused on every node; 0 lost, 0 route writes") as case:
        with PingMatrix(lab, list(cluster_pods.values())) as pings:
            started = time.monotonic()
            try:
                for prefix in hijacks:
                    lab.exec("gobgp", ["gobgp", "global", "rib", "add", "-a", "ipv4", prefix], check=True)

                def refused_everywhere() -> bool:
                    for node in NODES:
                        seen = {r["prefix"]: r for r in learned_routes(lab, node) if r["peer"] == GOBGP}
                        if any(p not in seen or seen[p]["accepted"] for p in hijacks):
                            return False
                    return True
                wait_for("every Calyx node to have received and refused GoBGP's hijacks", refused_everywhere)
                case.recovery_s = time.monotonic() - started
                case.detail = "refused: " + next(r["reason"] for r in learned_routes(lab, "node1")
                                                  if r["prefix"] == hijacks[0] and r["peer"] == GOBGP)
                time.sleep(3)     # a node that would act on them has done it by now
                assert {n: calyx_route_set(lab, n) for n in NODES} == before, "a hijack changed a kernel route"
            finally:
                for prefix in hijacks:
                    lab.exec("gobgp", ["gobgp", "global", "rib", "del", "-a", "ipv4", prefix])
        case.packets(pings.lost, pings.sent)
        case.route_writes = writes_since(lab, writes)
        assert pings.lost == 0
        assert case.route_writes == 0
