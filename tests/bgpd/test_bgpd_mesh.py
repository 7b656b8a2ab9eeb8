"""Three nodes in a full mesh, each a real Speaker with a real ExaBGP in its own namespace."""
from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from calyx.model import BGPConfiguration, EncapMode, IPPool, NodeInfo, Snapshot
from bgpdtest_support import Net, make_speaker, wait_for

pytestmark = pytest.mark.lab


def test_three_node_mesh_installs_each_others_blocks(net: Net, run_root: Path) -> None:
    x = random.randrange(200, 250)
    y = random.randrange(1, 250)
    addrs = {f"n{i}": IPv4Interface(f"10.{x}.{y}.{i}/24") for i in (1, 2, 3)}
    pool = IPPool(name="pool", cidr=IPv4Network(f"10.{x + 1 if x < 249 else 199}.0.0/16"),
                  ipip_mode=EncapMode.NEVER)
    nodes = {n: NodeInfo(name=n, bgp_address=a, pod_cidrs=(IPv4Network(f"{pool.cidr.network_address + 64 * i}/26"),))
             for i, (n, a) in enumerate(addrs.items(), start=1)}
    snap = Snapshot(nodes=nodes, ippools={"pool": pool}, bgp_configuration=BGPConfiguration())
    ns = {n: net.node(n, str(a)) for n, a in addrs.items()}
    speakers = {n: make_speaker(ns[n], n, run_root) for n in nodes}
    try:
        for sp in speakers.values():
            sp.set_snapshot(snap)
        for n in nodes:
            expected = {f"{nodes[o].pod_cidrs[0]} via {addrs[o].ip} dev eth0"
                        for o in nodes if o != n}
            wait_for(lambda: net.routes(ns[n]) == expected, what=f"routes on {n}: {expected}")
        status = speakers["n1"].status()
        assert {p["peer_address"] for p in status["peers"]} == {str(addrs["n2"].ip), str(addrs["n3"].ip)}
        assert all(p["state"] == "Established" and p["peer_type"] == "node-to-node mesh" for p in status["peers"])
        assert all(p["prefixes_received"] == 1 and p["prefixes_advertised"] == 1 for p in status["peers"])

        # A node's block going away is withdrawn everywhere.
        nodes2 = dict(nodes)
        nodes2["n3"] = replace(nodes["n3"], pod_cidrs=())
        snap2 = replace(snap, nodes=nodes2)
        for sp in speakers.values():
            sp.set_snapshot(snap2)
        wait_for(lambda: net.routes(ns["n1"]) == {f"{nodes['n2'].pod_cidrs[0]} via {addrs['n2'].ip} dev eth0"},
                 what="withdrawal of n3's block on n1")
    finally:
        for sp in speakers.values():
            sp.stop()
