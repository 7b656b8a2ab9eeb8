"""bgpd's sessions on an injected clock, without ExaBGP: graceful restart as a helper (stale
routes kept, refreshed, swept at End-of-RIB or when the restart time runs out), max-prefix
teardown and hold-down, and what each event marks for propagation."""
from __future__ import annotations

from ipaddress import IPv4Address as A, IPv4Interface, IPv4Network as N

from bgpd import importer
from bgpd.exabgp import messages as msg
from bgpd.peers import local_speaker, peer_set
from bgpd.rib import Attributes, Rib
from bgpd.sessions import Sessions
from calyx.model import BGPConfiguration, IPPool, NodeInfo, Snapshot

SNAPSHOT = Snapshot(
    nodes={n.name: n for n in (
        NodeInfo(name="a", bgp_address=IPv4Interface("10.0.0.1/24"), pod_cidrs=(N("10.1.1.0/26"),)),
        NodeInfo(name="b", bgp_address=IPv4Interface("10.0.0.2/24")))},
    bgp_configuration=BGPConfiguration(), ippools={"p": IPPool(name="p", cidr=N("10.1.0.0/16"))})
B = A("10.0.0.2")
CTX = importer.ImportContext(local=IPv4Interface("10.0.0.1/24"), own_networks=(N("10.1.1.0/26"),),
                             pools=dict(SNAPSHOT.ippools), cluster_next_hops=frozenset({B}))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sessions(max_prefixes: int | None = 100) -> tuple[Sessions, Clock]:
    clock = Clock()
    s = Sessions(Rib(), clock, max_prefixes=max_prefixes, max_prefix_hold_down=300.0)
    s.set_peers(peer_set(SNAPSHOT, "a"))
    s.set_import_policy(local_speaker(SNAPSHOT, "a"), CTX)
    s.take_dirty()
    return s, clock


def update(*prefixes: str, withdrawn: tuple[str, ...] = (), eor: bool = False) -> msg.UpdateEvent:
    return msg.UpdateEvent(B, announced=tuple((N(p), Attributes(next_hop=B)) for p in prefixes),
                           withdrawn=tuple(N(p) for p in withdrawn), end_of_rib=eor)


def up(s: Sessions, restart: int | None = 120) -> None:
    s.handle(msg.OpenEvent(B, router_id=B, hold_time=90, graceful_restart=restart))
    s.handle(msg.StateEvent(B, "up"))


def test_updates_mark_their_prefixes_and_a_new_session_its_whole_adj_rib_out() -> None:
    s, _ = sessions()
    up(s)
    s.handle(update("10.1.2.0/26", "10.9.0.0/24"))         # the second is outside every pool
    dirty = s.take_dirty()
    assert dirty.peers == {B} and dirty.prefixes == {N("10.1.2.0/26")} and not dirty.everything
    assert s.rib.count(B) == 1 and len(s[B].received) == 2
    assert "outside every IPPool" in s.verdict(s[B], s[B].received[N("10.9.0.0/24")])
    assert s.take_dirty().empty


def test_a_restarting_peer_keeps_its_routes_until_end_of_rib_sweeps_the_stale_ones() -> None:
    s, clock = sessions()
    up(s)
    s.handle(update("10.1.2.0/26", "10.1.3.0/26"))
    s.handle(msg.StateEvent(B, "down", "closing connection"))
    assert s[B].stale_until == clock.now + 120 and s.rib.count(B) == 2
    clock.now += 5
    up(s)
    s.take_dirty()
    s.handle(update("10.1.2.0/26"))
    s.handle(update(eor=True))
    assert s.take_dirty().prefixes == {N("10.1.3.0/26")}         # the refreshed one did not change
    assert list(s[B].received) == [N("10.1.2.0/26")] and s[B].stale_until is None


def test_a_peer_that_does_not_come_back_in_its_restart_time_is_forgotten() -> None:
    s, clock = sessions()
    up(s, restart=30)
    s.handle(update("10.1.2.0/26"))
    s.handle(msg.StateEvent(B, "down", "closing connection"))
    clock.now += 29
    s.tick()
    assert s.rib.count(B) == 1
    clock.now += 2
    s.tick()
    assert s.rib.count(B) == 0 and N("10.1.2.0/26") in s.take_dirty().prefixes


def test_without_graceful_restart_a_session_down_drops_its_routes_at_once() -> None:
    s, _ = sessions()
    up(s, restart=None)
    s.handle(update("10.1.2.0/26"))
    s.handle(msg.StateEvent(B, "down", "hold timer expired"))
    assert s.rib.count(B) == 0 and s[B].info == "hold timer expired"


def test_max_prefix_tears_down_holds_down_and_lets_the_peer_back_afterwards() -> None:
    s, clock = sessions(max_prefixes=2)
    up(s)
    actions = s.handle(update("10.1.2.0/26", "10.1.3.0/26", "10.1.4.0/26"))
    assert actions.lines == [msg.teardown_line(B, msg.CEASE_MAX_PREFIXES)] and actions.max_prefix_teardowns == 1
    assert s.rib.count(B) == 0 and "maximum prefixes exceeded (3 > 2)" in s[B].info
    assert s.tick().rewrite_config                         # out of ExaBGP's configuration
    assert B not in s.config_peers(clock.now)
    again = s.handle(msg.StateEvent(B, "up"))              # ExaBGP reconnected anyway
    assert again.lines and again.force_config
    assert s.handle(update("10.1.5.0/26")).lines == [] and s.rib.count(B) == 0
    clock.now += 301
    assert s.tick().rewrite_config and B in s.config_peers(clock.now) and s[B].info == ""


def test_a_new_import_policy_judges_everything_received_again() -> None:
    s, _ = sessions()
    up(s)
    s.handle(update("10.1.2.0/26"))
    s.take_dirty()
    narrower = importer.ImportContext(local=CTX.local, own_networks=CTX.own_networks, pools={},
                                      cluster_next_hops=CTX.cluster_next_hops)
    s.set_import_policy(local_speaker(SNAPSHOT, "a"), narrower)
    assert s.take_dirty().everything and s.rib.count(B) == 0


def test_a_password_problem_solved_leaves_no_stale_info() -> None:
    from dataclasses import replace
    s, _ = sessions()
    peer = s[B].peer
    broken = replace(peer, error="BGPConfiguration 'default' nodeMeshPassword: password.secretKeyRef.name: "
                                 "'bgp-mesh': Secret not found in 'calyx-system'")
    s.set_peers({B: broken})
    assert (s[B].state, s[B].info) == ("Idle", broken.error)
    s.set_peers({B: replace(peer, password="now-read")})
    assert s[B].info == ""          # configured now: what ExaBGP reports from here on fills INFO
    s.handle(msg.StateEvent(B, "down", reason="connection refused"))
    assert s[B].info == "connection refused"


def test_a_notification_we_sent_stays_the_info_through_the_reconnect_attempts() -> None:
    s, _ = sessions()
    up(s, restart=None)
    s.handle(update("10.1.2.0/26"))
    s.handle(msg.StateEvent(B, "down", "notification sent (3,1)"))     # a malformed UPDATE
    assert s[B].info == "NOTIFICATION sent: UPDATE message error subcode 1" and s.rib.count(B) == 0
    s.handle(msg.StateEvent(B, "connected"))
    s.handle(msg.StateEvent(B, "down", "closing connection"))        # the next attempt failed
    assert s[B].info == "NOTIFICATION sent: UPDATE message error subcode 1"
    s.handle(msg.StateEvent(B, "down", "hold timer expired"))        # news replaces it
    assert s[B].info == "hold timer expired"
