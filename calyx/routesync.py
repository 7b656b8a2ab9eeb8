"""One owner's routes in the kernel's main table, kept equal to what it desires by writing only
the difference. Shared by felix's route manager and bgpd's installer.

Pure code: the kernel is reached only through the :class:`RouteWriter` seam given at
construction (:class:`calyx.netlink.RouteTable` in the daemons, :class:`calyx.memroutes.MemoryRouteWriter`
in unit tests). A :class:`RouteSync` sorts the kernel's main table by its owner's
:class:`~calyx.ownership.OwnershipPolicy`: the owner's own routes are the actual side of a
:class:`~calyx.deltatracker.DeltaTracker` keyed by destination whose desired side is what the
owner wants; every other route is kept aside as *foreign*, consulted only when the owner wants
its destination. Both come from a full dump (:meth:`RouteSync.resync`), are kept current between
dumps by netlink events (:meth:`RouteSync.route_event`, :meth:`RouteSync.link_event`) and by the
sync's own successful writes. :meth:`RouteSync.apply` writes the pending differences only, so
its cost follows what changed, not the size of the table (tens of thousands of another owner's
routes cost nothing); another owner's route is never deleted, and overwritten only where the
policy allows; it reports what it did.

Restart-safe by construction: a new sync adopts what the kernel holds, and when nothing changed
while it was away, its first :meth:`RouteSync.apply` writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import AbstractSet, Callable, Iterable, Mapping, Protocol

from calyx.deltatracker import DeltaTracker
from calyx.ownership import OwnershipPolicy
from calyx.route import MAIN_TABLE, ApplyResult, Route

ROUTE_ALREADY_GONE = "No such process"       # ESRCH: the kernel has no such route to delete
DEVICE_MISSING = "does not exist"


class RouteWriter(Protocol):
    """The kernel's main table as a route sync reads and writes it."""

    def links(self) -> Mapping[str, int]:
        """Interface name -> index."""
        ...

    def dump(self) -> dict[IPv4Network, Route]:
        """The main table's IPv4 routes, keyed by destination."""
        ...

    def apply(self, upserts: Iterable[Route], deletes: Iterable[Route]) -> ApplyResult:
        """Delete ``deletes``, then add or replace ``upserts``; each route fails on its own."""
        ...


@dataclass(frozen=True)
class SyncReport:
    """What one :meth:`RouteSync.apply` did and what it could not do."""

    added: tuple[Route, ...] = ()
    replaced: tuple[tuple[Route, Route], ...] = ()     # (new, previous)
    removed: tuple[Route, ...] = ()
    failed: tuple[tuple[Route, str], ...] = ()         # written but refused by the kernel
    pending: tuple[Route, ...] = ()                    # wanted, but their device does not exist yet
    conflicts: tuple[tuple[Route, Route], ...] = ()    # (wanted, another owner's route in the way)
    writes: int = 0                                    # messages the kernel accepted

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)

    def problems(self) -> dict[IPv4Network, str]:
        """Why each wanted route is not in the kernel, by destination."""
        out = {want.dst: f"device {want.dev} does not exist yet" for want in self.pending}
        out.update({want.dst: f"another owner's route is in the way: {have}" for want, have in self.conflicts})
        out.update({route.dst: why for route, why in self.failed})
        return out


def _never(_: Route) -> bool:
    return False


