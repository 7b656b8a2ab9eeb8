"""Every BGP session of one speaker and the Adj-RIB-In they feed.

Pure code. ExaBGP's session events (state, OPEN, NOTIFICATION, UPDATE, End-of-RIB) are applied
to each :class:`~bgpd.session.Session` and to the :class:`~bgpd.rib.Rib`: the import policy
decides what enters the RIB, graceful restart is honoured as a helper (a restarting peer's
routes are kept stale for its restart time, refreshed when it comes back, swept at its
End-of-RIB or when the time runs out), a peer exceeding ``max_prefixes`` is torn down and held
down, and the session table follows the configured peer set. Every prefix whose paths changed
is recorded in :attr:`Sessions.dirty` for :mod:`bgpd.propagation`; what must be said to ExaBGP
comes back as :class:`Actions` for the speaker to perform.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Callable, Mapping

from calyx.logs import get_logger

from bgpd import importer
from bgpd.exabgp import messages as msg
from bgpd.importer import ImportContext
from bgpd.peers import LocalSpeaker, Peer
from bgpd.propagation import Dirty
from bgpd.rib import Path, Rib, loop_reason
from bgpd.session import RECONNECT_NOISE, Session, describe_down_reason, describe_notification

log = get_logger("bgpd.sessions")


@dataclass
class Actions:
    """What the speaker must do with ExaBGP after an event."""

    lines: list[str] = field(default_factory=list)    # API commands to send
    rewrite_config: bool = False                      # the neighbors ExaBGP should have changed
    force_config: bool = False                        # ... and ExaBGP must reload even if the text is equal
    max_prefix_teardowns: int = 0

    def merge(self, other: "Actions") -> None:
        self.lines += other.lines
        self.rewrite_config |= other.rewrite_config
        self.force_config |= other.force_config
        self.max_prefix_teardowns += other.max_prefix_teardowns


class Sessions:
    def __init__(self, rib: Rib, clock: Callable[[], float], max_prefixes: int | None,
                 max_prefix_hold_down: float) -> None:
        self.rib = rib
        self._clock = clock
        self._max_prefixes = max_prefixes
        self._hold_down = max_prefix_hold_down
        self.table: dict[IPv4Address, Session] = {}
        self.dirty = Dirty()
        self._local: LocalSpeaker | None = None
        self._ctx: ImportContext | None = None

    # --- views -------------------------------------------------------------------------------

    def __getitem__(self, address: IPv4Address) -> Session:
        return self.table[address]

    def peers(self) -> dict[IPv4Address, Peer]:
        return {a: s.peer for a, s in self.table.items()}

    def established(self) -> set[IPv4Address]:
        return {a for a, s in self.table.items() if s.established}

    def all_up_with_end_of_rib(self) -> bool:
        """Every correctly configured session is established and has sent End-of-RIB."""
        configured = [s for s in self.table.values() if s.peer.error is None]
        return bool(configured) and all(s.established and s.eor for s in configured)

    def take_dirty(self) -> Dirty:
        """What changed since the previous call."""
        dirty, self.dirty = self.dirty, Dirty(everything=False)
        return dirty

    def verdict(self, s: Session, path: Path) -> str | None:
        """Why ``path`` from ``s`` stays out of the RIB, or None when it is accepted."""
        local, ctx = self._local, self._ctx
        if local is None or ctx is None:
            return "bgpd is not configured yet"
        why = loop_reason(path.attrs, local.router_id, local.cluster_id, local.as_number, path.ebgp)
        if why is not None:
            return why
        return importer.refusal(path, s.peer.is_cluster_node, ctx)

    def config_peers(self, now: float) -> dict[IPv4Address, Peer]:
        """The neighbors ExaBGP should have now: all but those held down for max-prefix."""
        peers = {a: s.peer for a, s in self.table.items() if s.held_until is None or s.held_until <= now}
        for s in self.table.values():
            s.held_in_config = s.peer.address in peers
        return peers

    # --- configuration -------------------------------------------------------------------------

    def set_import_policy(self, local: LocalSpeaker, ctx: ImportContext) -> None:
        """A new import policy: every received path is judged again, everything is recomputed."""
        self._local, self._ctx = local, ctx
        self.dirty.everything = True
        for s in self.table.values():
            for path in s.received.values():
                self._consider(s, path)

    def set_peers(self, peers: Mapping[IPv4Address, Peer]) -> None:
        now = self._clock()
        for address in list(self.table):
            if address not in peers:
                log.info("peer_removed", peer=str(address))
                self.dirty.touch(self.rib.drop_peer(address))
                del self.table[address]
        for address, peer in peers.items():
            s = self.table.get(address)
            if s is None:
                self.table[address] = Session(peer=peer, since=now, info=peer.error or "")
                log.info("peer_added", peer=str(address), type=peer.peer_type.value, source=peer.source,
                         asn=peer.peer_as)
            else:
                if s.peer.error and not peer.error and s.info == s.peer.error:
                    s.info = ""     # the problem is solved (a Secret read): ExaBGP's reports follow
                s.peer = replace(peer)
                if peer.error:
                    s.info = peer.error
                    s.state = "Idle"

    # --- ExaBGP ------------------------------------------------------------------------------

    def exabgp_connected(self) -> None:
        """A fresh API channel: ExaBGP knows nothing we announced."""
        for s in self.table.values():
            s.announced = {}
        self.dirty.peers.update(self.table)

    def exabgp_exited(self, code: int) -> None:
        for address, s in self.table.items():
            self._session_down(address, s, f"ExaBGP exited with code {code}; restarting")

    def handle(self, event: msg.PeerEvent) -> Actions:
        actions = Actions()
        s = self.table.get(event.peer)
        if s is None:
            return actions
        if isinstance(event, msg.StateEvent):
            if event.state == "up" and s.held_until is not None:
                # Held down for max-prefix but ExaBGP reconnected: close it again and make sure
                # the neighbor is out of ExaBGP's configuration.
                actions.lines.append(msg.teardown_line(event.peer, msg.CEASE_MAX_PREFIXES))
                actions.rewrite_config = actions.force_config = True
            elif event.state == "up":
                s.state, s.since, s.info, s.md5_hint = "Established", self._clock(), "", ""
                s.eor, s.eor_sent, s.refreshed, s.announced = False, False, set(), {}
                self.dirty.peers.add(event.peer)
                log.info("session_established", peer=str(event.peer), type=s.peer.peer_type.value)
            elif event.state == "connected":
                if not s.established:
                    s.state = "Connect"
            elif event.state == "down":
                self._session_down(event.peer, s, event.reason)
                if s.reload_when_down:
                    s.reload_when_down = False
                    actions.rewrite_config = actions.force_config = True
                if s.held_until is not None and s.held_in_config:
                    actions.rewrite_config = True     # out of ExaBGP's configuration before it reconnects
        elif isinstance(event, msg.OpenEvent):
            s.router_id = event.router_id
            s.peer_restart_time = event.graceful_restart
        elif isinstance(event, msg.NotificationEvent):
            s.info = f"NOTIFICATION {event.direction}: {describe_notification(event.code, event.subcode)}"
            log.warning("bgp_notification", peer=str(event.peer), direction=event.direction,
                        code=event.code, subcode=event.subcode)
        elif isinstance(event, msg.UpdateEvent):
            actions.merge(self._update(event, s))
        return actions

    def peer_dead(self, address: IPv4Address, reason: str) -> Actions:
        """A failure detector (BFD) declared the peer dead: close the session and drop its
        routes now, with no graceful-restart retention (the peer is gone, not restarting).
        Once ExaBGP reports the session down it reloads, so the neighbor gets back the graceful
        restart an explicit teardown takes away (:mod:`bgpd.exabgp.launch`)."""
        s = self.table.get(address)
        if s is None:
            return Actions()
        log.warning("peer_declared_dead", peer=str(address), reason=reason, was=s.state,
                    routes_dropped=len(s.received))
        actions = Actions()
        if s.established:
            s.since = self._clock()
            s.reload_when_down = True
            actions.lines.append(msg.teardown_line(address, msg.CEASE_BFD_DOWN))
        s.state, s.announced, s.info = "Active", {}, reason
        self._forget_peer(address, s)
        return actions

    # --- timers ------------------------------------------------------------------------------

    def tick(self) -> Actions:
        """Hold-downs that ended, graceful-restart times that ran out."""
        now = self._clock()
        actions = Actions()
        for s in self.table.values():
            if s.held_until is not None and s.held_until <= now:
                log.info("max_prefix_hold_down_over", peer=str(s.peer.address))
                s.held_until, s.info = None, ""
                actions.rewrite_config = True
            elif s.held_until is not None and s.held_in_config:
                actions.rewrite_config = True
        for address, s in self.table.items():
            if s.stale_until is not None and now >= s.stale_until and not s.established:
                log.info("graceful_restart_expired", peer=str(address))
                self._forget_peer(address, s)
            elif s.stale_until is not None and now >= s.stale_until:
                self._sweep_stale(address, s)
        return actions

    # --- internals ---------------------------------------------------------------------------

    def _session_down(self, address: IPv4Address, s: Session, reason: str) -> None:
        was_up = s.established
        s.state, s.announced, s.eor_sent = "Active", {}, False
        reason = describe_down_reason(reason)
        if reason and s.held_until is None:
            # A NOTIFICATION (sent or received) stays the session's INFO through the failed
            # reconnect attempts that follow it, which carry no reason of their own.
            keep = s.info.startswith("NOTIFICATION") and reason in RECONNECT_NOISE
            s.info = s.info if keep else reason
        if was_up:
            s.since = self._clock()
            log.info("session_down", peer=str(address), reason=reason)
        restart = s.peer_restart_time or 0
        if was_up and restart > 0 and s.received:
            s.stale_until = self._clock() + restart
            log.info("graceful_restart_helper", peer=str(address), keep_seconds=restart)
        elif s.stale_until is None:
            self._forget_peer(address, s)

    def _forget_peer(self, address: IPv4Address, s: Session) -> None:
        s.received.clear()
        s.refreshed.clear()
        s.stale_until = None
        self.dirty.touch(self.rib.drop_peer(address))

    def _sweep_stale(self, address: IPv4Address, s: Session) -> None:
        for prefix in s.stale_prefixes():
            del s.received[prefix]
            self.rib.withdraw(address, prefix)
            self.dirty.prefixes.add(prefix)
        s.stale_until = None

    def _update(self, event: msg.UpdateEvent, s: Session) -> Actions:
        peer = s.peer
        if s.held_until is not None:
            return Actions()      # torn down for max-prefix; what it still sends is ignored
        if event.end_of_rib:
            s.eor = True
            if s.stale_until is not None:
                self._sweep_stale(peer.address, s)
            return Actions()
        for prefix in event.withdrawn:
            s.received.pop(prefix, None)
            s.refreshed.discard(prefix)
            self.rib.withdraw(peer.address, prefix)
            self.dirty.prefixes.add(prefix)
        router_id = s.router_id or peer.address
        for prefix, attrs in event.announced:
            path = Path(prefix=prefix, attrs=attrs, peer=peer.address, peer_router_id=router_id,
                        ebgp=peer.ebgp, peer_as=peer.peer_as)
            s.received[prefix] = path
            s.refreshed.add(prefix)
            self._consider(s, path)
        limit = self._max_prefixes
        if not importer.max_prefix_exceeded(len(s.received), limit):
            return Actions()
        count = len(s.received)
        log.error("max_prefixes_exceeded", peer=str(peer.address), received=count, limit=limit)
        self._forget_peer(peer.address, s)
        s.held_until = self._clock() + self._hold_down
        s.held_in_config = True     # removed from ExaBGP's configuration at the next tick
        s.info = (f"maximum prefixes exceeded ({count} > {limit}); session torn down, held down "
                  f"for {int(self._hold_down)}s")
        return Actions(lines=[msg.teardown_line(peer.address, msg.CEASE_MAX_PREFIXES)], max_prefix_teardowns=1)

    def _consider(self, s: Session, path: Path) -> None:
        if self.verdict(s, path) is None:
            changed = self.rib.update(path)
        else:
            changed = self.rib.withdraw(path.peer, path.prefix)
        if changed:
            self.dirty.prefixes.add(path.prefix)
