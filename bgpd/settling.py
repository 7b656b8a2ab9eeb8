"""The IPIP settle delay kept from one pass to the next: wanted decisions -> the decisions to
install now, touching only the prefixes that changed and those held back.

Pure code around :func:`bgpd.importer.settle_ipip` (which says why a move to IPIP waits).
:class:`Settling` remembers, per prefix, since when IPIP is wanted for a route still installed
direct, and when the earliest hold ends (the speaker's loop wakes then).
"""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import Callable, Iterable, Mapping

from bgpd import importer
from bgpd.importer import InstallDecision, Installed


class Settling:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.decisions: dict[IPv4Network, InstallDecision] = {}     # what to install now
        self._since: dict[IPv4Network, float] = {}
        self._held: set[IPv4Network] = set()

    @property
    def wake_at(self) -> float | None:
        """When the earliest hold ends (None: nothing held)."""
        due = [self.decisions[p].ipip_at for p in self._held]
        return min(due) if due else None      # type: ignore[type-var]

    def update(self, wanted: Mapping[IPv4Network, InstallDecision], prefixes: Iterable[IPv4Network] | None,
               installed: Callable[[IPv4Network], Installed | None], now: float
               ) -> tuple[set[IPv4Network], list[IPv4Network]]:
        """Settle ``prefixes`` (None: every prefix) plus those held or waiting; returns the
        prefixes whose decision to install changed, and those newly held back."""
        if prefixes is None:
            scope = set(wanted) | set(self.decisions)
        else:
            scope = set(prefixes) | self._held | set(self._since)
        subset = {p: wanted[p] for p in scope if p in wanted}
        have = {p: h for p in scope if (h := installed(p)) is not None}
        since = {p: self._since[p] for p in scope if p in self._since}
        settled = importer.settle_ipip(subset, have, since, now, self.delay)
        changed: set[IPv4Network] = set()
        newly: list[IPv4Network] = []
        for prefix in scope:
            self._since.pop(prefix, None)
            decision = settled.decisions.get(prefix)
            if decision is not None and decision.ipip_at is not None:
                if prefix not in self._held:
                    newly.append(prefix)
                self._held.add(prefix)
            else:
                self._held.discard(prefix)
            if self.decisions.get(prefix) != decision:
                changed.add(prefix)
                if decision is None:
                    del self.decisions[prefix]
                else:
                    self.decisions[prefix] = decision
        self._since.update(settled.ipip_wanted_since)
        return changed, sorted(newly)
