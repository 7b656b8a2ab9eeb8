"""BGP routing information: path attributes, the Adj-RIB-In per peer and best-path selection.

Pure code. ExaBGP keeps no RIB of what it receives, so bgpd keeps it here: every UPDATE
decoded from ExaBGP's JSON becomes :meth:`Rib.update` / :meth:`Rib.withdraw`, a session going
down becomes :meth:`Rib.drop_peer`, and the best path per prefix feeds the importer (install)
and, on a route reflector, the reflector (re-advertise).

Best path, in order (RFC 4271 9.1.2.2 with RFC 4456 tie-breaks, as BIRD/FRR do):
highest LOCAL_PREF (100 when absent), shortest AS_PATH, lowest ORIGIN, lowest MED (compared
between paths from the same neighbouring AS; absent = 0), eBGP over iBGP, lowest
ORIGINATOR_ID-or-router-ID, shortest CLUSTER_LIST, lowest peer address.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Iterable, Iterator, Mapping

DEFAULT_LOCAL_PREF = 100


class Origin(enum.IntEnum):
    IGP = 0
    EGP = 1
    INCOMPLETE = 2


@dataclass(frozen=True)
class Attributes:
    """The path attributes bgpd understands and carries through reflection."""

    next_hop: IPv4Address | None             # None only in what bgpd sends: the session's own address
    origin: Origin = Origin.IGP
    as_path: tuple[int, ...] = ()            # AS_SEQUENCE
    as_set: tuple[int, ...] = ()             # a trailing AS_SET (aggregates), counts as one
    local_pref: int | None = None
    med: int | None = None
    communities: tuple[str, ...] = ()
    originator_id: IPv4Address | None = None
    cluster_list: tuple[IPv4Address, ...] = ()


@dataclass(frozen=True)
class Path:
    """A route as received from one peer."""

    prefix: IPv4Network
    attrs: Attributes
    peer: IPv4Address
    peer_router_id: IPv4Address
    ebgp: bool
    peer_as: int = 0


def loop_reason(attrs: Attributes, router_id: IPv4Address, cluster_id: IPv4Address | None,
                local_as: int, ebgp: bool) -> str | None:
    """Why a received path must be dropped (RFC 4456 section 8, RFC 4271 9.1.2), or None."""
    if attrs.originator_id is not None and attrs.originator_id == router_id:
        return f"ORIGINATOR_ID {attrs.originator_id} is our router ID"
    if cluster_id is not None and cluster_id in attrs.cluster_list:
        return f"CLUSTER_LIST contains our cluster ID {cluster_id}"
    if ebgp and (local_as in attrs.as_path or local_as in attrs.as_set):
        return f"AS_PATH contains our AS {local_as}"
    return None


def _first_as(path: Path) -> int:
    return path.attrs.as_path[0] if path.attrs.as_path else 0


def _rank(path: Path) -> tuple:
    a = path.attrs
    return (
        -(a.local_pref if a.local_pref is not None else DEFAULT_LOCAL_PREF),
        len(a.as_path) + (1 if a.as_set else 0),
        int(a.origin),
        # MED placed after the neighbour AS so it is only decisive between paths sharing it;
        # best_path applies it only within such a group (see below).
        0 if path.ebgp else 1,
        int(a.originator_id if a.originator_id is not None else path.peer_router_id),
        len(a.cluster_list),
        int(path.peer),
    )


def best_path(paths: Iterable[Path]) -> Path | None:
    """The best of ``paths`` (see the module docstring), or None when there are none."""
    candidates = list(paths)
    if not candidates:
        return None
    # MED: among paths from the same neighbouring AS, keep only those with the lowest MED
    # when they tie on the steps that come before MED.
    def pre_med(p: Path) -> tuple:
        return _rank(p)[:3]
    best_pre = min(pre_med(p) for p in candidates)
    contenders = [p for p in candidates if pre_med(p) == best_pre]
    lowest_med: dict[int, int] = {}
    for p in contenders:
        med = p.attrs.med or 0
        asn = _first_as(p)
        lowest_med[asn] = min(med, lowest_med.get(asn, med))
    contenders = [p for p in contenders if (p.attrs.med or 0) == lowest_med[_first_as(p)]]
    return min(contenders, key=_rank)


class Rib:
    """Adj-RIB-In of every peer, and the best path per prefix across them."""

    def __init__(self) -> None:
        self._in: dict[IPv4Address, dict[IPv4Network, Path]] = {}
        self._by_prefix: dict[IPv4Network, dict[IPv4Address, Path]] = {}

    def update(self, path: Path) -> bool:
        """Store ``path``; True when it changed what this peer had for the prefix."""
        peer_rib = self._in.setdefault(path.peer, {})
        if peer_rib.get(path.prefix) == path:
            return False
        peer_rib[path.prefix] = path
        self._by_prefix.setdefault(path.prefix, {})[path.peer] = path
        return True

    def withdraw(self, peer: IPv4Address, prefix: IPv4Network) -> bool:
        peer_rib = self._in.get(peer)
        if not peer_rib or prefix not in peer_rib:
            return False
        del peer_rib[prefix]
        paths = self._by_prefix[prefix]
        del paths[peer]
        if not paths:
            del self._by_prefix[prefix]
        return True

    def drop_peer(self, peer: IPv4Address) -> set[IPv4Network]:
        """Forget everything ``peer`` sent; returns the affected prefixes."""
        prefixes = set(self._in.pop(peer, {}))
        for prefix in prefixes:
            paths = self._by_prefix[prefix]
            paths.pop(peer, None)
            if not paths:
                del self._by_prefix[prefix]
        return prefixes

    def count(self, peer: IPv4Address) -> int:
        return len(self._in.get(peer, {}))

    def peers(self) -> list[IPv4Address]:
        return sorted(self._in)

    def paths_from(self, peer: IPv4Address) -> Mapping[IPv4Network, Path]:
        return dict(self._in.get(peer, {}))

    def prefixes(self) -> Iterator[IPv4Network]:
        return iter(sorted(self._by_prefix))

    def best(self, prefix: IPv4Network, eligible: set[IPv4Address] | None = None) -> Path | None:
        paths = self._by_prefix.get(prefix, {})
        if eligible is not None:
            return best_path(p for peer, p in paths.items() if peer in eligible)
        return best_path(paths.values())

    def best_paths(self, eligible: set[IPv4Address] | None = None) -> dict[IPv4Network, Path]:
        out: dict[IPv4Network, Path] = {}
        for prefix in sorted(self._by_prefix):
            best = self.best(prefix, eligible)
            if best is not None:
                out[prefix] = best
        return out
