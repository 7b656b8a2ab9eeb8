"""The route manager: keeps felix's routes (pod /32s, block blackholes) in the kernel's main
table equal to the desired ones, writing only the difference.

It holds a view of the kernel's main table, refreshed by a full dump on :meth:`resync` and kept
current between dumps by netlink route and link events, so a route someone deletes by hand is
noticed and rewritten without re-reading the whole table. Routes of other owners (bgpd's proto
186, the kernel's, static ones) are never deleted or overwritten; see :mod:`felix.calc`.
"""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import AbstractSet, Mapping

from calyx.netlink import RouteTable
from calyx.observability import get_logger
from calyx.route import MAIN_TABLE, Route
from felix.calc import RoutePlan, plan_routes
from felix.metrics import FelixMetrics

DETAIL_LIMIT = 200     # above this many changes in one pass, each change is logged at debug level


class RouteManager:
    """Owned by felix's main thread; events are handed to it from there."""

    def __init__(self, table: RouteTable, metrics: FelixMetrics):
        self._table = table
        self._metrics = metrics
        self._log = get_logger("felix.routes")
        self._actual: dict[IPv4Network, Route] = {}
        self._links: set[str] = set()
        self._reported_conflicts: set[tuple[Route, Route]] = set()

    # --- the kernel's state --------------------------------------------------------------

    def resync(self) -> None:
        """Read the kernel's routes and links afresh."""
        self._links = set(self._table.links())
        self._actual = self._table.dump()
        self._metrics.resyncs.inc()

    def route_event(self, route: Route, present: bool) -> None:
        if route.table != MAIN_TABLE:
            return
        if present:
            self._actual[route.dst] = route
        elif self._actual.get(route.dst) == route:
            del self._actual[route.dst]

    def link_event(self, name: str, present: bool) -> bool:
        """Track interfaces; True when this changes what can be programmed."""
        if present:
            if name in self._links:
                return False
            self._links.add(name)
            return True
        self._links.discard(name)
        # the kernel drops an interface's IPv4 routes without telling route listeners
        gone = [dst for dst, r in self._actual.items() if r.dev == name]
        for dst in gone:
            del self._actual[dst]
        return True

    # --- reconcile -----------------------------------------------------------------------

    def reconcile(self, desired: Mapping[IPv4Network, Route], reasons: Mapping[IPv4Network, str],
                  settling_devices: AbstractSet[str] = frozenset()) -> RoutePlan:
        plan = plan_routes(desired, self._actual, self._links, settling_devices)
        if not plan.empty:
            result = self._table.apply(plan.upserts, plan.deletes)
            failed = {route for route, _ in result.errors}
            self._metrics.netlink_writes.labels("route").inc(result.writes)
            self._record(plan, failed, reasons)
            for route, problem in result.errors:
                self._metrics.errors.labels("route").inc()
                self._log.warning("route write failed", dst=str(route.dst), route=str(route), error=problem,
                                  reason=reasons.get(route.dst, "no longer wanted"))
                if "does not exist" in problem and route.dev is not None:
                    self._links.discard(route.dev)   # the link vanished: it will come back as pending
        for want, have in plan.conflicts:
            if (want, have) not in self._reported_conflicts:
                self._log.warning("route not programmed: another owner's route is in the way",
                                  dst=str(want.dst), wanted=str(want), existing=str(have),
                                  reason=reasons.get(want.dst, ""))
        self._reported_conflicts = set(plan.conflicts)
        self._metrics.routes_desired.set(len(desired))
        self._metrics.routes_pending.set(len(plan.pending))
        self._metrics.route_conflicts.set(len(plan.conflicts))
        self._metrics.routes_programmed.set(sum(1 for dst, r in desired.items() if self._actual.get(dst) == r))
        return plan

    def _record(self, plan: RoutePlan, failed: set[Route], reasons: Mapping[IPv4Network, str]) -> None:
        """Fold successful writes into the view of the kernel and log them."""
        detail = len(plan.upserts) + len(plan.deletes) <= DETAIL_LIMIT
        log = self._log.info if detail else self._log.debug
        added = removed = 0
        for route in plan.deletes:
            if route in failed:
                continue
            removed += 1
            self._actual.pop(route.dst, None)
            log("route removed", dst=str(route.dst), dev=route.dev, kind=route.kind, reason="no longer wanted")
        for route in plan.upserts:
            if route in failed:
                continue
            added += 1
            previous = self._actual.get(route.dst)
            self._actual[route.dst] = route
            if previous is None:
                log("route added", dst=str(route.dst), dev=route.dev, kind=route.kind,
                    reason=reasons.get(route.dst, ""))
            else:
                log("route replaced", dst=str(route.dst), dev=route.dev, kind=route.kind,
                    previous=str(previous), reason=reasons.get(route.dst, ""))
        if not detail:
            self._log.info("routes programmed", added=added, removed=removed, failed=len(failed))
