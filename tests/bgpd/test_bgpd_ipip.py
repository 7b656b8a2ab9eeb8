"""IPIP install modes of the real ``bgpd`` daemon, inside user-mode Linux (its kernel has ipip).

Lab ``labs/ipip``: node1 and node2 in 10.0.1.0/24, node3 in 10.0.2.0/24 behind a router; pod
CIDRs 10.244.N.0/24 in one pool, starting in ipipMode Always. The pool's mode is then changed
through the API: installed routes must be replaced in place (a netlink route monitor sees new
routes and no deletion) and no BGP session may reset; a move of an installed route from direct
to IPIP waits for the settle delay (logged as ``ipip_move_delayed``), a move to direct does not.
The tests run in order on one lab.
"""
from __future__ import annotations

import pytest

from calyxlab.routemonitor import RouteMonitor
from bgpd_lab import (apply, bgp_routes, module_lab, peers, routes, status, wait_for,
                      wait_sessions)

pytestmark = [pytest.mark.lab, pytest.mark.uml]

NODES = {"node1": "10.0.1.11", "node2": "10.0.1.12", "node3": "10.0.2.13"}
CIDRS = {"node1": "10.244.1.0/24", "node2": "10.244.2.0/24", "node3": "10.244.3.0/24"}
GATEWAY = {"node1": "10.0.1.1", "node2": "10.0.1.1", "node3": "10.0.2.1"}


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with module_lab(request, unique_lab_name, "ipip", kernel="uml") as lab:
        yield lab


def ipip(other: str) -> str:
    return f"via {NODES[other]} dev tunl0 onlink"


def direct(node: str, other: str) -> str:
    same_subnet = NODES[node].rsplit(".", 1)[0] == NODES[other].rsplit(".", 1)[0]
    return f"via {NODES[other] if same_subnet else GATEWAY[node]} dev eth1"


def expected(mode: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for node in NODES:
        want = {}
        for other in NODES:
            if other == node:
                continue
            same_subnet = NODES[node].rsplit(".", 1)[0] == NODES[other].rsplit(".", 1)[0]
            if mode == "Always" or (mode == "CrossSubnet" and not same_subnet):
                want[CIDRS[other]] = ipip(other)
            else:
                want[CIDRS[other]] = direct(node, other)
        out[node] = want
    return out


def wait_routes(lab, mode: str) -> None:
    for node, want in expected(mode).items():
        wait_for(f"{node}: {mode} routes {want}", lambda n=node, w=want: bgp_routes(lab, n) == w)


def set_mode(lab, mode: str) -> None:
    apply(lab, {"apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": "pool"},
                "spec": {"ipipMode": mode}})


@pytest.fixture(scope="module")
def established(lab) -> dict[str, dict]:
    """Each node's sessions once the mesh is up (their SINCE is compared later)."""
    out = {}
    for node in NODES:
        st = wait_sessions(lab, node, {a: "node-to-node mesh" for n, a in NODES.items() if n != node})
        out[node] = peers(st)
    return out


def assert_no_session_reset(lab, established: dict[str, dict]) -> None:
    for node, before in established.items():
        st = status(lab, node)
        assert st["exabgp_restarts"] == 0
        for address, p in peers(st).items():
            assert p["state"] == "Established" and p["since"] == before[address]["since"], \
                f"{node}: session to {address} was reset"


def test_always_installs_via_tunl0_onlink(lab, established):
    wait_routes(lab, "Always")
    installed = {i["prefix"]: i for i in routes(lab, "node1")["installed"]}
    assert installed[CIDRS["node3"]]["mode"] == "ipip" and installed[CIDRS["node3"]]["pool"] == "pool"


@pytest.mark.parametrize("mode", ["Never", "CrossSubnet", "Always"])
def test_mode_change_replaces_routes_in_place(lab, established, tmp_path, mode):
    before = bgp_routes(lab, "node1")
    delayed_before = lab.daemon_log("node1", "bgpd").count("ipip_move_delayed")
    monitor = RouteMonitor(lab, "node1", tmp_path / "monitor.log")
    try:
        set_mode(lab, mode)
        wait_routes(lab, mode)
        events = monitor.stop()
    finally:
        if lab.alive(monitor.handle):
            lab.kill(monitor.handle)
    print(f"node1 route events switching to {mode}:", *events, sep="\n  ")
    assert not [e for e in events if e.startswith("Deleted")], f"a route was deleted: {events}"
    changed = {p for p, r in expected(mode)["node1"].items() if before.get(p) != r}
    assert changed, "the switch changed nothing on node1"
    for prefix in changed:
        assert any(e.startswith(prefix) and "proto bgp" in e for e in events), f"no replace of {prefix}: {events}"
    assert_no_session_reset(lab, established)
    to_ipip = {p for p in changed if "tunl0" in expected(mode)["node1"][p]}
    delayed = lab.daemon_log("node1", "bgpd").count("ipip_move_delayed") - delayed_before
    assert delayed == (1 if to_ipip else 0), \
        f"switching to {mode}: {delayed} delayed moves to IPIP logged, moves to IPIP: {sorted(to_ipip)}"
