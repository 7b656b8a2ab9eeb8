"""When bgpd sends End-of-RIB to a peer (graceful restart's restarting side), on plain
sessions: only once a session's whole Adj-RIB-Out is handed over, once per session, and toward
peers given learned routes only after the other peers' End-of-RIB or the selection deferral."""
from __future__ import annotations

from ipaddress import IPv4Address as A

from bgpd.endofrib import EndOfRibRule
from bgpd.peers import Peer, PeerType
from bgpd.session import Session

RULE = EndOfRibRule(deferral=60.0)
MESH, CLIENT, DOWN = A("10.0.0.2"), A("10.0.0.3"), A("10.0.0.4")


def session(address: A, *, up: bool = True, eor: bool = False, since: float = 1000.0,
            client: bool = False, error: str | None = None) -> Session:
    peer = Peer(address=address, peer_as=64512, local_address=A("10.0.0.1"), local_as=64512,
                peer_type=PeerType.RR_CLIENT if client else PeerType.MESH, source="mesh",
                rr_client=client, error=error)
    return Session(peer=peer, state="Established" if up else "Active", since=since, eor=eor)


def reflects(peer: Peer) -> bool:
    return peer.rr_client


def test_a_mesh_peer_gets_end_of_rib_once_its_routes_are_handed_over():
    table = {MESH: session(MESH)}
    assert RULE.due(table, pending={MESH}, passes_learned=reflects, now=1001.0) == []
    assert RULE.due(table, pending=set(), passes_learned=reflects, now=1001.0) == [MESH]
    table[MESH].eor_sent = True
    assert RULE.due(table, pending=set(), passes_learned=reflects, now=1001.0) == []


def test_sessions_not_up_or_misconfigured_get_nothing():
    table = {MESH: session(MESH, up=False), CLIENT: session(CLIENT, error="bad AS")}
    assert RULE.due(table, pending=set(), passes_learned=reflects, now=2000.0) == []


def test_a_client_waits_for_the_other_peers_end_of_rib():
    table = {CLIENT: session(CLIENT, client=True), MESH: session(MESH)}
    assert RULE.due(table, pending=set(), passes_learned=reflects, now=1001.0) == [MESH]
    table[MESH].eor = True
    assert RULE.due(table, pending=set(), passes_learned=reflects, now=1001.0) == [MESH, CLIENT]


def test_a_dead_peer_holds_a_client_back_no_longer_than_the_deferral():
    table = {CLIENT: session(CLIENT, client=True), DOWN: session(DOWN, up=False)}
    assert RULE.due(table, pending=set(), passes_learned=reflects, now=1059.0) == []
    assert RULE.due(table, pending=set(), passes_learned=reflects, now=1060.0) == [CLIENT]
