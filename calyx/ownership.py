"""Which kernel routes each Calyx owner may delete, and which it may overwrite.

Pure code. felix and bgpd share the kernel's main table with the kernel itself, with static
routes and with each other. A route sync (:mod:`calyx.routesync`) consults its owner's policy
before every write: it deletes only routes the policy *owns*, and writes over an existing route
only when the policy *may replace* it; anything else in the way is reported as a conflict and
left alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from calyx.naming import BGPD_ROUTE_PROTOCOL, FELIX_ROUTE_PROTOCOL, is_cali_interface
from calyx.route import MAIN_TABLE, Route

KERNEL_ROUTE_PROTOCOL = 2          # RTPROT_KERNEL: routes the kernel derives from addresses


class OwnershipPolicy(Protocol):
    name: str

    def owns(self, route: Route) -> bool:
        """A route this owner wrote: deleted when it is no longer desired."""
        ...

    def may_replace(self, route: Route) -> bool:
        """A route this owner may write over with its own at the same destination."""
        ...


@dataclass(frozen=True)
class ProtocolOwnership:
    """Owns exactly the routes of one protocol number in one table, and replaces nothing else."""

    name: str
    protocol: int
    table: int = MAIN_TABLE

    def owns(self, route: Route) -> bool:
        return route.proto == self.protocol and route.table == self.table

    def may_replace(self, route: Route) -> bool:
        return self.owns(route)


@dataclass(frozen=True)
class PodRouteOwnership(ProtocolOwnership):
    """A protocol owner that also takes over pod device routes (``cali*``) that an older
    installation wrote with another protocol; never the kernel's or another owner's routes."""

    protected_protocols: frozenset[int] = field(default_factory=frozenset)

    def may_replace(self, route: Route) -> bool:
        if self.owns(route):
            return True
        return (route.dev is not None and is_cali_interface(route.dev) and route.kind == "unicast"
                and route.proto not in self.protected_protocols)


FELIX_OWNERSHIP = PodRouteOwnership(
    "felix", FELIX_ROUTE_PROTOCOL,
    protected_protocols=frozenset({KERNEL_ROUTE_PROTOCOL, BGPD_ROUTE_PROTOCOL}))
"""felix: pod /32s and block blackholes (protocol 80; the CNI plugin writes pod routes so too)."""

BGPD_OWNERSHIP = ProtocolOwnership("bgpd", BGPD_ROUTE_PROTOCOL)
"""bgpd: routes learned over BGP (protocol 186, RTPROT_BGP)."""
