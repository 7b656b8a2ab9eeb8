"""The incremental middle of bgpd: changed prefixes -> best paths -> what each peer is sent and
what the kernel should hold.

Pure code. The speaker records which prefixes an event touched (an UPDATE's announcements and
withdrawals, a peer's routes dropped, a graceful-restart sweep) and which peers need their whole
Adj-RIB-Out again (a session just established, ExaBGP reconnected); a change of policy (the
snapshot changed this node, its peers, pools or originated prefixes) asks for everything.
:meth:`Propagation.compute` then does work in proportion to what changed: best-path selection,
export to each established peer and the install decision, for those prefixes only. An idle
pass does nothing.

The result equals recomputing everything from scratch (:func:`bgpd.export.adj_rib_out`,
:func:`bgpd.importer.decide` over :meth:`bgpd.rib.Rib.best_paths`); the unit tests check it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import AbstractSet, Iterable, Mapping

from bgpd import importer
from bgpd.export import ExportPolicy
from bgpd.importer import ImportContext, InstallDecision
from bgpd.rib import Attributes, Path, Rib


@dataclass
class Dirty:
    """What changed since the last pass."""

    everything: bool = True                                   # policy changed (or first pass)
    prefixes: set[IPv4Network] = field(default_factory=set)   # paths changed for these
    peers: set[IPv4Address] = field(default_factory=set)      # these need their whole Adj-RIB-Out

    def touch(self, prefixes: Iterable[IPv4Network]) -> None:
        self.prefixes.update(prefixes)

    @property
    def empty(self) -> bool:
        return not self.everything and not self.prefixes and not self.peers


@dataclass(frozen=True)
class PeerChanges:
    """What to send one peer: announcements (prefix -> attributes) and withdrawals."""

    announce: dict[IPv4Network, Attributes]
    withdraw: tuple[IPv4Network, ...]

    def applied_to(self, sent: Mapping[IPv4Network, Attributes]) -> dict[IPv4Network, Attributes]:
        """What the peer holds from us once these changes are sent."""
        withdrawn = set(self.withdraw)
        out = {p: a for p, a in sent.items() if p not in withdrawn}
        out.update(self.announce)
        return out


@dataclass(frozen=True)
class Changes:
    peers: dict[IPv4Address, PeerChanges]
    decisions: dict[IPv4Network, InstallDecision | None]      # None: nothing to install any more
    full: bool = False                                        # decisions is the whole set


class Propagation:
    """Best paths and install decisions, kept from one pass to the next."""

    def __init__(self) -> None:
        self.best: dict[IPv4Network, Path] = {}
        self.decisions: dict[IPv4Network, InstallDecision] = {}

    def compute(self, rib: Rib, eligible: AbstractSet[IPv4Address], policy: ExportPolicy,
                ctx: ImportContext | None, established: AbstractSet[IPv4Address],
                announced: Mapping[IPv4Address, Mapping[IPv4Network, Attributes]], dirty: Dirty) -> Changes:
        """The changes ``dirty`` makes. ``announced`` is what each peer was sent so far."""
        if dirty.everything:
            prefixes: set[IPv4Network] = set(rib.prefixes()) | set(self.best)
        else:
            prefixes = set(dirty.prefixes)
        decisions: dict[IPv4Network, InstallDecision | None] = {}
        candidates = set(eligible)
        for prefix in prefixes:
            best = rib.best(prefix, candidates)
            if best is None:
                self.best.pop(prefix, None)
            else:
                self.best[prefix] = best
            decision = importer.decision(best, ctx) if best is not None and ctx is not None else None
            if self.decisions.get(prefix) != decision:
                decisions[prefix] = decision
                if decision is None:
                    self.decisions.pop(prefix, None)
                else:
                    self.decisions[prefix] = decision
        peers: dict[IPv4Address, PeerChanges] = {}
        for address, target in policy.peers.items():
            if address not in established or target.error is not None:
                continue
            sent = announced.get(address, {})
            if dirty.everything or address in dirty.peers:
                routes = policy.full(target, self.best)
                changes = PeerChanges(
                    announce={p: a for p, a in routes.items() if sent.get(p) != a},
                    withdraw=tuple(sorted(p for p in sent if p not in routes)))
            else:
                announce: dict[IPv4Network, Attributes] = {}
                withdraw: list[IPv4Network] = []
                for prefix in prefixes:     # what this node originates changes only with policy
                    attrs = policy.export(target, prefix, self.best.get(prefix))
                    if attrs is None:
                        if prefix in sent:
                            withdraw.append(prefix)
                    elif sent.get(prefix) != attrs:
                        announce[prefix] = attrs
                changes = PeerChanges(announce=announce, withdraw=tuple(sorted(withdraw)))
            if changes.announce or changes.withdraw:
                peers[address] = changes
        return Changes(peers=peers, decisions=decisions, full=dirty.everything)
