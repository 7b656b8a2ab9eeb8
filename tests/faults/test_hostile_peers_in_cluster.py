"""Hostile and broken BGP peers against a running cluster, the reliability suite's cases measured
the way the workloads feel them: every pod pinging every other pod (one on each of three nodes,
:mod:`faultcluster`) while a raw BGP client (:mod:`rawbgp`, hand-written messages from a
namespace of its own on the lab's switch, made a peer of every node by a BGPPeer) hijacks pod
blocks, loops AS paths, sends malformed UPDATEs and random bytes, never answers OPEN, resets its
session again and again, or floods 100,000 prefixes.

Each case asserts no ping lost, the pods' routes and blocks on every node exactly as before, the
router's sessions untouched, and what bgpd promises for that fault; the same faults against a
single Speaker, with its memory, descriptors and threads followed more closely, are
``tests/bgpd/test_faults_hostile_peers.py``.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from contextlib import contextmanager
from ipaddress import IPv4Network
from pathlib import Path as FilePath
from typing import Iterator

import pytest

import faultcluster
from calyxlab.pytest_plugin import wait_for
from calyxlab.traffic import PingMatrix
from faultcluster import LAB_CIDRS, NODES, ROUTER, ROUTER_NET, Cluster, custom

sys.path.insert(0, str(FilePath(__file__).resolve().parents[1] / "bgpd"))
from bgpd_lab import bgpd_cli, peers, status  # noqa: E402
from rawbgp import (END_OF_RIB, SilentListener, Usage, attribute_length_overrun,  # noqa: E402
                    bgp_update, bgp_withdraw, connected, nlri, notifications, raw_session, reset_storm,
                    total_attribute_length_overrun, usage_detail)

pytestmark = [pytest.mark.lab, pytest.mark.fault]

OUR_AS = 64512
HOSTILE, HOSTILE_AS = "10.0.0.253", 65002       # in a namespace of its own on the lab's switch


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, unique_lab_name) -> Iterator[Cluster]:
    for c in faultcluster.deploy(request, unique_lab_name("fhostile")):
        # The hostile peer's own namespace on the lab's switch (the lab's prefix: destroyed with it).
        ns = hostile_ns(c)
        c.lab.run_root(["ip", "netns", "add", ns], check=True)
        c.lab.exec("switch", ["ip", "link", "add", "eth9", "type", "veth", "peer", "name", "eth1", "netns", ns],
                   check=True)
        c.lab.exec("switch", ["ip", "link", "set", "eth9", "master", "br0", "up"], check=True)
        for argv in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{HOSTILE}/24", "dev", "eth1"],
                     ["ip", "link", "set", "eth1", "up"]):
            c.lab.run_root(["ip", "netns", "exec", ns, *argv], check=True)
        c.must(c.apply(custom("BGPPeer", "hostile", {"peerIP": HOSTILE, "asNumber": HOSTILE_AS})))
        wait_for("every node configured with the hostile peer",
                 lambda: all(HOSTILE in peers(status(c.lab, n)) for n in NODES), timeout=60)
        yield c


def pod_routes(cluster: Cluster) -> dict[str, frozenset[str]]:
    """felix's and bgpd's routes of the pods, the blocks and the router's network, every node."""
    return {node: frozenset(r for r in routes
                            if any(f"dst={p}" in r for p in ("10.244.", ROUTER_NET.split("/")[0])))
            for node, routes in cluster.measure().programmed.items()}


def destinations(cluster: Cluster, node: str = "node1") -> set[str]:
    """The destinations of felix's and bgpd's routes on ``node``."""
    return {part.removeprefix("dst=") for route in cluster.measure().programmed[node] for part in route.split()
            if part.startswith("dst=")}


def router_sessions(cluster: Cluster) -> dict[str, tuple[str, float]]:
    return {node: (p["state"], p["since"]) for node in NODES for a, p in peers(status(cluster.lab, node)).items()
            if a == ROUTER}


def learned(cluster: Cluster, node: str) -> dict[str, dict]:
    """What ``node``'s bgpd learned from the hostile peer, by prefix."""
    res = bgpd_cli(cluster.lab, node, "routes", "-o", "json")
    assert res.returncode == 0, res.stderr
    return {r["prefix"]: r for r in json.loads(res.stdout)["learned"] if r["peer"] == HOSTILE}


def hostile_row(cluster: Cluster, node: str) -> dict:
    return peers(status(cluster.lab, node))[HOSTILE]


def hostile_ns(cluster: Cluster) -> str:
    return cluster.lab.names.namespace("hostile")


