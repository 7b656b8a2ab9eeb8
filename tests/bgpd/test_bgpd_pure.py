"""Unit tests of bgpd's pure parts: peer set, best path, reflection, export, import, config text."""
from __future__ import annotations

from ipaddress import IPv4Address as A, IPv4Interface, IPv4Network as N

import pytest

from calyx.model import (BGPConfiguration, BGPPeer, EncapMode, IPPool, NodeInfo, ObjectName, SecretKeyRef,
                         Snapshot)
from calyx.selector import Selector

from bgpd import importer
from bgpd.exabgp import config as exaconfig
from bgpd.exabgp import messages
from bgpd.export import adj_rib_out, exportable_pools, own_prefixes
from bgpd.peers import (PeerSetError, PeerType, local_speaker, nodes_without_address, peer_set,
                        referenced_secrets)
from bgpd.reflector import reflect
from bgpd.rib import Attributes, Origin, Path, Rib, best_path, loop_reason


def node(name: str, ip: str, labels: dict | None = None, asn: int | None = None, cid: str | None = None,
         cidr: str | None = None) -> NodeInfo:
    return NodeInfo(name=name, labels=labels or {}, bgp_address=IPv4Interface(ip), as_number=asn,
                    rr_cluster_id=cid, pod_cidrs=(N(cidr),) if cidr else ())


def snap(*nodes: NodeInfo, mesh: bool = True, peers: tuple[BGPPeer, ...] = (), **kw) -> Snapshot:
    return Snapshot(nodes={n.name: n for n in nodes},
                    bgp_configuration=BGPConfiguration(node_to_node_mesh_enabled=mesh, **kw),
                    bgp_peers={p.name: p for p in peers})


# --- peer set --------------------------------------------------------------------------

def test_mesh_peers_every_other_node_with_an_address() -> None:
    s = snap(node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24"), node("c", "10.0.0.3/24"),
             NodeInfo(name="noaddr"))
    peers = peer_set(s, "a")
    assert list(peers) == [A("10.0.0.2"), A("10.0.0.3")]
    assert all(p.peer_type is PeerType.MESH and not p.ebgp and p.local_address == A("10.0.0.1")
               for p in peers.values())


def test_nodes_without_an_address_are_named_with_the_field_and_why() -> None:
    s = snap(node("a", "10.0.0.1/24"), NodeInfo(name="noaddr"), NodeInfo(name="going", deleting=True),
             NodeInfo(name="b"))
    assert nodes_without_address(s, "a") == {
        name: f"Node {name!r}: metadata.annotations[calyx.dev/ipv4-address]: None: no BGP address (neither "
              "the annotation nor an InternalIP in status.addresses); no session to it until it has one"
        for name in ("b", "noaddr")}
    assert list(nodes_without_address(s, "b")) == ["noaddr"]


def test_mesh_uses_per_node_as_and_becomes_ebgp() -> None:
    s = snap(node("a", "10.0.0.1/24", asn=65001), node("b", "10.0.0.2/24"))
    p = peer_set(s, "a")[A("10.0.0.2")]
    assert p.local_as == 65001 and p.peer_as == 64512 and p.ebgp


def test_node_without_address_cannot_speak() -> None:
    with pytest.raises(PeerSetError, match="'x'.*no BGP address"):
        peer_set(Snapshot(nodes={"x": NodeInfo(name="x")}), "x")


RR_PEER = BGPPeer(name="to-rr", node_selector=Selector.parse("all()"),
                  peer_selector=Selector.parse("route-reflector == 'true'"))


def rr_cluster() -> Snapshot:
    return snap(node("rr1", "10.0.0.10/24", {"route-reflector": "true"}, cid="224.0.0.1"),
                node("rr2", "10.0.0.11/24", {"route-reflector": "true"}, cid="224.0.0.1"),
                node("c1", "10.0.0.1/24"), node("c2", "10.0.0.2/24"), mesh=False, peers=(RR_PEER,))


def test_rr_client_peers_only_with_its_reflectors() -> None:
    peers = peer_set(rr_cluster(), "c1")
    assert set(peers) == {A("10.0.0.10"), A("10.0.0.11")}
    assert all(p.peer_type is PeerType.ROUTE_REFLECTOR and not p.rr_client for p in peers.values())


def test_rr_peers_with_clients_as_clients_and_with_same_cluster_rr_as_non_client() -> None:
    peers = peer_set(rr_cluster(), "rr1")
    assert set(peers) == {A("10.0.0.1"), A("10.0.0.2"), A("10.0.0.11")}
    assert peers[A("10.0.0.1")].rr_client and peers[A("10.0.0.1")].peer_type is PeerType.RR_CLIENT
    assert not peers[A("10.0.0.11")].rr_client
    assert local_speaker(rr_cluster(), "rr1").cluster_id == A("224.0.0.1")


def test_rrs_with_different_cluster_ids_are_clients_of_each_other() -> None:
    s = rr_cluster()
    nodes = dict(s.nodes)
    nodes["rr2"] = node("rr2", "10.0.0.11/24", {"route-reflector": "true"}, cid="224.0.0.2")
    peers = peer_set(Snapshot(nodes=nodes, bgp_configuration=s.bgp_configuration, bgp_peers=s.bgp_peers), "rr1")
    assert peers[A("10.0.0.11")].rr_client


