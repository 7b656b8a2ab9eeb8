"""Which BFD sessions bfdd should have, what it reports about them, and when a BGP session
must go because its BFD session went down.

Pure code. The desired set follows the peers that want BFD (:attr:`bgpd.peers.Peer.bfd`). What
bfdd actually has is learned from its notifications (it reports every session when a client
subscribes, and every change after), so :meth:`BfdTracker.requests` is the difference to send:
adds for sessions missing or with other timers, deletes for sessions bgpd no longer wants
(those of a previous bgpd included). A BGP session is torn down only when its BFD session goes
from Up to Down on the same control connection (a fresh bfdd's sessions start Down, which says
nothing about the peer), and only when this side detected the failure. A Down the peer signalled
itself (diagnostic 3) is left alone: bfdd reports a peer's AdminDown (RFC 5882 section 3.2: not
a reason to tear down; a stopping bgpd sends it) that way, and a peer that detected a failure
closes the BGP session itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Mapping

from bgpd.bfd.protocol import (DIAG_ADMIN_DOWN, DIAG_NEIGHBOR_DOWN, DIAGNOSTICS, BfdPeer, BfdState, ConfigNotice,
                               StatusNotice)
from bgpd.peers import Peer

UNKNOWN = "unknown"     # BFD wanted, bfdd has not reported the session (yet)


@dataclass(frozen=True)
class BfdDown:
    """BFD declared ``peer`` dead: its BGP session goes now."""

    peer: IPv4Address
    reason: str


@dataclass(frozen=True)
class Requests:
    adds: tuple[BfdPeer, ...] = ()
    deletes: tuple[tuple[IPv4Address, IPv4Address | None], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.adds or self.deletes)


def desired_sessions(peers: Mapping[IPv4Address, Peer]) -> dict[IPv4Address, BfdPeer]:
    """The BFD sessions the configured peers want (a peer with a configuration error gets none)."""
    return {a: BfdPeer(peer=a, local=p.bfd.local_address, min_rx_ms=p.bfd.min_rx_ms, min_tx_ms=p.bfd.min_tx_ms,
                       multiplier=p.bfd.multiplier)
            for a, p in peers.items() if p.bfd is not None and p.error is None}


def diff(desired: Mapping[IPv4Address, BfdPeer], requested: Mapping[IPv4Address, BfdPeer],
         known: Mapping[IPv4Address, IPv4Address | None]) -> Requests:
    """Adds and deletes taking bfdd from what it has (``known``: peer -> local address, and what
    was already asked on this connection, ``requested``) to ``desired``."""
    adds = tuple(p for a, p in sorted(desired.items()) if requested.get(a) != p)
    deletes = []
    for address, local in sorted(known.items()):
        wanted = desired.get(address)
        if wanted is None or (local is not None and local != wanted.local):
            deletes.append((address, local))
    for address, asked in sorted(requested.items()):
        if address not in desired and address not in known:
            deletes.append((address, asked.local))
    return Requests(adds=adds, deletes=tuple(deletes))


class BfdTracker:
    def __init__(self) -> None:
        self.desired: dict[IPv4Address, BfdPeer] = {}
        self.connected = False
        self._requested: dict[IPv4Address, BfdPeer] = {}
        self._known: dict[IPv4Address, IPv4Address | None] = {}
        self._states: dict[IPv4Address, StatusNotice] = {}
        self._was_up: set[IPv4Address] = set()

    @property
    def wanted(self) -> bool:
        """bfdd should run: some peer wants BFD."""
        return bool(self.desired)

    def set_peers(self, peers: Mapping[IPv4Address, Peer]) -> None:
        self.desired = desired_sessions(peers)

    def channel_up(self) -> None:
        """A (new) control connection: bfdd will report what it has; nothing asked so far counts."""
        self.connected = True
        self._requested.clear()
        self._known.clear()
        self._states.clear()
        self._was_up.clear()

    def channel_down(self) -> None:
        self.connected = False
        self._states.clear()
        self._was_up.clear()

    def requests(self) -> Requests:
        """What to send bfdd now; recorded as sent."""
        if not self.connected:
            return Requests()
        wanted = diff(self.desired, self._requested, self._known)
        for p in wanted.adds:
            self._requested[p.peer] = p
        for address, local in wanted.deletes:
            if self._known.get(address) == local:
                self._known.pop(address, None)
            if address not in self.desired:
                self._requested.pop(address, None)
                self._states.pop(address, None)
                self._was_up.discard(address)
        return wanted

    def notice(self, notice: StatusNotice | ConfigNotice) -> BfdDown | None:
        if isinstance(notice, ConfigNotice):
            if notice.op == "delete":
                if self._known.get(notice.peer) == notice.local:
                    self._known.pop(notice.peer, None)
                    self._states.pop(notice.peer, None)
                    self._was_up.discard(notice.peer)
                wanted = self.desired.get(notice.peer)
                if wanted is not None and wanted.local == notice.local:
                    self._requested.pop(notice.peer, None)     # deleted behind our back: add again
            else:
                self._known[notice.peer] = notice.local
            return None
        wanted = self.desired.get(notice.peer)
        if wanted is not None and notice.local is not None and notice.local != wanted.local:
            self._known[notice.peer] = notice.local     # a stale session (old local address)
            return None
        self._known[notice.peer] = notice.local
        self._states[notice.peer] = notice
        if notice.state is BfdState.UP:
            self._was_up.add(notice.peer)
            return None
        if notice.peer not in self._was_up:
            return None
        self._was_up.discard(notice.peer)
        if notice.state is not BfdState.DOWN or wanted is None:
            return None
        if notice.remote_diagnostics == DIAG_ADMIN_DOWN or notice.diagnostics == DIAG_NEIGHBOR_DOWN:
            return None     # the peer said so itself (AdminDown, or it detected and acts on it)
        return BfdDown(peer=notice.peer, reason=f"BFD down ({describe(notice.diagnostics)})")

    def sent(self) -> list[BfdPeer]:
        """The sessions asked of bfdd on this connection."""
        return list(self._requested.values())

    def state(self, address: IPv4Address) -> str:
        """The BFD state shown for a peer: '' without BFD, 'unknown' before bfdd reported it."""
        if address not in self.desired:
            return ""
        notice = self._states.get(address)
        return notice.state.value if notice is not None and self.connected else UNKNOWN

    def info(self, address: IPv4Address) -> str:
        """A line for the operator when BFD is wanted but not up."""
        if address not in self.desired:
            return ""
        if not self.connected:
            return "BFD: bfdd not connected"
        notice = self._states.get(address)
        if notice is None or notice.state is BfdState.UP:
            return ""
        return f"BFD {notice.state.value} ({describe(notice.diagnostics)})"


def describe(diagnostics: int) -> str:
    return DIAGNOSTICS.get(diagnostics, f"diagnostic {diagnostics}")