def session(cluster: Cluster, node: str, restart_time: int | None = None):
    return raw_session(hostile_ns(cluster), HOSTILE, NODES[node], asn=HOSTILE_AS, restart_time=restart_time)


def bgpd_usage(cluster: Cluster, node: str) -> dict[str, Usage]:
    return {"bgpd": Usage.of(cluster.lab.daemon_pid(node, "bgpd")),
            "exabgp": Usage.of(status(cluster.lab, node)["exabgp_pid"])}


@contextmanager
def measured(cluster: Cluster, case) -> Iterator[PingMatrix]:
    """The case under the ping matrix: afterwards no ping lost, the pods' routes and the router's
    sessions as before, and the route writes of the case recorded."""
    before_routes, before_sessions = pod_routes(cluster), router_sessions(cluster)
    writes = cluster.measure().route_writes
    with PingMatrix(cluster.lab, cluster.pods) as pings:
        yield pings
        time.sleep(1.0)     # what the fault made the nodes do has landed
    case.packets(pings.lost, pings.sent)
    case.route_writes = cluster.measure().route_writes - writes
    assert pings.lost == 0, f"pods lost {pings.lost} of {pings.sent} pings"
    assert pod_routes(cluster) == before_routes, "a pod, block or router route changed"
    assert router_sessions(cluster) == before_sessions, "the router's sessions were disturbed"


def test_a_peer_announcing_pod_blocks_to_every_node_diverts_no_packet(cluster: Cluster, fault_record) -> None:
    """The hostile peer announces node2's block, a /28 inside node3's and a /25 of node1's to
    every node, itself the next hop: refused on every node (inside an IPPool, from a next hop
    that is not a cluster node), nothing installed, nothing re-advertised."""
    hijacks = [LAB_CIDRS["node2"], str(next(IPv4Network(LAB_CIDRS["node3"]).subnets(new_prefix=28))),
               str(next(IPv4Network(LAB_CIDRS["node1"]).subnets(new_prefix=25)))]
    sessions = []
    with fault_record.case("external peer announces pod blocks and more specifics of them to every node "
                           "(3 nodes, pods pinging)", "refused on every node; 0 lost, 0 route writes") as case:
        try:
            with measured(cluster, case):
                started = time.monotonic()
                for node in NODES:
                    sessions.append(peer := session(cluster, node))
                    peer.send(bgp_update(hijacks, HOSTILE, (HOSTILE_AS,)) + END_OF_RIB)
                wait_for("every node to have received and refused the hijacks", lambda: all(
                    (seen := learned(cluster, n)).keys() >= set(hijacks) and not any(seen[p]["accepted"] for p in hijacks)
                    for n in NODES), timeout=60)
                case.recovery_s = time.monotonic() - started
                case.detail = "refused: " + learned(cluster, "node1")[hijacks[0]]["reason"]
                time.sleep(2.0)     # a node that would act on them has done it by now
        finally:
            for peer in sessions:
                peer.close()
        assert case.route_writes == 0


def test_as_path_loops_are_dropped(cluster: Cluster, fault_record) -> None:
    """Paths whose AS_PATH holds the cluster's AS are dropped; the peer's clean route is used."""
    loop, clean = ["172.28.1.0/24", "172.28.2.0/24"], "172.28.3.0/24"
    peer = None
    with fault_record.case("external peer sends AS paths containing the cluster's AS (3 nodes, pods pinging)",
                           "looped paths dropped; the clean route installed; 0 lost") as case:
        try:
            with measured(cluster, case):
                peer = session(cluster, "node1")
                peer.send(bgp_update(loop, HOSTILE, (HOSTILE_AS, 65100, OUR_AS, 65200))
                          + bgp_update([clean], HOSTILE, (HOSTILE_AS, 65100)) + END_OF_RIB)
                seen = wait_for("the loops and the clean route received",
                                lambda: (got := learned(cluster, "node1")).keys() >= {*loop, clean} and got, timeout=60)
                assert all(seen[p]["reason"] == f"AS_PATH contains our AS {OUR_AS}" for p in loop), seen
                wait_for("the clean route installed on node1", lambda: clean in destinations(cluster), timeout=30)
                programmed = cluster.measure().programmed
                assert not [r for rs in programmed.values() for r in rs if any(f"dst={p}" in r for p in loop)]
        finally:
            if peer is not None:
                peer.close()
        case.detail = f"{len(loop)} looped prefixes refused, session kept, the clean one installed"
    wait_for("the clean route withdrawn with the session", lambda: not any(
        f"dst={clean}" in r for rs in cluster.measure().programmed.values() for r in rs), timeout=60)


