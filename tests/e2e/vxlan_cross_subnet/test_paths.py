"""Scenario ``vxlan-cross-subnet``: four nodes in two subnets joined by an FRR router that only
routes between the subnets, pool in VXLAN CrossSubnet mode, BGP switched off (no mesh, no
peers). Runs on the host kernel: VXLAN needs no ipip.

Expected: felix alone programs every route to another node's block, from the API: within a
subnet ``via NODE dev eth1`` (plain), across the router ``via VTEP dev vxlan.calico onlink``
with the VTEP's neighbour and FDB entries; every node publishes its VTEP on its Node; the full
ping matrix works; on the wire node1 -> node2 carries pod addresses, node1 -> node3 UDP 4789
between the two nodes' addresses. Then the pool switches live to VXLAN Always (BGP still off):
every remote block goes through vxlan.calico, even within a subnet, and the matrix still works;
last it goes back to CrossSubnet (the package's lab is shared with the trace module).
"""
from __future__ import annotations

import json

import pytest

from e2e_support import (POOL, assert_full_matrix, bgpd_status, capture_icmp, core_api, custom_api,
                         node_block, route_summary, routes, wait_for)

pytestmark = [pytest.mark.lab]

NODES = {"node1": "10.0.1.11", "node2": "10.0.1.12", "node3": "10.0.2.13", "node4": "10.0.2.14"}
DEV = "vxlan.calico"


def subnet(node: str) -> str:
    return NODES[node].rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def blocks(lab, cluster_pods):
    return {n: wait_for(f"node {n}: its block", lambda n=n: node_block(lab, n)) for n in NODES}


def vteps(lab) -> dict[str, tuple[str, str]]:
    """node -> (VTEP address, VTEP MAC) as published on the Nodes."""
    out = {}
    for node in core_api(lab).list_node().items:
        annotations = node.metadata.annotations or {}
        address = annotations.get("calyx.dev/ipv4-vxlan-tunnel-addr")
        mac = annotations.get("calyx.dev/vxlan-tunnel-mac")
        if address and mac:
            out[node.metadata.name] = (address, mac)
    return out


def felix_routes(lab, node: str) -> dict[str, str]:
    return {r["dst"]: route_summary(r) for r in routes(lab, node, "proto", "80") if r.get("gateway")}


def wait_routes(lab, node: str, expected: dict[str, str]) -> None:
    try:
        wait_for(f"node {node}: routes {expected}", lambda: felix_routes(lab, node) == expected)
    except AssertionError:
        raise AssertionError(f"node {node}: routes did not reach {expected}; felix's routes: "
                             f"{felix_routes(lab, node)}") from None


def link_details(lab, node: str) -> dict:
    res = lab.exec(node, ["ip", "-d", "-j", "link", "show", DEV], check=True)
    return json.loads(res.stdout)[0]


def test_bgp_is_off(lab, cluster_pods):
    for node in NODES:
        status = bgpd_status(lab, node)
        assert not status.get("peers"), f"node {node}: BGP peers although the mesh is off: {status}"
        assert routes(lab, node, "proto", "bgp") == []


def test_every_node_publishes_its_vtep(lab, blocks):
    published = wait_for("every node's VTEP annotations", lambda: (v := vteps(lab)) and len(v) == 4 and v)
    for node in NODES:
        address, mac = published[node]
        assert address == blocks[node].split("/")[0]      # the first address of its block
        details = link_details(lab, node)
        assert details["address"] == mac
        data = details["linkinfo"]["info_data"]
        assert (data["id"], data["port"], data["local"], data["learning"]) == (4096, 4789, NODES[node], False)
    print(lab.exec("node1", ["ip", "-d", "link", "show", DEV], check=True).stdout)


