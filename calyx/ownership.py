"""Which kernel routes each Calyx owner may delete, and which it may overwrite.

Pure code. felix and bgpd share the kernel's main table with the kernel itself, with static
routes and with each other. A route sync (:mod:`calyx.routesync`) consults its owner's policy
before every write: it deletes only routes the policy *owns*, and writes over an existing route
only when the policy *may replace* it; anything else in the way is reported as a conflict and
left alone.

One exception lets a pod block's route change hands without a gap: the route to another node's
block is written by bgpd (learned over BGP) or by felix (a VXLAN pool's block, programmed from
the API), depending on the pool's mode. Such a *carrier route* (unicast via a gateway, not a pod
device) of the other daemon may be replaced in place by a carrier route of the one that now
wants the destination, and the other daemon, no longer owning it, never deletes it. A pod's device route and a block
blackhole are never carrier routes.
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

    def may_replace(self, route: Route, wanted: Route) -> bool:
        """A route this owner may write over with ``wanted``, its own at the same destination."""
        ...


def is_carrier_route(route: Route) -> bool:
    """A route toward another node (unicast via a gateway), as either daemon writes to a remote
    pod block; not a pod's device route, a blackhole or a device route."""
    return (route.kind == "unicast" and route.gateway is not None
            and not (route.dev is not None and is_cali_interface(route.dev)))


@dataclass(frozen=True)
class ProtocolOwnership:
    """Owns exactly the routes of one protocol number in one table; replaces nothing else but
    the carrier routes of the protocols in ``carrier_handover_from``."""

    name: str
    protocol: int
    table: int = MAIN_TABLE
    carrier_handover_from: frozenset[int] = frozenset()

    def owns(self, route: Route) -> bool:
        return route.proto == self.protocol and route.table == self.table

    def may_replace(self, route: Route, wanted: Route) -> bool:
        if self.owns(route):
            return True
        return (route.proto in self.carrier_handover_from and route.table == self.table
                and is_carrier_route(route) and is_carrier_route(wanted))


@dataclass(frozen=True)
class PodRouteOwnership(ProtocolOwnership):
    """A protocol owner that also takes over pod device routes (``cali*``) that an older
    installation wrote with another protocol; never the kernel's or another owner's routes."""

    protected_protocols: frozenset[int] = field(default_factory=frozenset)

    def may_replace(self, route: Route, wanted: Route) -> bool:
        if super().may_replace(route, wanted):
            return True
        return (route.dev is not None and is_cali_interface(route.dev) and route.kind == "unicast"
                and route.proto not in self.protected_protocols)


FELIX_OWNERSHIP = PodRouteOwnership(
    "felix", FELIX_ROUTE_PROTOCOL,
    protected_protocols=frozenset({KERNEL_ROUTE_PROTOCOL, BGPD_ROUTE_PROTOCOL}),
    carrier_handover_from=frozenset({BGPD_ROUTE_PROTOCOL}))
"""felix: pod /32s, block blackholes and VXLAN pools' remote blocks (protocol 80; the CNI plugin
writes pod routes so too); takes over bgpd's route to a block whose pool moved to VXLAN."""

BGPD_OWNERSHIP = ProtocolOwnership("bgpd", BGPD_ROUTE_PROTOCOL,
                                   carrier_handover_from=frozenset({FELIX_ROUTE_PROTOCOL}))
"""bgpd: routes learned over BGP (protocol 186, RTPROT_BGP); takes over felix's route to a block
whose pool moved from VXLAN to IPIP or plain routing."""
