"""When this speaker tells a peer it has sent everything: End-of-RIB as the restarting side of
graceful restart (RFC 4724 section 4.1).

Pure code. ExaBGP runs with ``manual-eor``: on its own it would send End-of-RIB as soon as a
session comes up, before bgpd has handed it a single route, and a peer helping us through a
restart would then drop the routes it kept for us and learn them again a moment later. bgpd
sends End-of-RIB to a peer once

* the whole Adj-RIB-Out of that peer has been handed to ExaBGP (nothing of it is pending), and
* when the peer is sent routes learned from other peers (a route reflector's clients, eBGP
  peers given the cluster's pool routes): every other configured session is established and
  has sent its own End-of-RIB, or the session has been up for ``deferral`` seconds (the
  selection deferral of RFC 4724 section 4.1, so one dead peer cannot hold the others' End-of-RIB
  back for longer than their restart time).

ExaBGP sends a queued End-of-RIB only once every route queued before it is on the wire.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import AbstractSet, Callable, Mapping

from bgpd.peers import Peer
from bgpd.session import Session


@dataclass(frozen=True)
class EndOfRibRule:
    deferral: float       # seconds a session waits at most for the other peers' End-of-RIB

    def due(self, table: Mapping[IPv4Address, Session], pending: AbstractSet[IPv4Address],
            passes_learned: Callable[[Peer], bool], now: float) -> list[IPv4Address]:
        """The established peers that get End-of-RIB now (each once per session)."""
        waiting = [a for a, s in table.items()
                   if s.established and not s.eor_sent and a not in pending and s.peer.error is None]
        if not waiting:
            return []
        out = []
        for address in waiting:
            s = table[address]
            if not passes_learned(s.peer) or now - s.since >= self.deferral or self._others_complete(table, address):
                out.append(address)
        return sorted(out)

    @staticmethod
    def _others_complete(table: Mapping[IPv4Address, Session], address: IPv4Address) -> bool:
        """Every other configured session is up and has sent us all its routes."""
        return all(s.established and s.eor for a, s in table.items()
                   if a != address and s.peer.error is None and s.held_until is None)