def test_global_and_node_specific_peers() -> None:
    glob = BGPPeer(name="tor", peer_ip=A("10.0.0.254"), as_number=65000)
    only_b = BGPPeer(name="b-only", node="b", peer_ip=A("10.0.0.253"), as_number=65001)
    by_label = BGPPeer(name="rack1", node_selector=Selector.parse("rack == 'r1'"), peer_ip=A("10.0.0.252"),
                       as_number=65002)
    s = snap(node("a", "10.0.0.1/24", {"rack": "r1"}), node("b", "10.0.0.2/24"), peers=(glob, only_b, by_label))
    a, b = peer_set(s, "a"), peer_set(s, "b")
    assert a[A("10.0.0.254")].peer_type is PeerType.GLOBAL and a[A("10.0.0.254")].ebgp
    assert a[A("10.0.0.252")].peer_type is PeerType.NODE_SPECIFIC
    assert A("10.0.0.253") not in a and A("10.0.0.252") not in b
    assert b[A("10.0.0.253")].peer_type is PeerType.NODE_SPECIFIC and b[A("10.0.0.253")].peer_as == 65001
    assert not a[A("10.0.0.254")].is_cluster_node


def test_explicit_peer_wins_over_mesh_for_the_same_address() -> None:
    explicit = BGPPeer(name="to-b", node="a", peer_ip=A("10.0.0.2"))
    s = snap(node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24"), peers=(explicit,))
    p = peer_set(s, "a")[A("10.0.0.2")]
    assert p.peer_type is PeerType.NODE_SPECIFIC and p.node == "b"


def test_passwords_come_from_secrets_and_a_missing_secret_is_an_error() -> None:
    ref = SecretKeyRef(name="bgp", key="pw")
    s = snap(node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24"), node_mesh_password=ref)
    assert peer_set(s, "a")[A("10.0.0.2")].error == \
        "BGPConfiguration 'default' nodeMeshPassword: password.secretKeyRef.name: 'bgp': Secret not found in 'calyx-system'"
    s2 = Snapshot(nodes=s.nodes, bgp_configuration=s.bgp_configuration,
                  secrets={("calyx-system", "bgp"): {"pw": "s3cret"}})
    p = peer_set(s2, "a")[A("10.0.0.2")]
    assert p.password == "s3cret" and p.error is None and "s3cret" not in repr(p)


def test_a_secret_that_cannot_be_read_is_an_error_naming_it_the_namespace_and_the_referrer() -> None:
    ref = SecretKeyRef(name="tor-pw", key="pw")
    tor = BGPPeer(name="tor", peer_ip=A("10.0.0.254"), as_number=65001, password=ref)
    refused = 'cannot be read: HTTP 403 Forbidden: secrets "tor-pw" is forbidden'
    s = Snapshot(nodes={"a": node("a", "10.0.0.1/24")},
                 bgp_configuration=BGPConfiguration(node_to_node_mesh_enabled=False),
                 bgp_peers={"tor": tor}, secret_errors={("calyx-system", "tor-pw"): refused})
    p = peer_set(s, "a")[A("10.0.0.254")]
    assert p.password is None and p.error == \
        f"BGPPeer 'tor': password.secretKeyRef.name: 'tor-pw': Secret in 'calyx-system' {refused}"
    # Another namespace's problem is not this one's.
    assert "not found in 'other'" in peer_set(s, "a", namespace="other")[A("10.0.0.254")].error
    # Known (kept after a refusal): the password is used.
    kept = Snapshot(nodes=s.nodes, bgp_configuration=s.bgp_configuration, bgp_peers=s.bgp_peers,
                    secrets={("calyx-system", "tor-pw"): {"pw": "x"}})
    assert peer_set(kept, "a")[A("10.0.0.254")].password == "x"


def test_referenced_secrets_are_those_of_every_peer_and_the_mesh_in_bgpds_namespace() -> None:
    assert referenced_secrets(snap(node("a", "10.0.0.1/24")), "calyx-system") == {}
    assert referenced_secrets(Snapshot(), "calyx-system") == {}
    peers = (
        BGPPeer(name="tor-a", peer_ip=A("10.0.1.1"), node="elsewhere", password=SecretKeyRef("bgp-passwords", "a")),
        BGPPeer(name="tor-b", peer_ip=A("10.0.2.1"), node_selector=Selector.parse("rack == 'b'"),
                password=SecretKeyRef("bgp-passwords", "b")),
        BGPPeer(name="edge", peer_ip=A("192.0.2.1"), password=SecretKeyRef("edge", "pw")),
        BGPPeer(name="open", peer_ip=A("192.0.2.2")),
    )
    s = snap(node("a", "10.0.0.1/24"), peers=peers, node_mesh_password=SecretKeyRef("mesh", "pw"))
    assert referenced_secrets(s, "networking") == {
        ("networking", "bgp-passwords"): (ObjectName("BGPPeer", "tor-a"), ObjectName("BGPPeer", "tor-b")),
        ("networking", "edge"): (ObjectName("BGPPeer", "edge"),),
        ("networking", "mesh"): (ObjectName("BGPConfiguration", "default"),),
    }
    shared = snap(peers=peers[:1], node_mesh_password=SecretKeyRef("bgp-passwords", "mesh"))
    assert referenced_secrets(shared, "calyx-system") == {
        ("calyx-system", "bgp-passwords"): (ObjectName("BGPConfiguration", "default"), ObjectName("BGPPeer", "tor-a"))}
    # Every peer counts, whether or not it applies to this node (no node involved at all).
    assert set(referenced_secrets(snap(peers=peers), "ns")) == {("ns", "bgp-passwords"), ("ns", "edge")}


# --- best path and loops ---------------------------------------------------------------

def path(prefix: str = "10.1.0.0/26", peer: str = "10.0.0.2", ebgp: bool = False, **attrs) -> Path:
    nh = attrs.pop("next_hop", A(peer))
    return Path(prefix=N(prefix), attrs=Attributes(next_hop=nh, **attrs), peer=A(peer), peer_router_id=A(peer),
                ebgp=ebgp)


@pytest.mark.parametrize("better,worse", [
    (dict(local_pref=200), dict(local_pref=100)),
    (dict(as_path=(1,)), dict(as_path=(1, 2))),
    (dict(origin=Origin.IGP), dict(origin=Origin.INCOMPLETE)),
    (dict(cluster_list=(), originator_id=A("10.0.0.5")),
     dict(cluster_list=(A("1.1.1.1"),), originator_id=A("10.0.0.5"))),
])
def test_best_path_steps(better: dict, worse: dict) -> None:
    a = path(peer="10.0.0.9", **better)
    b = path(peer="10.0.0.2", **worse)
    assert best_path([b, a]) is a


def test_best_path_med_ebgp_router_id_and_peer_address() -> None:
    assert best_path([path(peer="10.0.0.2", as_path=(7,), med=20),
                      path(peer="10.0.0.9", as_path=(7,), med=10)]).peer == A("10.0.0.9")
    assert best_path([path(peer="10.0.0.2"), path(peer="10.0.0.9", ebgp=True)]).ebgp
    assert best_path([path(peer="10.0.0.2", originator_id=A("10.9.9.9")),
                      path(peer="10.0.0.9", originator_id=A("10.0.0.1"))]).peer == A("10.0.0.9")
    assert best_path([path(peer="10.0.0.9"), path(peer="10.0.0.2")]).peer == A("10.0.0.2")
    assert best_path([]) is None


def test_loop_drops() -> None:
    me, cid = A("10.0.0.10"), A("224.0.0.1")
    assert "ORIGINATOR_ID" in loop_reason(Attributes(A("10.0.0.1"), originator_id=me), me, cid, 64512, False)
    assert "CLUSTER_LIST" in loop_reason(Attributes(A("10.0.0.1"), cluster_list=(A("1.1.1.1"), cid)), me, cid,
                                         64512, False)
    assert "AS_PATH" in loop_reason(Attributes(A("10.0.0.1"), as_path=(65000, 64512)), me, None, 64512, True)
    assert loop_reason(Attributes(A("10.0.0.1"), cluster_list=(A("1.1.1.1"),)), me, cid, 64512, False) is None


def test_rib_withdraw_and_drop_peer() -> None:
    rib = Rib()
    rib.update(path(peer="10.0.0.2"))
    rib.update(path(peer="10.0.0.3"))
    assert rib.best(N("10.1.0.0/26")).peer == A("10.0.0.2")
    assert rib.drop_peer(A("10.0.0.2")) == {N("10.1.0.0/26")}
    assert rib.best(N("10.1.0.0/26")).peer == A("10.0.0.3")
    assert rib.withdraw(A("10.0.0.3"), N("10.1.0.0/26"))
    assert rib.best_paths() == {}


# --- reflection and export -------------------------------------------------------------

def test_reflection_rules_and_attributes() -> None:
    s = rr_cluster()
    peers = peer_set(s, "rr1")
    local = local_speaker(s, "rr1")
    c1, c2, rr2 = peers[A("10.0.0.1")], peers[A("10.0.0.2")], peers[A("10.0.0.11")]
    from_client = path(peer="10.0.0.1", med=5)
    out = reflect(local, from_client, c1, c2)
    assert out is not None and out.originator_id == A("10.0.0.1") and out.cluster_list == (A("224.0.0.1"),)
    assert out.next_hop == A("10.0.0.1") and out.med == 5
    assert reflect(local, from_client, c1, rr2) is not None        # client -> non-client
    assert reflect(local, from_client, c1, c1) is None             # never back to the sender
    from_nonclient = path(peer="10.0.0.11", next_hop=A("10.0.0.7"), originator_id=A("10.0.0.7"),
                          cluster_list=(A("224.0.0.1"),))
    assert reflect(local, from_nonclient, rr2, c1).originator_id == A("10.0.0.7")
    assert reflect(local, path(peer="10.0.0.11"), rr2, rr2) is None
    nonrr = local_speaker(s, "c1")
    assert reflect(nonrr, from_client, c1, c2) is None


def test_adj_rib_out_own_blocks_services_and_reflection() -> None:
    s = rr_cluster()
    nodes = dict(s.nodes)
    nodes["rr1"] = node("rr1", "10.0.0.10/24", {"route-reflector": "true"}, cid="224.0.0.1", cidr="10.1.9.0/26")
    tor = BGPPeer(name="tor", peer_ip=A("10.0.0.254"), as_number=65000)
    s = Snapshot(nodes=nodes, bgp_configuration=BGPConfiguration(node_to_node_mesh_enabled=False,
                                                                 service_cluster_ips=(N("10.96.0.0/12"),)),
                 bgp_peers={"to-rr": RR_PEER, "tor": tor},
                 ippools={"p": IPPool(name="p", cidr=N("10.1.0.0/16"))})
    peers = peer_set(s, "rr1")
    local = local_speaker(s, "rr1")
    best = {N("10.1.0.0/26"): path(peer="10.0.0.1")}
    out = adj_rib_out(local, peers, set(peers) - {A("10.0.0.11")}, own_prefixes(s, "rr1"), (N("10.96.0.0/12"),), best,
                      (N("10.1.0.0/16"),))
    assert A("10.0.0.11") not in out                                 # not established
    # eBGP: no reflection; the learned pool route goes on with this node as next hop
    assert set(out[A("10.0.0.254")]) == {N("10.1.9.0/26"), N("10.96.0.0/12"), N("10.1.0.0/26")}
    assert out[A("10.0.0.254")][N("10.1.0.0/26")] == Attributes(next_hop=A("10.0.0.10"), as_path=(64512,))
    assert set(out[A("10.0.0.2")]) == {N("10.1.9.0/26"), N("10.1.0.0/26")}
    assert set(out[A("10.0.0.1")]) == {N("10.1.9.0/26")}
    assert out[A("10.0.0.2")][N("10.1.9.0/26")].next_hop == A("10.0.0.10")


def _mesh_with_tor(**tor_fields) -> tuple[Snapshot, dict]:
    """a and b in a mesh (AS 64512), a also peers with an external router over eBGP."""
    tor = BGPPeer(name="tor", peer_ip=A("10.0.0.254"), as_number=65000, node="a", **tor_fields)
    s = Snapshot(nodes={"a": node("a", "10.0.0.1/24", cidr="10.1.1.0/26"),
                        "b": node("b", "10.0.0.2/24", cidr="10.1.2.0/26")},
                 bgp_peers={"tor": tor},
                 ippools={"p": IPPool(name="p", cidr=N("10.1.0.0/16")),
                          "quiet": IPPool(name="quiet", cidr=N("10.9.0.0/16"), disable_bgp_export=True)})
    from_b = {N("10.1.2.0/26"): path("10.1.2.0/26", peer="10.0.0.2", local_pref=100, med=7),
              N("10.9.2.0/26"): path("10.9.2.0/26", peer="10.0.0.2"),
              N("192.168.5.0/24"): path("192.168.5.0/24", peer="10.0.0.2")}
    return s, from_b


def _out_of_a(s: Snapshot, best: dict) -> dict:
    peers = peer_set(s, "a")
    return adj_rib_out(local_speaker(s, "a"), peers, set(peers), own_prefixes(s, "a"), (), best,
                       exportable_pools(s))


def test_ebgp_peer_gets_other_nodes_blocks_with_this_node_as_next_hop() -> None:
    s, from_b = _mesh_with_tor()
    out = _out_of_a(s, from_b)
    assert out[A("10.0.0.254")] == {
        N("10.1.1.0/26"): Attributes(next_hop=A("10.0.0.1")),
        # a block learned from b: this node's next hop, MED and LOCAL_PREF left in the AS
        N("10.1.2.0/26"): Attributes(next_hop=A("10.0.0.1"), as_path=(64512,)),
    }                   # not the disableBGPExport pool's block, not a non-pool route
    assert out[A("10.0.0.2")] == {N("10.1.1.0/26"): Attributes(next_hop=A("10.0.0.1"))}   # iBGP: own only


def test_keep_original_next_hop_passes_the_originating_nodes_next_hop() -> None:
    s, from_b = _mesh_with_tor(keep_original_next_hop=True)
    peers = peer_set(s, "a")
    assert peers[A("10.0.0.254")].keep_original_next_hop
    out = _out_of_a(s, from_b)
    assert out[A("10.0.0.254")][N("10.1.2.0/26")] == Attributes(next_hop=A("10.0.0.2"), as_path=(64512,))
    assert out[A("10.0.0.254")][N("10.1.1.0/26")].next_hop == A("10.0.0.1")    # its own: itself


def test_routes_learned_over_ebgp_are_not_passed_on() -> None:
    s, _ = _mesh_with_tor(keep_original_next_hop=True)
    learned = {N("10.1.2.0/26"): path("10.1.2.0/26", peer="10.0.0.254", next_hop=A("10.0.0.2"),
                                      ebgp=True, as_path=(65000,))}
    assert set(_out_of_a(s, learned)[A("10.0.0.254")]) == {N("10.1.1.0/26")}


def test_disabled_pool_keeps_its_blocks_advertised_and_its_ipip_mode() -> None:
    off = IPPool(name="p", cidr=N("10.1.0.0/16"), ipip_mode=EncapMode.ALWAYS, disabled=True)
    s = Snapshot(nodes={"a": node("a", "10.0.0.1/24", cidr="10.1.0.0/26")}, ippools={"p": off})
    assert own_prefixes(s, "a") == (N("10.1.0.0/26"),)
    ctx = importer.ImportContext(local=IPv4Interface("10.0.0.2/24"), own_networks=(), pools={"p": off})
    assert importer.refusal(path("10.1.0.0/26", next_hop=A("10.0.0.1")), True, ctx) is None
    assert importer.install_mode(N("10.1.0.0/26"), A("10.0.0.1"), ctx) == (importer.InstallMode.IPIP, "p")


def test_disable_bgp_export_pool_is_not_advertised() -> None:
    s = Snapshot(nodes={"a": node("a", "10.0.0.1/24", cidr="10.1.0.0/26")},
                 ippools={"p": IPPool(name="p", cidr=N("10.1.0.0/16"), disable_bgp_export=True)})
    assert own_prefixes(s, "a") == ()


# --- import policy and install mode ----------------------------------------------------

POOLS = {"always": IPPool(name="always", cidr=N("10.1.0.0/16"), ipip_mode=EncapMode.ALWAYS),
         "cross": IPPool(name="cross", cidr=N("10.2.0.0/16"), ipip_mode=EncapMode.CROSS_SUBNET),
         "never": IPPool(name="never", cidr=N("10.3.0.0/16"), ipip_mode=EncapMode.NEVER),
         "off": IPPool(name="off", cidr=N("10.4.0.0/16"), disabled=True),
         "vxlan": IPPool(name="vxlan", cidr=N("10.5.0.0/16"), vxlan_mode=EncapMode.CROSS_SUBNET)}
CTX = importer.ImportContext(local=IPv4Interface("192.168.1.1/24"), own_networks=(N("10.1.0.0/26"),), pools=POOLS,
                             cluster_next_hops=frozenset({A("192.168.1.3")}))


@pytest.mark.parametrize("prefix,cluster,reason", [
    ("10.1.0.64/26", True, None),
    ("10.9.0.0/24", True, "outside every IPPool"),
    ("10.4.0.0/26", True, None),              # a disabled pool's blocks are still routed
    ("10.1.0.0/26", True, "overlaps this node's own"),
    ("10.1.0.0/25", True, "overlaps this node's own"),
    ("10.1.0.0/28", False, "overlaps this node's own"),
    ("192.168.1.1/32", False, "overlaps this node's own"),
    ("10.3.0.0/26", False, "inside IPPool 'never'"),
    ("0.0.0.0/0", False, None),
    ("172.16.0.0/12", False, None),
])
def test_import_filter(prefix: str, cluster: bool, reason: str | None) -> None:
    got = importer.refusal(path(prefix, peer="192.168.1.2"), cluster, CTX)
    assert (got is None) if reason is None else (reason in got)


def test_external_reflector_may_relay_pool_blocks_of_cluster_nodes() -> None:
    assert importer.refusal(path("10.3.0.0/26", peer="192.168.1.250", next_hop=A("192.168.1.3")), False, CTX) is None
    assert "no cluster node" in importer.refusal(path("10.3.0.0/26", peer="192.168.1.250",
                                                      next_hop=A("192.168.1.4")), False, CTX)


def test_next_hop_that_is_this_node_is_refused() -> None:
    assert "next hop" in importer.refusal(path("10.1.0.64/26", next_hop=A("192.168.1.1")), True, CTX)


@pytest.mark.parametrize("prefix,nh,mode", [
    ("10.1.1.0/26", "192.168.1.2", importer.InstallMode.IPIP),
    ("10.2.1.0/26", "192.168.1.2", importer.InstallMode.DIRECT),
    ("10.2.1.0/26", "192.168.7.2", importer.InstallMode.IPIP),
    ("10.3.1.0/26", "192.168.7.2", importer.InstallMode.DIRECT),
    ("172.16.0.0/12", "192.168.7.2", importer.InstallMode.DIRECT),
    ("10.5.1.0/26", "192.168.1.2", importer.InstallMode.VXLAN),     # felix carries VXLAN pools
    ("10.5.1.0/26", "192.168.7.2", importer.InstallMode.VXLAN),
    ("10.4.1.0/26", "192.168.1.2", importer.InstallMode.DIRECT),
])
def test_install_mode(prefix: str, nh: str, mode: importer.InstallMode) -> None:
    assert importer.install_mode(N(prefix), A(nh), CTX)[0] is mode


def test_max_prefix() -> None:
    assert importer.max_prefix_exceeded(11, 10) and not importer.max_prefix_exceeded(10, 10)
    assert not importer.max_prefix_exceeded(10**6, None)


# --- ExaBGP configuration and API text -------------------------------------------------

def test_config_text_writes_neighbors_in_full_with_base64_password() -> None:
    s = Snapshot(nodes={"a": node("a", "10.0.0.1/24"), "b": node("b", "10.0.0.2/24", asn=65002)},
                 bgp_configuration=BGPConfiguration(node_mesh_password=SecretKeyRef("bgp", "pw")),
                 secrets={("calyx-system", "bgp"): {"pw": 'we"ird; }'}})
    settings = exaconfig.ExaBGPSettings(bridge_argv=("/usr/bin/python3", "-m", "bgpd.exabgp.bridge", "/run/x.sock"))
    text = exaconfig.render(local_speaker(s, "a"), peer_set(s, "a"), settings)
    assert "run /usr/bin/python3 -m bgpd.exabgp.bridge /run/x.sock;" in text
    assert "neighbor 10.0.0.2 {" in text and "peer-as 65002;" in text and "local-as 64512;" in text
    assert "md5-password d2UiaXJkOyB9;" in text and "md5-base64 true;" in text and "weird" not in text
    assert "inherit" not in text and "graceful-restart 120;" in text and "manual-eor true;" in text
    env = exaconfig.environment(local_speaker(s, "a"), settings)
    assert env["exabgp.daemon.user"] == "root" and env["exabgp.tcp.bind"] == "10.0.0.1"


def test_source_address_none_leaves_the_local_address_to_the_kernel() -> None:
    nodes = (node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24", {"rack": "1"}))
    peers = (BGPPeer(name="tor", peer_ip=A("192.168.7.1"), as_number=65000, source_address="None"),
             BGPPeer(name="tor2", peer_ip=A("192.168.8.1"), as_number=65000),
             BGPPeer(name="rack", peer_selector=Selector.parse("rack == '1'"), source_address="None"))
    s = snap(*nodes, mesh=False, peers=peers)
    found = peer_set(s, "a")
    assert found[A("192.168.7.1")].local_address is None
    assert found[A("192.168.8.1")].local_address == A("10.0.0.1")       # UseNodeIP, the default
    assert found[A("10.0.0.2")].local_address is None                   # selector peers too
    settings = exaconfig.ExaBGPSettings(bridge_argv=("b",))
    text = exaconfig.render(local_speaker(s, "a"), found, settings)
    blocks = {b.split(" {", 1)[0]: b for b in text.split("neighbor ")[1:]}
    assert "local-address auto;" in blocks["192.168.7.1"] and "router-id 10.0.0.1;" in blocks["192.168.7.1"]
    assert "local-address 10.0.0.1;" in blocks["192.168.8.1"]
    # What this node originates goes with the session's own address ("self") as next hop.
    s = Snapshot(nodes={"a": node("a", "10.0.0.1/24", cidr="10.1.1.0/26"), "b": node("b", "10.0.0.2/24")},
                 bgp_peers={p.name: p for p in peers[:2]}, ippools={"p": IPPool(name="p", cidr=N("10.1.0.0/16"))})
    found = peer_set(s, "a")
    out = adj_rib_out(local_speaker(s, "a"), found, set(found), own_prefixes(s, "a"), (),
                      {N("10.1.2.0/26"): path("10.1.2.0/26", peer="10.0.0.2")}, exportable_pools(s))
    assert out[A("192.168.7.1")] == {N("10.1.1.0/26"): Attributes(next_hop=None),
                                     N("10.1.2.0/26"): Attributes(next_hop=None, as_path=(64512,))}
    assert out[A("192.168.8.1")][N("10.1.1.0/26")] == Attributes(next_hop=A("10.0.0.1"))
    lines = messages.update_lines(out, {})
    assert "neighbor 192.168.7.1 announce attributes next-hop self origin igp nlri 10.1.1.0/26" in lines


def test_peer_with_error_is_left_out_of_config() -> None:
    s = snap(node("a", "10.0.0.1/24"), node("b", "10.0.0.2/24"), node_mesh_password=SecretKeyRef("x", "y"))
    settings = exaconfig.ExaBGPSettings(bridge_argv=("b",))
    assert "neighbor" not in exaconfig.render(local_speaker(s, "a"), peer_set(s, "a"), settings)


def test_api_lines_roundtrip() -> None:
    line = ('{ "exabgp": "5.0.0", "type": "update", "neighbor": { "address": { "local": "10.0.0.1", '
            '"peer": "10.0.0.2" }, "direction": "receive", "message": { "update": { "attribute": { '
            '"origin": "igp", "as-path": {"0": {"element": "as-sequence", "value": [65000]}, "1": '
            '{"element": "as-set", "value": [1, 2]}}, "med": 5, "local-preference": 150, "community": '
            '[ [ 65000, 1 ] ], "originator-id": "3.3.3.3", "cluster-list": [ "4.4.4.4" ] }, "announce": '
            '{ "ipv4 unicast": { "10.0.0.9": [ { "nlri": "10.1.5.0/26" } ] } }, "withdraw": { "ipv4 unicast": '
            '[ { "nlri": "10.1.6.0/26" } ] } } } } }')
    ev = messages.parse_line(line)
    assert isinstance(ev, messages.UpdateEvent) and ev.peer == A("10.0.0.2")
    (prefix, attrs), = ev.announced
    assert prefix == N("10.1.5.0/26") and ev.withdrawn == (N("10.1.6.0/26"),)
    assert attrs == Attributes(next_hop=A("10.0.0.9"), as_path=(65000,), as_set=(1, 2), med=5, local_pref=150,
                               communities=("65000:1",), originator_id=A("3.3.3.3"), cluster_list=(A("4.4.4.4"),))
    out = messages.update_lines({A("10.0.0.5"): {N("10.1.5.0/26"): attrs, N("10.1.7.0/26"): attrs}}, {})
    assert out == ["neighbor 10.0.0.5 announce attributes next-hop 10.0.0.9 origin igp as-path [ 65000 ] ( 1 2 ) "
                   "local-preference 150 med 5 community [ 65000:1 ] originator-id 3.3.3.3 cluster-list [ 4.4.4.4 ] "
                   "nlri 10.1.5.0/26 10.1.7.0/26"]
    assert messages.parse_line("done") == messages.Ack(True)
    with pytest.raises(messages.MessageError, match="ExaBGP API line"):
        messages.parse_line("{not json")


def test_routes_going_to_several_peers_share_one_command() -> None:
    """ExaBGP parses a command once for every neighbor it names: the same route to three peers
    is one command, a route with other attributes (or to other peers) another."""
    own, reflected = Attributes(next_hop=A("10.0.0.1")), Attributes(next_hop=A("10.0.0.7"), originator_id=A("10.0.0.7"))
    a, b, c = A("10.0.0.2"), A("10.0.0.3"), A("10.0.0.4")
    block, other = N("10.1.1.0/26"), N("10.1.7.0/26")
    out = messages.update_lines({a: {block: own, other: reflected}, b: {block: own, other: reflected}, c: {block: own}},
                                {b: [N("10.1.9.0/26")], c: [N("10.1.9.0/26")]})
    assert out == [
        "neighbor 10.0.0.3 , neighbor 10.0.0.4 withdraw route 10.1.9.0/26",
        "neighbor 10.0.0.2 , neighbor 10.0.0.3 announce attributes next-hop 10.0.0.7 origin igp "
        "originator-id 10.0.0.7 nlri 10.1.7.0/26",
        "neighbor 10.0.0.2 , neighbor 10.0.0.3 , neighbor 10.0.0.4 announce attributes next-hop 10.0.0.1 origin igp "
        "nlri 10.1.1.0/26",
    ]


def test_explicit_cease_teardown_drops_graceful_restart_for_that_session_only() -> None:
    from bgpd.exabgp.launch import cease_with_notification

    from exabgp.reactor.delay import Delay

    class FakePeer:
        def __init__(self) -> None:
            self.neighbor = {"capability": {"graceful-restart": 120, "route-refresh": True}}
            self.calls: list[tuple[int, bool]] = []
            self._delay = Delay()

        def teardown(self, code: int, restart: bool = True) -> None:
            self.calls.append((code, restart))
            self._delay.reset()

    wrapped = cease_with_notification(FakePeer.teardown)
    reset, maxpfx = FakePeer(), FakePeer()
    shared = maxpfx.neighbor["capability"]
    wrapped(reset, 3)
    wrapped(maxpfx, 1)
    assert reset.neighbor["capability"]["graceful-restart"] == 120 and reset.calls == [(3, True)]
    assert maxpfx.neighbor["capability"] == {"graceful-restart": False, "route-refresh": True}
    assert maxpfx.calls == [(1, True)]
    assert shared["graceful-restart"] == 120      # the dict was replaced, never mutated
    # The session's close (ExaBGP's Delay.increase) leaves the torn-down neighbor waiting before
    # it reconnects; an administrative reset reconnects at once, as ExaBGP does.
    for peer in (reset, maxpfx):
        peer._delay.increase()
    assert not reset._delay.backoff()
    assert maxpfx._delay.backoff()


def test_negative_hold_down_is_refused() -> None:
    from calyx.config import ConfigError, load_config
    from bgpd.daemon import BgpdConfig
    with pytest.raises(ConfigError, match="max_prefix_hold_down: -1.0"):
        load_config(BgpdConfig, ["--max-prefix-hold-down", "-1"], prog="bgpd", description="")


# --- IPIP settle delay ---------------------------------------------------------------------

IPIP, DIRECT = importer.InstallMode.IPIP, importer.InstallMode.DIRECT


def wanted(prefix: str, nh: str, mode: importer.InstallMode) -> importer.InstallDecision:
    return importer.InstallDecision(prefix=N(prefix), next_hop=A(nh), mode=mode, pool="p", peer=A(nh))


def settle(decisions, installed, since=None, now=100.0, delay=5.0) -> importer.Settled:
    return importer.settle_ipip({d.prefix: d for d in decisions}, installed, since or {}, now, delay)


def test_installed_direct_route_moves_to_ipip_only_after_the_delay() -> None:
    want = wanted("10.1.1.0/26", "192.168.1.2", IPIP)
    have = {want.prefix: importer.Installed(DIRECT, A("192.168.1.2"))}
    first = settle([want], have, now=100.0)
    assert first.decisions[want.prefix].mode is DIRECT and first.decisions[want.prefix].ipip_at == 105.0
    assert first.wake_at == 105.0 and first.ipip_wanted_since == {want.prefix: 100.0}
    still = settle([want], have, first.ipip_wanted_since, now=104.9)
    assert still.decisions[want.prefix].mode is DIRECT and still.wake_at == 105.0
    due = settle([want], have, still.ipip_wanted_since, now=105.0)
    assert due.decisions[want.prefix] == want and due.wake_at is None


def test_a_failed_ipip_write_is_retried_without_a_new_delay() -> None:
    want = wanted("10.1.1.0/26", "192.168.1.2", IPIP)
    have = {want.prefix: importer.Installed(DIRECT, A("192.168.1.2"))}
    again = settle([want], have, {want.prefix: 100.0}, now=107.0)    # still direct in the kernel
    assert again.decisions[want.prefix] == want


def test_what_is_not_a_move_to_ipip_toward_the_same_node_is_not_delayed() -> None:
    fresh = wanted("10.1.1.0/26", "192.168.1.2", IPIP)                  # learned for the first time
    to_direct = wanted("10.1.2.0/26", "192.168.1.3", DIRECT)            # tunnel -> direct
    same = wanted("10.1.3.0/26", "192.168.1.4", IPIP)                   # already in IPIP
    moved = wanted("10.1.4.0/26", "192.168.7.5", IPIP)                  # block now behind another node
    installed = {to_direct.prefix: importer.Installed(IPIP, A("192.168.1.3")),
                 same.prefix: importer.Installed(IPIP, A("192.168.1.4")),
                 moved.prefix: importer.Installed(DIRECT, A("192.168.1.9"))}
    got = settle([fresh, to_direct, same, moved], installed)
    assert got.decisions == {d.prefix: d for d in (fresh, to_direct, same, moved)}
    assert got.wake_at is None and got.ipip_wanted_since == {}


def test_adopted_direct_route_of_unknown_next_hop_is_delayed() -> None:
    """bgpd restarted just after a switch to IPIP: the direct route it adopted may lead to a
    node whose tunl0 is not up yet."""
    want = wanted("10.1.1.0/26", "192.168.1.2", IPIP)
    got = settle([want], {want.prefix: importer.Installed(DIRECT, None)})
    assert got.decisions[want.prefix].mode is DIRECT and got.wake_at == 105.0


def test_cross_subnet_delays_only_the_next_hops_that_change_mode() -> None:
    """Never -> CrossSubnet: the node in this subnet stays direct, the remote one is delayed."""
    ctx = CTX
    local_nh, remote_nh = A("192.168.1.2"), A("192.168.7.2")
    best = {N("10.2.1.0/26"): path("10.2.1.0/26", next_hop=local_nh),
            N("10.2.2.0/26"): path("10.2.2.0/26", next_hop=remote_nh)}
    decisions = importer.decide(best, ctx)
    installed = {N("10.2.1.0/26"): importer.Installed(DIRECT, local_nh),
                 N("10.2.2.0/26"): importer.Installed(DIRECT, remote_nh)}
    got = importer.settle_ipip(decisions, installed, {}, 100.0, 5.0)
    assert got.decisions[N("10.2.1.0/26")] == decisions[N("10.2.1.0/26")]
    assert got.decisions[N("10.2.2.0/26")].mode is DIRECT and got.ipip_wanted_since == {N("10.2.2.0/26"): 100.0}


def test_a_prefix_wanted_direct_again_forgets_its_hold() -> None:
    back = wanted("10.1.1.0/26", "192.168.1.2", DIRECT)
    got = settle([back], {back.prefix: importer.Installed(DIRECT, A("192.168.1.2"))}, {back.prefix: 99.0})
    assert got.decisions[back.prefix] == back and got.ipip_wanted_since == {}


def test_zero_delay_installs_ipip_at_once() -> None:
    want = wanted("10.1.1.0/26", "192.168.1.2", IPIP)
    got = settle([want], {want.prefix: importer.Installed(DIRECT, A("192.168.1.2"))}, delay=0.0)
    assert got.decisions[want.prefix] == want


def test_felix_vxlan_route_keeps_carrying_a_block_moved_to_ipip_until_the_delay_ends() -> None:
    want = wanted("10.1.1.0/26", "192.168.1.2", IPIP)
    have = {want.prefix: importer.Installed(importer.InstallMode.VXLAN, None)}
    held = settle([want], have, now=100.0)
    assert held.decisions[want.prefix].mode is importer.InstallMode.VXLAN and held.wake_at == 105.0
    due = settle([want], have, held.ipip_wanted_since, now=105.0)
    assert due.decisions[want.prefix] == want
    direct = wanted("10.1.1.0/26", "192.168.1.2", DIRECT)       # to plain routing: at once
    assert settle([direct], have).decisions[direct.prefix] == direct
