"""Route reflection between real speakers, and an MD5 password mismatch shown by status."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from calyx.model import BGPConfiguration, BGPPeer, IPPool, NodeInfo, SecretKeyRef, Snapshot
from calyx.selector import Selector

from bgpdtest_support import Net, make_speaker, peer_row, random_prefixes, wait_for

pytestmark = pytest.mark.lab


def test_route_reflector_reflects_between_clients(net: Net, run_root: Path) -> None:
    sub, pool16 = random_prefixes()
    pool = IPPool(name="pool", cidr=IPv4Network(f"{pool16}.0.0/16"))
    addr = {"rr": f"{sub}.10/24", "c1": f"{sub}.1/24", "c2": f"{sub}.2/24"}
    nodes = {
        "rr": NodeInfo(name="rr", labels={"route-reflector": "true"}, bgp_address=IPv4Interface(addr["rr"]),
                       rr_cluster_id="224.0.0.1", pod_cidrs=(IPv4Network(f"{pool16}.0.0/26"),)),
        "c1": NodeInfo(name="c1", bgp_address=IPv4Interface(addr["c1"]), pod_cidrs=(IPv4Network(f"{pool16}.1.0/26"),)),
        "c2": NodeInfo(name="c2", bgp_address=IPv4Interface(addr["c2"]), pod_cidrs=(IPv4Network(f"{pool16}.2.0/26"),)),
    }
    to_rr = BGPPeer(name="to-rr", node_selector=Selector.parse("all()"),
                    peer_selector=Selector.parse("route-reflector == 'true'"))
    snap = Snapshot(nodes=nodes, ippools={"pool": pool}, bgp_peers={"to-rr": to_rr},
                    bgp_configuration=BGPConfiguration(node_to_node_mesh_enabled=False))
    ns = {n: net.node(n, a) for n, a in addr.items()}
    speakers = {n: make_speaker(ns[n], n, run_root) for n in nodes}
    try:
        for sp in speakers.values():
            sp.set_snapshot(snap)
        sub_ip = {n: a.split("/")[0] for n, a in addr.items()}
        # c1 learns c2's block through the RR with c2 (not the RR) as next hop, and the RR's own.
        wait_for(lambda: net.routes(ns["c1"]) == {f"{pool16}.2.0/26 via {sub_ip['c2']} dev eth0",
                                                  f"{pool16}.0.0/26 via {sub_ip['rr']} dev eth0"},
                 what="c1 routes via the reflector")
        wait_for(lambda: net.routes(ns["c2"]) == {f"{pool16}.1.0/26 via {sub_ip['c1']} dev eth0",
                                                  f"{pool16}.0.0/26 via {sub_ip['rr']} dev eth0"},
                 what="c2 routes via the reflector")
        c1 = speakers["c1"].status()
        assert [p["peer_type"] for p in c1["peers"]] == ["route reflector"]
        rr = speakers["rr"].status()
        assert {p["peer_type"] for p in rr["peers"]} == {"route reflector client"}
        assert peer_row(speakers["rr"], sub_ip["c2"])["prefixes_advertised"] == 2
        learned = {r["prefix"]: r for r in speakers["c1"].routes()["learned"]}
        assert learned[f"{pool16}.2.0/26"]["accepted"]

        # c2 goes away: its block is withdrawn from c1 by the reflector.
        speakers["c2"].stop()
        wait_for(lambda: net.routes(ns["c1"]) == {f"{pool16}.0.0/26 via {sub_ip['rr']} dev eth0"},
                 timeout=90, what="withdrawal after c2's session is lost (graceful restart window 5 s)")
    finally:
        for sp in speakers.values():
            sp.stop()


def test_md5_mismatch_shows_in_status(net: Net, run_root: Path) -> None:
    sub, pool16 = random_prefixes()
    ref = SecretKeyRef(name="bgp-mesh", key="password")
    nodes = {n: NodeInfo(name=n, bgp_address=IPv4Interface(f"{sub}.{i}/24")) for i, n in ((1, "a"), (2, "b"))}
    base = Snapshot(nodes=nodes, bgp_configuration=BGPConfiguration(node_mesh_password=ref))
    snap_a = replace(base, secrets={("calyx-system", "bgp-mesh"): {"password": "Pw-A7x"}})
    snap_b = replace(base, secrets={("calyx-system", "bgp-mesh"): {"password": "Pw-B9y"}})
    ns = {n: net.node(n, f"{sub}.{i}/24") for i, n in ((1, "a"), (2, "b"))}
    speakers = {n: make_speaker(ns[n], n, run_root) for n in nodes}
    try:
        speakers["a"].set_snapshot(snap_a)
        speakers["b"].set_snapshot(snap_b)
        row = wait_for(lambda: (r := peer_row(speakers["a"], f"{sub}.2")) and "MD5" in r["info"] and r,
                       timeout=60, what="MD5 hint in a's status")
        assert row["state"] != "Established"
        assert "password" in row["info"]
        # The password itself never appears in status.
        assert "Pw-A7x" not in str(speakers["a"].status()) and "Pw-B9y" not in str(speakers["b"].status())
        # Fix the secret: the session comes up.
        speakers["b"].set_snapshot(snap_a)
        wait_for(lambda: peer_row(speakers["a"], f"{sub}.2").get("state") == "Established",
                 what="session after the password was fixed")
        assert peer_row(speakers["a"], f"{sub}.2")["info"] == ""
    finally:
        for sp in speakers.values():
            sp.stop()
