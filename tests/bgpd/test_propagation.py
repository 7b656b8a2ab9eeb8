"""bgpd's incremental propagation: after any sequence of UPDATEs, withdrawals, dropped peers and
re-established sessions, what each peer was sent and the install decisions equal a recompute
from scratch, and each pass touched only the prefixes that changed."""
from __future__ import annotations

from ipaddress import IPv4Address as A, IPv4Interface, IPv4Network as N

from hypothesis import given, settings
from hypothesis import strategies as st

from bgpd import importer
from bgpd.export import ExportPolicy, adj_rib_out
from bgpd.peers import local_speaker, peer_set
from bgpd.propagation import Dirty, Propagation
from bgpd.rib import Attributes, Path, Rib
from calyx.model import BGPConfiguration, BGPPeer, EncapMode, IPPool, NodeInfo, Snapshot
from calyx.selector import Selector

RR_PEER = BGPPeer(name="to-rr", node_selector=Selector.parse("all()"),
                  peer_selector=Selector.parse("route-reflector == 'true'"))
TOR = BGPPeer(name="tor", peer_ip=A("10.0.0.254"), as_number=65000)
POOL = IPPool(name="p", cidr=N("10.1.0.0/16"), ipip_mode=EncapMode.CROSS_SUBNET)


def node(name: str, ip: str, labels: dict | None = None, cid: str | None = None, cidr: str | None = None):
    return NodeInfo(name=name, labels=labels or {}, bgp_address=IPv4Interface(ip), rr_cluster_id=cid,
                    pod_cidrs=(N(cidr),) if cidr else ())


SNAPSHOT = Snapshot(
    nodes={n.name: n for n in (
        node("rr1", "10.0.0.10/24", {"route-reflector": "true"}, cid="224.0.0.1", cidr="10.1.9.0/26"),
        node("rr2", "10.0.0.11/24", {"route-reflector": "true"}, cid="224.0.0.1"),
        node("c1", "10.0.0.1/24"), node("c2", "10.0.0.2/24"), node("c3", "10.0.1.3/24"))},
    bgp_configuration=BGPConfiguration(node_to_node_mesh_enabled=False, service_cluster_ips=(N("10.96.0.0/12"),)),
    bgp_peers={"to-rr": RR_PEER, "tor": TOR}, ippools={"p": POOL})
PEERS = peer_set(SNAPSHOT, "rr1")
LOCAL = local_speaker(SNAPSHOT, "rr1")
POLICY = ExportPolicy(LOCAL, PEERS, frozenset({N("10.1.9.0/26")}), frozenset({N("10.96.0.0/12")}),
                      frozenset({POOL.cidr}))
CTX = importer.ImportContext(local=IPv4Interface("10.0.0.10/24"), own_networks=(N("10.1.9.0/26"),),
                             pools={"p": POOL})
ADDRESSES = sorted(PEERS)
PREFIXES = [N(f"10.1.{i}.0/26") for i in range(6)]

OPS = st.lists(st.one_of(
    st.tuples(st.just("announce"), st.sampled_from(ADDRESSES), st.sampled_from(PREFIXES), st.integers(0, 2)),
    st.tuples(st.just("withdraw"), st.sampled_from(ADDRESSES), st.sampled_from(PREFIXES), st.just(0)),
    st.tuples(st.just("drop"), st.sampled_from(ADDRESSES), st.just(PREFIXES[0]), st.just(0)),
    st.tuples(st.just("down"), st.sampled_from(ADDRESSES), st.just(PREFIXES[0]), st.just(0)),
    st.tuples(st.just("up"), st.sampled_from(ADDRESSES), st.just(PREFIXES[0]), st.just(0)),
), max_size=30)


def _path(peer: A, prefix: N, variant: int) -> Path:
    ebgp = PEERS[peer].ebgp
    return Path(prefix=prefix, attrs=Attributes(next_hop=peer, local_pref=100 + 10 * variant,
                                                as_path=(65000,) if ebgp else ()),
                peer=peer, peer_router_id=peer, ebgp=ebgp, peer_as=PEERS[peer].peer_as)


@settings(max_examples=300)
@given(OPS)
def test_incremental_equals_a_recompute_from_scratch(ops) -> None:
    rib = Rib()
    propagation = Propagation()
    established = set(ADDRESSES)
    announced: dict[A, dict] = {}
    dirty = Dirty()
    for op, peer, prefix, variant in ops + [("noop", ADDRESSES[0], PREFIXES[0], 0)]:
        if op == "announce":
            rib.update(_path(peer, prefix, variant))
            dirty.touch([prefix])
        elif op == "withdraw":
            rib.withdraw(peer, prefix)
            dirty.touch([prefix])
        elif op == "drop":
            dirty.touch(rib.drop_peer(peer))
        elif op == "down":
            established.discard(peer)
            announced.pop(peer, None)
        elif op == "up" and peer not in established:
            established.add(peer)
            dirty.peers.add(peer)
        touched = set() if dirty.everything else set(dirty.prefixes)
        whole = set(dirty.peers)
        changes = propagation.compute(rib, set(ADDRESSES), POLICY, CTX, established, announced, dirty)
        dirty = Dirty(everything=False)
        for address, change in changes.peers.items():
            assert change.announce or change.withdraw
            if not changes.full and address not in whole:
                assert set(change.announce) | set(change.withdraw) <= touched
            announced[address] = change.applied_to(announced.get(address, {}))
        best = rib.best_paths(set(ADDRESSES))
        expected = adj_rib_out(LOCAL, PEERS, established, tuple(POLICY.own), tuple(POLICY.services), best,
                               tuple(POLICY.pools))
        assert {a: r for a, r in announced.items() if r or expected.get(a)} == \
            {a: r for a, r in expected.items() if r or announced.get(a)}
        assert propagation.decisions == importer.decide(best, CTX)
        assert propagation.best == best


def test_an_idle_pass_does_nothing() -> None:
    rib = Rib()
    rib.update(_path(A("10.0.0.1"), PREFIXES[1], 0))
    propagation = Propagation()
    first = propagation.compute(rib, set(ADDRESSES), POLICY, CTX, set(ADDRESSES), {}, Dirty())
    assert first.decisions and first.peers
    again = propagation.compute(rib, set(ADDRESSES), POLICY, CTX, set(ADDRESSES),
                                {a: c.applied_to({}) for a, c in first.peers.items()}, Dirty(everything=False))
    assert again.peers == {} and again.decisions == {}
