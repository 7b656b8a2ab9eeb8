"""An in-memory kernel main table behind the :class:`calyx.routesync.RouteWriter` seam, so route
managers are unit-tested without a kernel.

It behaves as the kernel does where Calyx depends on it: a route through a device that does not
exist is refused, deleting a route that is not there fails with ESRCH's text, a write replaces
the route at the same destination, and removing a link drops its routes. It counts the messages
it accepted, so a test can assert that a pass wrote nothing.
"""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import Iterable

from calyx.route import ApplyResult, Route
from calyx.routesync import DEVICE_MISSING, ROUTE_ALREADY_GONE


class MemoryRouteWriter:
    def __init__(self, links: Iterable[str] = (), routes: Iterable[Route] = ()) -> None:
        self._links: dict[str, int] = {}
        for name in links:
            self.add_link(name)
        self.routes: dict[IPv4Network, Route] = {route.dst: route for route in routes}
        self.writes = 0
        self.refuse: dict[IPv4Network, str] = {}    # destinations whose writes fail, and why

    def add_link(self, name: str) -> None:
        self._links.setdefault(name, len(self._links) + 1)

    def remove_link(self, name: str) -> None:
        self._links.pop(name, None)
        self.routes = {dst: r for dst, r in self.routes.items() if r.dev != name}

    def links(self) -> dict[str, int]:
        return dict(self._links)

    def dump(self) -> dict[IPv4Network, Route]:
        return dict(self.routes)

    def apply(self, upserts: Iterable[Route], deletes: Iterable[Route]) -> ApplyResult:
        errors: list[tuple[Route, str]] = []
        writes = 0
        for route in deletes:
            have = self.routes.get(route.dst)
            if route.dst in self.refuse:
                errors.append((route, self.refuse[route.dst]))
            elif have is None or have.proto != route.proto or have.kind != route.kind:
                errors.append((route, ROUTE_ALREADY_GONE))
            else:
                del self.routes[route.dst]
                writes += 1
        for route in upserts:
            if route.dev is not None and route.dev not in self._links:
                errors.append((route, f"device {route.dev} {DEVICE_MISSING}"))
            elif route.dst in self.refuse:
                errors.append((route, self.refuse[route.dst]))
            else:
                self.routes[route.dst] = route
                writes += 1
        self.writes += writes
        return ApplyResult(writes=writes, errors=errors)
