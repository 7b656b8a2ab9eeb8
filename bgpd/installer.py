"""Install decisions -> kernel routes (protocol 186 "bgp"), through the shared
:class:`calyx.routesync.RouteSync` under bgpd's ownership policy.

On start it adopts the proto-186 routes already in the kernel (restart-safe: nothing is
flushed); :meth:`Installer.sync` turns each decision into the route it means and writes only
what differs from the kernel. A changed install mode is a netlink replace of the same prefix (no
gap). Adopted routes that no decision covers are removed only when the caller says the sessions
had their chance to re-learn them (``remove_stale``). Another owner's route at a learned
prefix (felix's blackhole, a static route) is never overwritten: it is reported per prefix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Callable, Iterable, Mapping

from calyx.kernelwatch import Absorbed, absorb
from calyx.loop import Event
from calyx.naming import BGPD_ROUTE_PROTOCOL, TUNNEL_DEVICE
from calyx.observability import get_logger
from calyx.ownership import BGPD_OWNERSHIP
from calyx.route import Route
from calyx.routesync import RouteSync, RouteWriter

from bgpd.importer import InstallDecision, InstallMode

log = get_logger("bgpd.installer")

NextHopLookup = Callable[[IPv4Address], "tuple[str | None, IPv4Address | None]"]
"""The kernel's route to a next hop: (output device, gateway), (None, None) when unreachable."""


@dataclass(frozen=True)
class SyncResult:
    writes: int = 0
    removed: int = 0
    errors: dict[IPv4Network, str] = field(default_factory=dict)


class Installer:
    def __init__(self, writer: RouteWriter, route_to: NextHopLookup, tunnel_device: str = TUNNEL_DEVICE) -> None:
        self._sync = RouteSync(writer, BGPD_OWNERSHIP)
        self._route_to = route_to
        self.tunnel_device = tunnel_device
        self.errors: dict[IPv4Network, str] = {}
        self._sync.resync()
        if self._sync.owned:
            log.info("adopted_routes", count=len(self._sync.owned))

    @property
    def installed(self) -> Mapping[IPv4Network, Route]:
        """bgpd's routes in the kernel now."""
        return self._sync.owned

    def absorb(self, events: Iterable[Event]) -> Absorbed:
        """Fold the netlink events of a batch into the view of the kernel."""
        return absorb(self._sync, events)

    def resync(self) -> None:
        drift = self._sync.resync()
        if drift:
            log.info("kernel_routes_changed_unseen", routes=drift)

    def route_for(self, decision: InstallDecision, nh_cache: dict[IPv4Address, tuple]) -> Route | str:
        """The kernel route for a decision, or the reason it cannot be installed."""
        nh = decision.next_hop
        if decision.mode is InstallMode.IPIP:
            return Route(dst=decision.prefix, proto=BGPD_ROUTE_PROTOCOL, dev=self.tunnel_device,
                         gateway=nh, onlink=True)
        if nh not in nh_cache:
            nh_cache[nh] = self._route_to(nh)
        dev, gateway = nh_cache[nh]
        if dev is None:
            return f"no route to next hop {nh}"
        # A next hop that is not on-link resolves recursively through the kernel's gateway.
        return Route(dst=decision.prefix, proto=BGPD_ROUTE_PROTOCOL, dev=dev,
                     gateway=gateway if gateway is not None else nh)

    def sync(self, decisions: Mapping[IPv4Network, InstallDecision], remove_stale: bool) -> SyncResult:
        nh_cache: dict[IPv4Address, tuple] = {}
        errors: dict[IPv4Network, str] = {}
        desired: dict[IPv4Network, Route] = {}
        for prefix, decision in decisions.items():
            route = self.route_for(decision, nh_cache)
            if isinstance(route, str):
                errors[prefix] = route
            else:
                desired[prefix] = route
        self._sync.replace_desired(desired)
        # An adopted route no decision covers waits until the sessions had their chance.
        report = self._sync.apply(retain=lambda route: not remove_stale and route.dst not in decisions)
        problems = report.problems()
        for prefix in sorted(set(problems) - set(self.errors)):
            log.warning("route_install_failed", prefix=str(prefix), error=problems[prefix])
        errors.update(problems)
        if report.changed:
            log.info("routes_synced", added=len(report.added), replaced=len(report.replaced),
                     deletes=len(report.removed))
        self.errors = errors
        return SyncResult(writes=report.writes, removed=len(report.removed), errors=errors)
