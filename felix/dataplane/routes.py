"""The route manager: felix's routes (pod /32s, block blackholes) in the kernel's main table,
kept equal to the desired ones by the shared :class:`calyx.routesync.RouteSync` under felix's
ownership policy, with felix's logging and metrics around it.

The kernel's view is refreshed by a full dump on :meth:`resync` and kept current between dumps
by netlink route and link events, so a route someone deletes by hand is noticed and rewritten
without re-reading the whole table. Routes of other owners (bgpd's proto 186, the kernel's,
static ones) are never deleted or overwritten (:data:`calyx.ownership.FELIX_OWNERSHIP`), except
bgpd's route to a remote block that felix now carries (a VXLAN pool's), replaced in place.

The other way round, a route to a remote block felix no longer wants (its pool left VXLAN) is
kept for ``release_grace`` seconds, long enough for bgpd to replace it in place with its own;
if nobody does, it is deleted then (:attr:`RouteManager.release_at` says when).
"""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import AbstractSet, Iterable, Mapping

from calyx.kernelwatch import Absorbed, absorb
from calyx.loop import Event
from calyx.logs import get_logger
from calyx.ownership import FELIX_OWNERSHIP, is_carrier_route
from calyx.route import Route
from calyx.routesync import RouteSync, RouteWriter, SyncReport
from felix.metrics import FelixMetrics

DETAIL_LIMIT = 200     # above this many changes in one pass, each change is logged at debug level


class RouteManager:
    """Owned by felix's main thread; events are handed to it from there."""

    def __init__(self, writer: RouteWriter, metrics: FelixMetrics, release_grace: float = 0.0):
        self._sync = RouteSync(writer, FELIX_OWNERSHIP)
        self._release_grace = release_grace
        self._released: dict[IPv4Network, float] = {}     # carrier routes no longer wanted: since
        self._metrics = metrics
        self._log = get_logger("felix.routes")
        self._reported_conflicts: frozenset[tuple[Route, Route]] = frozenset()

    # --- the kernel's state --------------------------------------------------------------

    def resync(self) -> None:
        """Read the kernel's routes and links afresh."""
        drift = self._sync.resync()
        self._metrics.resyncs.inc()
        if drift and self._sync.resyncs > 1:
            self._log.info("kernel routes changed unseen since the last dump", routes=drift)

    def absorb(self, events: Iterable[Event]) -> Absorbed:
        """Fold the netlink events of a batch into the view of the kernel."""
        return absorb(self._sync, events)

    # --- reconcile -----------------------------------------------------------------------

    @property
    def release_at(self) -> float | None:
        """When the earliest kept route to a remote block is deleted (None: none kept)."""
        if not self._released:
            return None
        return min(self._released.values()) + self._release_grace

    def reconcile(self, desired: Mapping[IPv4Network, Route], reasons: Mapping[IPv4Network, str],
                  settling_devices: AbstractSet[str] = frozenset(), now: float = 0.0) -> SyncReport:
        """Write what differs from ``desired``. Routes through a ``settling_devices`` interface
        (a pod the CNI plugin has just wired, whose IP the API does not show yet) are kept, and
        so are routes to remote blocks released less than ``release_grace`` seconds ago."""
        self._sync.replace_desired(desired)
        released = self._released
        for dst, route in self._sync.unwanted.items():
            if dst not in released and is_carrier_route(route):
                released[dst] = now
        grace = self._release_grace
        report = self._sync.apply(retain=lambda route: route.dev in settling_devices
                                  or (route.dst in released and now < released[route.dst] + grace))
        unwanted = self._sync.unwanted
        for dst in [d for d in released if d not in unwanted]:
            del released[dst]          # wanted again, taken over by bgpd, or deleted
        if report.writes:
            self._metrics.netlink_writes.labels("route").inc(report.writes)
        self._log_changes(report, reasons)
        for route, problem in report.failed:
            self._metrics.errors.labels("route").inc()
            self._log.warning("route write failed", dst=str(route.dst), route=str(route), error=problem,
                              reason=reasons.get(route.dst, "no longer wanted"))
        conflicts = frozenset(report.conflicts)
        for want, have in report.conflicts:
            if (want, have) not in self._reported_conflicts:
                self._log.warning("route not programmed: another owner's route is in the way",
                                  dst=str(want.dst), wanted=str(want), existing=str(have),
                                  reason=reasons.get(want.dst, ""))
        self._reported_conflicts = conflicts
        self._metrics.routes_desired.set(len(desired))
        self._metrics.routes_pending.set(len(report.pending))
        self._metrics.route_conflicts.set(len(report.conflicts))
        self._metrics.routes_programmed.set(self._sync.programmed)
        return report

    def _log_changes(self, report: SyncReport, reasons: Mapping[IPv4Network, str]) -> None:
        count = len(report.added) + len(report.replaced) + len(report.removed)
        if not count:
            return
        log = self._log.info if count <= DETAIL_LIMIT else self._log.debug
        for route in report.removed:
            log("route removed", dst=str(route.dst), dev=route.dev, kind=route.kind, reason="no longer wanted")
        for route in report.added:
            log("route added", dst=str(route.dst), dev=route.dev, kind=route.kind, reason=reasons.get(route.dst, ""))
        for route, previous in report.replaced:
            log("route replaced", dst=str(route.dst), dev=route.dev, kind=route.kind, previous=str(previous),
                reason=reasons.get(route.dst, ""))
        if count > DETAIL_LIMIT:
            self._log.info("routes programmed", added=len(report.added), replaced=len(report.replaced),
                           removed=len(report.removed), failed=len(report.failed))
