"""No repr of what carries a BGP password shows it: the Secret's values in a Snapshot, a Peer's
password, a Session holding that Peer, the status rows. A SecretKeyRef (Secret name and key, no
value) shows as it is."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address as A, IPv4Interface

from calyx.model import BGPConfiguration, BGPPeer, NodeInfo, SecretKeyRef, Snapshot

from bgpd.peers import peer_set
from bgpd.rib import Rib
from bgpd.session import Session
from bgpd.status import session_rows

NS = "calyx-system"
MESH_PW, TOR_PW = "mesh-V4lue-xyz", "tor-V4lue-xyz"


def snapshot() -> Snapshot:
    nodes = {n: NodeInfo(name=n, bgp_address=IPv4Interface(f"10.0.0.{i}/24")) for i, n in ((1, "a"), (2, "b"))}
    tor = BGPPeer(name="tor", peer_ip=A("10.0.0.254"), as_number=65001, password=SecretKeyRef("bgp-peers", "tor"))
    return Snapshot(nodes=nodes, bgp_peers={"tor": tor},
                    bgp_configuration=BGPConfiguration(node_mesh_password=SecretKeyRef("bgp-mesh", "pw")),
                    secrets={(NS, "bgp-mesh"): {"pw": MESH_PW}, (NS, "bgp-peers"): {"tor": TOR_PW}})


def test_reprs_show_secret_references_but_never_passwords() -> None:
    snap = snapshot()
    peers = peer_set(snap, "a", NS)
    mesh, tor = peers[A("10.0.0.2")], peers[A("10.0.0.254")]
    assert (mesh.password, tor.password) == (MESH_PW, TOR_PW)       # the values are there ...
    sessions = {a: Session(peer=p) for a, p in peers.items()}
    texts = {
        "Snapshot": repr(snap), "str(Snapshot)": str(snap),
        "Peer": repr(tor), "mesh Peer": repr(mesh), "replaced Peer": repr(replace(tor)),
        "peer set": repr(peers), "Session": repr(sessions[A("10.0.0.254")]),
        "status rows": repr(session_rows(sessions, Rib())),
        "BGPPeer": repr(snap.bgp_peers["tor"]), "BGPConfiguration": repr(snap.bgp_configuration),
    }
    for what, text in texts.items():                                  # ... and nowhere to be seen
        assert MESH_PW not in text and TOR_PW not in text, what
    assert "SecretKeyRef(name='bgp-peers', key='tor')" in texts["BGPPeer"]
    assert "SecretKeyRef(name='bgp-mesh', key='pw')" in texts["BGPConfiguration"]
    assert "password" not in texts["Peer"]          # not even as a masked field
    assert "bgp-peers" in texts["Snapshot"] and "secrets=" not in texts["Snapshot"]
