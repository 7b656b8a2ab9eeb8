"""Learned routes -> kernel routes (protocol 186 "bgp"), through the shared calyx.netlink layer.

I/O. On start it adopts the proto-186 routes already in the kernel (restart-safe: nothing is
flushed); :meth:`Installer.sync` writes only the difference between the install decisions and
what is there. A changed install mode is a netlink replace of the same prefix (no gap).
Adopted routes that no decision covers are removed only when the caller says the sessions
had their chance to re-learn them (``remove_stale``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Mapping

from calyx.naming import BGPD_ROUTE_PROTOCOL
from calyx.netlink import Route, RouteTable
from calyx.observability import get_logger

from bgpd.importer import InstallDecision, InstallMode

log = get_logger("bgpd.installer")

TUNNEL_DEVICE = "tunl0"


@dataclass(frozen=True)
class SyncResult:
    writes: int = 0
    removed: int = 0
    errors: dict[IPv4Network, str] = field(default_factory=dict)


class Installer:
    def __init__(self, table: RouteTable, tunnel_device: str = TUNNEL_DEVICE) -> None:
        self._table = table
        self.tunnel_device = tunnel_device
        self.installed: dict[IPv4Network, Route] = table.dump(BGPD_ROUTE_PROTOCOL)
        self.errors: dict[IPv4Network, str] = {}
        if self.installed:
            log.info("adopted_routes", count=len(self.installed))

    def route_for(self, decision: InstallDecision, nh_cache: dict[IPv4Address, tuple]) -> Route | str:
        """The kernel route for a decision, or the reason it cannot be installed."""
        nh = decision.next_hop
        if decision.mode is InstallMode.IPIP:
            return Route(dst=decision.prefix, proto=BGPD_ROUTE_PROTOCOL, dev=self.tunnel_device,
                         gateway=nh, onlink=True)
        if nh not in nh_cache:
            nh_cache[nh] = self._table.route_to(nh)
        dev, gateway = nh_cache[nh]
        if dev is None:
            return f"no route to next hop {nh}"
        # A next hop that is not on-link resolves recursively through the kernel's gateway.
        return Route(dst=decision.prefix, proto=BGPD_ROUTE_PROTOCOL, dev=dev,
                     gateway=gateway if gateway is not None else nh)

    def sync(self, decisions: Mapping[IPv4Network, InstallDecision], remove_stale: bool) -> SyncResult:
        nh_cache: dict[IPv4Address, tuple] = {}
        upserts: list[Route] = []
        errors: dict[IPv4Network, str] = {}
        desired: dict[IPv4Network, Route] = {}
        for prefix, decision in decisions.items():
            route = self.route_for(decision, nh_cache)
            if isinstance(route, str):
                errors[prefix] = route
                continue
            desired[prefix] = route
            if self.installed.get(prefix) != route:
                upserts.append(route)
        deletes = [r for p, r in self.installed.items() if p not in desired and (remove_stale or p in decisions)]
        if not upserts and not deletes:
            self.errors = errors
            return SyncResult(errors=errors)
        result = self._table.apply(upserts, deletes)
        failed = {r.dst: why for r, why in result.errors}
        for route in deletes:
            if route.dst not in failed or "No such process" in failed[route.dst]:
                self.installed.pop(route.dst, None)
                failed.pop(route.dst, None)
        for route in upserts:
            if route.dst in failed:
                errors[route.dst] = failed[route.dst]
            else:
                self.installed[route.dst] = route
        for prefix, why in errors.items():
            log.warning("route_install_failed", prefix=str(prefix), error=why)
        if upserts or deletes:
            log.info("routes_synced", upserts=len(upserts) - len([r for r in upserts if r.dst in errors]),
                     deletes=len(deletes))
        self.errors = errors
        return SyncResult(writes=result.writes, removed=len(deletes), errors=errors)