MALFORMED = {
    "attribute-length-overrun": "UPDATE whose ORIGIN length runs past the path attributes",
    "total-attribute-length-overrun": "UPDATE whose Total Path Attribute Length runs past the message",
    "random-bytes": "4 KiB of random bytes on port 179",
}


@pytest.mark.parametrize("variant", sorted(MALFORMED))
def test_malformed_messages_harm_only_that_connection(cluster: Cluster, fault_record, variant: str) -> None:
    """A malformed UPDATE on an Established session (RFC 7606: treat-as-withdraw, or NOTIFICATION
    3/1 when the attribute section cannot be parsed), or random bytes instead of BGP: only that
    connection is affected."""
    mine = "172.26.1.0/24"
    exabgp_pid = status(cluster.lab, "node1")["exabgp_pid"]
    peer = None
    with fault_record.case(f"{MALFORMED[variant]} (node1; 3 nodes, pods pinging)",
                           "only that connection affected; bgpd, ExaBGP, other sessions and pods unaffected; "
                           "0 lost") as case:
        try:
            with measured(cluster, case):
                if variant == "random-bytes":
                    peer = wait_for("a TCP connection to node1's port 179",
                                    lambda: connected(hostile_ns(cluster), HOSTILE, NODES["node1"]), timeout=60)
                    peer.send(b"\x00" + os.urandom(4095))      # never a valid marker
                    answer = peer.read_until_closed()
                    assert notifications(answer) in ([], [(1, 1)]), answer
                    case.detail = "connection closed"
                else:
                    peer = session(cluster, "node1")
                    peer.send(bgp_update([mine], HOSTILE, (HOSTILE_AS,)))
                    wait_for("the peer's route installed on node1", lambda: mine in destinations(cluster), timeout=30)
                    if variant == "attribute-length-overrun":
                        since = hostile_row(cluster, "node1")["since"]
                        peer.send(attribute_length_overrun([mine]))
                        wait_for("its NLRI withdrawn (treat-as-withdraw)", lambda: mine not in destinations(cluster), timeout=30)
                        row = hostile_row(cluster, "node1")
                        assert row["state"] == "Established" and row["since"] == since, row
                        case.detail = "treat-as-withdraw, session kept"
                    else:
                        peer.send(total_attribute_length_overrun([mine]))
                        assert notifications(peer.read_until_closed()) == [(3, 1)]
                        wait_for("its route withdrawn", lambda: mine not in destinations(cluster), timeout=30)
                        case.detail = "NOTIFICATION 3/1, that session closed, its route withdrawn"
        finally:
            if peer is not None:
                peer.close()
        assert status(cluster.lab, "node1")["exabgp_pid"] == exabgp_pid


def test_a_peer_that_never_answers_open_harms_nothing(cluster: Cluster, fault_record) -> None:
    """The hostile address accepts every node's TCP connection and never sends an OPEN, for 12 s."""
    seconds = 12
    before = {n: bgpd_usage(cluster, n) for n in NODES}
    with fault_record.case(f"peer accepts TCP and never answers OPEN, {seconds} s (3 nodes, pods pinging)",
                           "no session with it; no fd or thread leak; 0 lost, 0 route writes") as case:
        silent = SilentListener(hostile_ns(cluster), HOSTILE)
        try:
            with measured(cluster, case):
                wait_for("a node connecting and sending its OPEN", lambda: silent.accepted and silent.received > 0,
                         timeout=60)
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    assert all(hostile_row(cluster, n)["state"] != "Established" for n in NODES)
                    time.sleep(1.0)
        finally:
            silent.stop()
        after = {n: bgpd_usage(cluster, n) for n in NODES}
        for node in NODES:
            for name in ("bgpd", "exabgp"):
                assert after[node][name].fds <= before[node][name].fds + 2, (node, name, before, after)
                assert after[node][name].threads <= before[node][name].threads + 1, (node, name, before, after)
        assert case.route_writes == 0
        case.detail = (f"{len(silent.accepted)} connection(s) accepted, none Established; node1 "
                       + usage_detail("bgpd", before["node1"]["bgpd"], after["node1"]["bgpd"]) + "; "
                       + usage_detail("ExaBGP", before["node1"]["exabgp"], after["node1"]["exabgp"]))


FLAP_PREFIXES = [f"172.25.{i}.0/24" for i in range(40)]
RESETS = 100


