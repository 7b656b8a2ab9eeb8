"""FRR as an external route reflector with our nodes as its clients (mesh disabled)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from calyx.model import BGPConfiguration, BGPPeer, IPPool, NodeInfo, Snapshot

from bgpdtest_support import FrrBgpd, Net, make_speaker, peer_row, random_prefixes, wait_for

pytestmark = pytest.mark.lab


def test_frr_route_reflector_relays_between_our_nodes(net: Net, run_root: Path) -> None:
    sub, pool16 = random_prefixes()
    rr = f"{sub}.254"
    nodes = {n: NodeInfo(name=n, bgp_address=IPv4Interface(f"{sub}.{i}/24"),
                         pod_cidrs=(IPv4Network(f"{pool16}.{i}.0/26"),)) for i, n in ((1, "a"), (2, "b"))}
    snap = Snapshot(nodes=nodes, ippools={"pool": IPPool(name="pool", cidr=IPv4Network(f"{pool16}.0.0/16"))},
                    bgp_peers={"frr-rr": BGPPeer(name="frr-rr", peer_ip=IPv4Address(rr), as_number=64512)},
                    bgp_configuration=BGPConfiguration(node_to_node_mesh_enabled=False))
    ns = {n: net.node(n, f"{sub}.{i}/24") for i, n in ((1, "a"), (2, "b"))}
    ns_rr = net.node("rr", f"{rr}/24")
    frr = FrrBgpd(ns_rr, run_root / "frr", f"""
frr defaults traditional
hostname rr
router bgp 64512
 bgp router-id {rr}
 bgp cluster-id 1.2.3.4
 no bgp ebgp-requires-policy
 neighbor {sub}.1 remote-as 64512
 neighbor {sub}.2 remote-as 64512
 address-family ipv4 unicast
  neighbor {sub}.1 route-reflector-client
  neighbor {sub}.2 route-reflector-client
 exit-address-family
""", listen=rr)
    speakers = {n: make_speaker(ns[n], n, run_root) for n in nodes}
    try:
        for sp in speakers.values():
            sp.set_snapshot(snap)
        wait_for(lambda: net.routes(ns["a"]) == {f"{pool16}.2.0/26 via {sub}.2 dev eth0"},
                 what="a learns b's block through FRR with b as next hop")
        wait_for(lambda: net.routes(ns["b"]) == {f"{pool16}.1.0/26 via {sub}.1 dev eth0"},
                 what="b learns a's block through FRR")
        row = peer_row(speakers["a"], rr)
        assert row["peer_type"] == "global" and row["state"] == "Established"
        learned = {r["prefix"]: r for r in speakers["a"].routes()["learned"]}
        assert learned[f"{pool16}.2.0/26"]["accepted"]
        assert f"{pool16}.1.0/26" in frr.vtysh("show bgp ipv4 unicast")
    finally:
        for sp in speakers.values():
            sp.stop()
        frr.stop()
