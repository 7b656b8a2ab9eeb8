"""Install decisions -> kernel routes (protocol 186 "bgp"), through the shared
:class:`calyx.routesync.RouteSync` under bgpd's ownership policy.

On start it adopts the proto-186 routes already in the kernel (restart-safe: nothing is
flushed); :meth:`Installer.sync` turns each decision into the route it means and writes only
what differs from the kernel. A changed install mode is a netlink replace of the same prefix (no
gap). Adopted routes that no decision covers are removed only when the caller says the sessions
had their chance to re-learn them (``remove_stale``); a route this run installed, or an adopted
one a decision took over, is removed as soon as no decision wants it (a withdrawal is never
held back by the adoption window). Another owner's route at a learned
prefix (felix's blackhole, a static route) is never overwritten: it is reported per prefix.
A decision in VXLAN mode (the prefix's pool is carried by felix) installs nothing; the route bgpd
had there stays until felix replaces it in place, so a pool switching to VXLAN loses no packet
(felix may replace bgpd's routes to remote blocks, and bgpd felix's: :mod:`calyx.ownership`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Callable, Iterable, Mapping

from calyx.kernelwatch import Absorbed, LinkChanged, RouteChanged, absorb
from calyx.loop import Event
from calyx.naming import BGPD_ROUTE_PROTOCOL, FELIX_ROUTE_PROTOCOL, TUNNEL_DEVICE
from calyx.logs import get_logger
from calyx.ownership import BGPD_OWNERSHIP, is_carrier_route
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
        self._unresolved: dict[IPv4Network, str] = {}            # no route to the next hop
        self._direct: dict[IPv4Address, set[IPv4Network]] = {}   # next hop -> prefixes installed direct
        self._direct_via: dict[IPv4Network, IPv4Address] = {}    # and back
        self._underlay_moved: set[IPv4Network] = set()           # other owners' routes changed here
        self._yielded: set[IPv4Network] = set()                  # VXLAN decisions: felix's to write
        self._links_moved = False
        self._sync.resync()
        # Found in the kernel at start and not covered by a decision since: kept while the
        # sessions re-learn them (remove_stale False).
        self._adopted: set[IPv4Network] = set(self._sync.owned)
        if self._sync.owned:
            log.info("adopted_routes", count=len(self._sync.owned))

    def retain_installed(self) -> None:
        """The speaking process restarted (ExaBGP, not bgpd): every route installed now is kept,
        as at start, until the sessions re-learn it or the caller says they had their chance
        (RFC 4724: a restarting speaker keeps its forwarding state)."""
        self._adopted = set(self._sync.owned)

    @property
    def installed(self) -> Mapping[IPv4Network, Route]:
        """bgpd's routes in the kernel now."""
        return self._sync.owned

    def carried_by_felix(self, prefix: IPv4Network) -> bool:
        """The kernel routes ``prefix`` by felix's route to a remote block (a VXLAN pool's)."""
        route = self._sync.foreign.get(prefix)
        return route is not None and route.proto == FELIX_ROUTE_PROTOCOL and is_carrier_route(route)

    def absorb(self, events: Iterable[Event]) -> Absorbed:
        """Fold the netlink events of a batch into the view of the kernel, and note what may
        have moved the way to a next hop (a link, or another owner's route)."""
        owns = self._sync.ownership.owns
        for event in events:
            if isinstance(event, RouteChanged) and not owns(event.route):
                self._underlay_moved.add(event.route.dst)
            elif isinstance(event, LinkChanged):
                self._links_moved = True
        return absorb(self._sync, events)

    def resync(self) -> None:
        drift = self._sync.resync()
        self._links_moved = True
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

    def sync(self, decisions: Mapping[IPv4Network, InstallDecision], remove_stale: bool,
             changed: Iterable[IPv4Network] | None = None) -> SyncResult:
        """Bring the kernel to ``decisions``. ``changed`` names the prefixes whose decision
        changed since the previous call (None: any may have). Besides those, it re-resolves the
        prefixes whose next hop could not be reached, and those whose way to their next hop may
        have moved (a link changed, or another owner's route covering the next hop)."""
        if changed is None:
            self._direct.clear()
            self._direct_via.clear()
            self._unresolved.clear()
            self._yielded.clear()
            todo: set[IPv4Network] = set(decisions) | set(self._sync.desired)
        else:
            todo = set(changed) | set(self._unresolved) | self._moved_prefixes()
        self._underlay_moved.clear()
        self._links_moved = False
        nh_cache: dict[IPv4Address, tuple] = {}
        for prefix in todo:
            self._forget_direct(prefix)
            self._unresolved.pop(prefix, None)
            self._yielded.discard(prefix)
            decision = decisions.get(prefix)
            if decision is None:
                self._sync.delete_desired(prefix)
                continue
            self._adopted.discard(prefix)     # re-learned: from now on it goes when withdrawn
            if decision.mode is InstallMode.VXLAN:
                self._yielded.add(prefix)
                self._sync.delete_desired(prefix)
                continue
            route = self.route_for(decision, nh_cache)
            if isinstance(route, str):
                self._unresolved[prefix] = route
                self._sync.delete_desired(prefix)
                continue
            if decision.mode is InstallMode.DIRECT:
                self._direct.setdefault(decision.next_hop, set()).add(prefix)
                self._direct_via[prefix] = decision.next_hop
            self._sync.set_desired(route)
        # An adopted route no decision covers waits until the sessions had their chance; a
        # route to a prefix yielded to felix waits for felix to replace it.
        if remove_stale:
            self._adopted.clear()
        yielded, adopted = self._yielded, self._adopted
        report = self._sync.apply(retain=lambda route: route.dst in yielded
                                  or (route.dst in adopted and route.dst not in decisions))
        problems = {**self._unresolved, **report.problems()}
        for prefix in sorted(set(problems) - set(self.errors)):
            log.warning("route_install_failed", prefix=str(prefix), error=problems[prefix])
        if report.changed:
            log.info("routes_synced", added=len(report.added), replaced=len(report.replaced),
                     deletes=len(report.removed))
        self.errors = problems
        return SyncResult(writes=report.writes, removed=len(report.removed), errors=problems)

    def _moved_prefixes(self) -> set[IPv4Network]:
        if not self._underlay_moved and not self._links_moved:
            return set()
        out: set[IPv4Network] = set()
        for nh, prefixes in self._direct.items():
            if self._links_moved or any(nh in dst for dst in self._underlay_moved):
                out |= prefixes
        return out

    def _forget_direct(self, prefix: IPv4Network) -> None:
        nh = self._direct_via.pop(prefix, None)
        if nh is None:
            return
        prefixes = self._direct[nh]
        prefixes.discard(prefix)
        if not prefixes:
            del self._direct[nh]