def test_routes_are_plain_within_a_subnet_and_vxlan_across(lab, blocks):
    published = wait_for("every node's VTEP annotations", lambda: (v := vteps(lab)) and len(v) == 4 and v)
    for node in NODES:
        expected = {blocks[o]: (f"via {NODES[o]} dev eth1" if subnet(o) == subnet(node)
                                else f"via {published[o][0]} dev {DEV} onlink")
                    for o in NODES if o != node}
        wait_routes(lab, node, expected)
        neigh = lab.exec(node, ["ip", "neigh", "show", "dev", DEV], check=True).stdout
        fdb = lab.exec(node, ["bridge", "fdb", "show", "dev", DEV], check=True).stdout
        for other in NODES:
            if subnet(other) != subnet(node):
                assert f"{published[other][0]} lladdr {published[other][1]} PERMANENT" in neigh, neigh
                assert f"{published[other][1]} dst {NODES[other]} self permanent" in fdb, fdb
    for command in (["ip", "route", "show", "proto", "80"], ["ip", "neigh", "show", "dev", DEV],
                    ["bridge", "fdb", "show", "dev", DEV]):
        print(f"node1$ {' '.join(command)}\n{lab.exec('node1', command, check=True).stdout}")


def test_ping_matrix(lab, cluster_pods, blocks):
    assert_full_matrix(lab, list(cluster_pods.values()), "VXLAN CrossSubnet, BGP off")


def test_same_subnet_traffic_is_plain_on_the_wire(lab, cluster_pods):
    # switch-a:eth2 faces node2
    packets = capture_icmp(lab, "switch-a", "eth2", cluster_pods["node1"], cluster_pods["node2"])
    print(f"switch-a:eth2 (node1 <-> node2): {packets}")
    assert all(p.encap is None for p in packets), f"same subnet: expected plain pod addresses, got {packets}"


def test_cross_subnet_traffic_is_vxlan_on_the_wire(lab, cluster_pods):
    # switch-a:eth3 faces the router: node1 -> node3 crosses it
    packets = capture_icmp(lab, "switch-a", "eth3", cluster_pods["node1"], cluster_pods["node3"])
    print(f"switch-a:eth3 (node1 <-> node3 through the router): {packets}")
    assert all(p.encap == "vxlan" and p.vni == 4096 and {p.outer_src, p.outer_dst} == {NODES["node1"], NODES["node3"]}
               for p in packets), f"across subnets: expected UDP 4789 between node1 and node3, got {packets}"


def test_vxlan_always_with_bgp_off(lab, cluster_pods, blocks):
    custom_api(lab).patch_cluster_custom_object("calyx.dev", "v1", "ippools", POOL, {"spec": {"vxlanMode": "Always"}})
    published = vteps(lab)
    for node in NODES:
        wait_routes(lab, node, {blocks[o]: f"via {published[o][0]} dev {DEV} onlink" for o in NODES if o != node})
    print(f"node1$ ip route show proto 80 (VXLAN Always)\n"
          f"{lab.exec('node1', ['ip', 'route', 'show', 'proto', '80'], check=True).stdout}")
    assert_full_matrix(lab, list(cluster_pods.values()), "VXLAN Always, BGP off")
    packets = capture_icmp(lab, "switch-a", "eth2", cluster_pods["node1"], cluster_pods["node2"])
    print(f"switch-a:eth2 (node1 <-> node2, Always): {packets}")
    assert all(p.encap == "vxlan" and {p.outer_src, p.outer_dst} == {NODES["node1"], NODES["node2"]}
               for p in packets), f"Always: expected UDP 4789 within the subnet too, got {packets}"
    custom_api(lab).patch_cluster_custom_object("calyx.dev", "v1", "ippools", POOL,
                                                {"spec": {"vxlanMode": "CrossSubnet"}})
    for node in NODES:           # back as the package's next module (calyxctl trace) expects it
        wait_routes(lab, node, {blocks[o]: (f"via {NODES[o]} dev eth1" if subnet(o) == subnet(node)
                                            else f"via {published[o][0]} dev {DEV} onlink")
                                for o in NODES if o != node})