class RouteSync:
    """Desired routes of one owner against the kernel's main table (see the module docstring)."""

    def __init__(self, writer: RouteWriter, ownership: OwnershipPolicy) -> None:
        self._writer = writer
        self.ownership = ownership
        self._routes: DeltaTracker[IPv4Network, Route] = DeltaTracker()
        self._foreign: dict[IPv4Network, Route] = {}
        self._links: set[str] = set()
        self.resyncs = 0

    # --- views -------------------------------------------------------------------------

    @property
    def desired(self) -> Mapping[IPv4Network, Route]:
        return self._routes.desired

    @property
    def owned(self) -> Mapping[IPv4Network, Route]:
        """This owner's routes in the kernel, as this sync believes them to be."""
        return self._routes.actual

    @property
    def foreign(self) -> Mapping[IPv4Network, Route]:
        """Every other main-table route, as this sync believes them to be."""
        return self._foreign

    def kernel_route(self, dst: IPv4Network) -> Route | None:
        return self._routes.actual.get(dst) or self._foreign.get(dst)

    @property
    def links(self) -> AbstractSet[str]:
        return self._links

    @property
    def unwanted(self) -> Mapping[IPv4Network, Route]:
        """This owner's routes in the kernel that it no longer desires (deleted at the next
        :meth:`apply` unless retained)."""
        return self._routes.pending_deletions

    @property
    def programmed(self) -> int:
        """How many desired routes the kernel holds exactly as desired."""
        return len(self._routes.desired) - len(self._routes.pending_updates)

    @property
    def in_sync(self) -> bool:
        """Every desired route is in the kernel and no unwanted route of this owner is."""
        return self._routes.in_sync

    # --- desired side ------------------------------------------------------------------

    def set_desired(self, route: Route) -> None:
        self._routes.set_desired(route.dst, route)

    def delete_desired(self, dst: IPv4Network) -> None:
        self._routes.delete_desired(dst)

    def replace_desired(self, routes: Mapping[IPv4Network, Route]) -> int:
        """Make ``routes`` everything this owner wants; returns how many destinations changed."""
        return self._routes.replace_desired(routes)

    # --- the kernel's side -------------------------------------------------------------

    def resync(self) -> int:
        """Read the kernel's links and routes afresh; returns how many of this owner's routes
        differed from what was believed (changes netlink events did not report)."""
        self._links = set(self._writer.links())
        self.resyncs += 1
        owns = self.ownership.owns
        owned: dict[IPv4Network, Route] = {}
        foreign: dict[IPv4Network, Route] = {}
        for dst, route in self._writer.dump().items():
            (owned if owns(route) else foreign)[dst] = route
        self._foreign = foreign
        return self._routes.replace_actual(owned)

    def route_event(self, route: Route, present: bool) -> bool:
        """A route the kernel reported added or removed; True when this changed the view (the
        echo of this sync's own write changes nothing)."""
        if route.table != MAIN_TABLE:
            return False
        dst = route.dst
        if present:
            if self.ownership.owns(route):
                if self._routes.actual.get(dst) == route:
                    return False
                self._foreign.pop(dst, None)
                self._routes.set_actual(dst, route)
            else:
                if self._foreign.get(dst) == route:
                    return False
                self._routes.delete_actual(dst)
                self._foreign[dst] = route
            return True
        if self._routes.actual.get(dst) == route:
            self._routes.delete_actual(dst)
            return True
        if self._foreign.get(dst) == route:
            del self._foreign[dst]
            return True
        return False

    def link_event(self, name: str, present: bool) -> bool:
        """Track interfaces; True when this changes what can be programmed."""
        if present:
            if name in self._links:
                return False
            self._links.add(name)
            return True
        known = name in self._links
        self._links.discard(name)
        # the kernel drops an interface's IPv4 routes without telling route listeners
        gone = [dst for dst, route in self._routes.actual.items() if route.dev == name]
        for dst in gone:
            self._routes.delete_actual(dst)
        lost = [dst for dst, route in self._foreign.items() if route.dev == name]
        for dst in lost:
            del self._foreign[dst]
        return known or bool(gone or lost)

    # --- writing -----------------------------------------------------------------------

    def apply(self, retain: Callable[[Route], bool] = _never) -> SyncReport:
        """Write the pending differences. A wanted route is written where the kernel has nothing
        or a route the owner may replace, and only once its device exists; an owned route nobody
        wants is deleted unless ``retain`` keeps it for now."""
        may_replace = self.ownership.may_replace
        upserts: list[Route] = []
        pending: list[Route] = []
        conflicts: list[tuple[Route, Route]] = []
        for dst, want in self._routes.pending_updates.items():
            if want.dev is not None and want.dev not in self._links:
                pending.append(want)
                continue
            have = self._foreign.get(dst)
            if have is not None and not may_replace(have, want):
                conflicts.append((want, have))
                continue
            upserts.append(want)
        deletes = [have for have in self._routes.pending_deletions.values() if not retain(have)]
        if not upserts and not deletes:
            return SyncReport(pending=_ordered(pending), conflicts=_ordered_pairs(conflicts))
        upserts.sort(key=_order)
        deletes.sort(key=_order)
        previous = {route.dst: self.kernel_route(route.dst) for route in upserts}
        result = self._writer.apply(upserts, deletes)
        refused = {route: why for route, why in result.errors}
        failed: list[tuple[Route, str]] = []
        removed: list[Route] = []
        for route in deletes:
            why = refused.get(route)
            if why is not None and ROUTE_ALREADY_GONE not in why:
                failed.append((route, why))
                continue
            self._routes.delete_actual(route.dst)
            if why is None:
                removed.append(route)
        added: list[Route] = []
        replaced: list[tuple[Route, Route]] = []
        for route in upserts:
            why = refused.get(route)
            if why is not None:
                failed.append((route, why))
                if DEVICE_MISSING in why and route.dev is not None:
                    self._links.discard(route.dev)     # it vanished: the route waits as pending
                continue
            self._foreign.pop(route.dst, None)
            self._routes.set_actual(route.dst, route)
            before = previous[route.dst]
            if before is None:
                added.append(route)
            else:
                replaced.append((route, before))
        return SyncReport(added=tuple(added), replaced=tuple(replaced), removed=tuple(removed),
                          failed=tuple(failed), pending=_ordered(pending), conflicts=_ordered_pairs(conflicts),
                          writes=result.writes)


def _order(route: Route) -> tuple[int, int]:
    return (int(route.dst.network_address), route.dst.prefixlen)


def _ordered(routes: list[Route]) -> tuple[Route, ...]:
    return tuple(sorted(routes, key=_order))


def _ordered_pairs(pairs: list[tuple[Route, Route]]) -> tuple[tuple[Route, Route], ...]:
    return tuple(sorted(pairs, key=lambda pair: _order(pair[0])))