def test_a_session_reset_again_and_again_leaks_nothing(cluster: Cluster, fault_record) -> None:
    """node1's session with the hostile peer comes up with graceful restart and a changing set of
    routes and is killed (TCP RST), 100 times; then a last session with 7 routes."""
    rng = random.Random(RESETS)
    peer = session(cluster, "node1", restart_time=120)
    peer.send(bgp_update(FLAP_PREFIXES, HOSTILE, (HOSTILE_AS,)) + END_OF_RIB)
    wait_for("the peer's routes on node1", lambda: destinations(cluster) >= set(FLAP_PREFIXES), timeout=60)
    peer.reset()
    peer = None
    before = bgpd_usage(cluster, "node1")
    with fault_record.case(f"a peer's session reset {RESETS} times (3 nodes, pods pinging; TCP RST after each "
                           "start, graceful restart, changing routes)",
                           "afterwards node1's routes = what is advertised; bounded memory, no fd or thread "
                           "leak; 0 lost") as case:
        try:
            with measured(cluster, case):
                peer, announced, took = reset_storm(lambda: session(cluster, "node1", restart_time=120),
                                                    FLAP_PREFIXES, HOSTILE, HOSTILE_AS, RESETS, rng)
                final = set(announced)
                settled = time.monotonic()

                def flap_routes() -> set[str]:
                    return destinations(cluster) & set(FLAP_PREFIXES)
                wait_for("node1's routes = the last session's", lambda: flap_routes() == final, timeout=60)
                case.recovery_s = time.monotonic() - settled
                time.sleep(2.0)
                assert flap_routes() == final
                # withdrawn before the close: a closed session's routes stay for its restart time
                peer.send(bgp_withdraw(sorted(final)))
        finally:
            if peer is not None:
                peer.close()
        after = bgpd_usage(cluster, "node1")
        for name in ("bgpd", "exabgp"):
            assert after[name].fds <= before[name].fds + 3, (name, before, after)
            assert after[name].threads <= before[name].threads + 1, (name, before, after)
            assert after[name].rss_kib - before[name].rss_kib < 20 * 1024, (name, before, after)
        case.detail = (f"{RESETS} resets in {took:.0f} s; " + usage_detail("bgpd", before["bgpd"], after["bgpd"])
                       + "; " + usage_detail("ExaBGP", before["exabgp"], after["exabgp"]))
    wait_for("the peer's routes withdrawn with the session",
             lambda: not destinations(cluster) & set(FLAP_PREFIXES), timeout=60)


FLOOD = 100_000


def flood_updates(n: int = FLOOD) -> bytes:
    """``n`` distinct /24s from 20.0.0.0 up, a thousand to an UPDATE (within BGP's 4,096 bytes)."""
    prefixes = [f"{20 + i // 65536}.{(i // 256) % 256}.{i % 256}.0/24" for i in range(n)]
    return b"".join(bgp_update(prefixes[i:i + 1000], HOSTILE, (HOSTILE_AS,)) for i in range(0, n, 1000))


def test_a_peer_sending_100k_prefixes_is_torn_down(cluster: Cluster, fault_record) -> None:
    """The hostile peer sends 100,000 prefixes to node1, over bgpd's default limit of 10,000: the
    session is torn down with Cease/maximum number of prefixes (6/1) and nothing of it stays."""
    assert len(nlri(["20.0.0.0/24"])) * 1000 + 60 < 4096
    peer = session(cluster, "node1")
    with fault_record.case(f"a peer sends {FLOOD:,} prefixes to node1, bgpd's default max_prefixes 10,000 "
                           "(3 nodes, pods pinging)",
                           "Cease 6/1, its routes withdrawn, peer held down; 0 lost") as case:
        try:
            with measured(cluster, case):
                began = time.monotonic()
                try:
                    peer.send(flood_updates())
                except OSError:
                    pass        # torn down while sending
                answer = peer.read_until_closed()
                assert (6, 1) in notifications(answer), f"NOTIFICATIONs: {notifications(answer)}"
                row = wait_for("max-prefix teardown in node1's status",
                               lambda: "maximum prefixes" in (r := hostile_row(cluster, "node1"))["info"] and r,
                               timeout=60)
                wait_for("nothing of the flood left on node1", lambda: not any(
                    "dst=20." in r or "dst=21." in r for r in cluster.measure().programmed["node1"]), timeout=120)
                case.recovery_s = time.monotonic() - began
        finally:
            peer.close()
        case.detail = f"Cease 6/1 received, torn down and withdrawn in {case.recovery_s:.1f} s; status: {row['info']}"

