"""bgpd's installer on the shared route sync, against an in-memory kernel: decisions become
proto-186 routes, only differences are written, adopted routes wait for the sessions, and
another owner's route at a learned prefix is reported, never overwritten."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from bgpd.importer import InstallDecision, InstallMode
from bgpd.installer import Installer
from calyx.kernelwatch import RouteChanged
from calyx.memroutes import MemoryRouteWriter
from calyx.route import Route

PEER = IPv4Address("192.0.2.2")
FAR = IPv4Address("198.51.100.7")
ROUTER = IPv4Address("192.0.2.1")


class Kernel(MemoryRouteWriter):
    """An in-memory table whose next-hop lookups say: the peer is on eth0, FAR behind ROUTER."""

    def __init__(self, routes=()):
        super().__init__(["eth0", "tunl0"], routes)
        self.lookups = 0

    def route_to(self, address: IPv4Address):
        self.lookups += 1
        if address == PEER:
            return "eth0", None
        if address == FAR:
            return "eth0", ROUTER
        return None, None


def decision(prefix: str, mode=InstallMode.DIRECT, nh=PEER) -> InstallDecision:
    return InstallDecision(IPv4Network(prefix), nh, mode, "default", nh)


def decisions(*ds: InstallDecision) -> dict:
    return {d.prefix: d for d in ds}


def test_decisions_become_routes_and_a_second_sync_writes_nothing() -> None:
    kernel = Kernel()
    installer = Installer(kernel, kernel.route_to)
    wanted = decisions(decision("10.244.2.0/26"), decision("10.244.3.0/26", InstallMode.IPIP),
                       decision("10.244.4.0/26", nh=FAR))
    result = installer.sync(wanted, remove_stale=True)
    assert result.writes == 3 and not result.errors
    assert kernel.routes[IPv4Network("10.244.2.0/26")] == Route(IPv4Network("10.244.2.0/26"), 186, dev="eth0",
                                                                 gateway=PEER)
    assert kernel.routes[IPv4Network("10.244.3.0/26")] == Route(IPv4Network("10.244.3.0/26"), 186, dev="tunl0",
                                                                 gateway=PEER, onlink=True)
    assert kernel.routes[IPv4Network("10.244.4.0/26")].gateway == ROUTER
    assert kernel.lookups == 2      # one lookup per next hop per pass
    assert installer.sync(wanted, remove_stale=True).writes == 0
    assert kernel.writes == 3


def test_a_mode_change_replaces_in_place_and_a_withdrawal_deletes() -> None:
    kernel = Kernel()
    installer = Installer(kernel, kernel.route_to)
    installer.sync(decisions(decision("10.244.2.0/26"), decision("10.244.3.0/26")), remove_stale=True)
    result = installer.sync(decisions(decision("10.244.2.0/26", InstallMode.IPIP)), remove_stale=True)
    assert result.removed == 1 and set(kernel.routes) == {IPv4Network("10.244.2.0/26")}
    assert kernel.routes[IPv4Network("10.244.2.0/26")].dev == "tunl0"


def test_adopted_routes_are_kept_until_the_sessions_had_their_chance() -> None:
    adopted = Route(IPv4Network("10.244.9.0/26"), 186, dev="eth0", gateway=PEER)
    kernel = Kernel([adopted])
    installer = Installer(kernel, kernel.route_to)
    assert installer.installed == {adopted.dst: adopted}
    assert installer.sync({}, remove_stale=False).removed == 0
    assert kernel.writes == 0
    assert installer.sync({}, remove_stale=True).removed == 1
    assert kernel.routes == {}


def test_a_withdrawal_is_not_held_back_by_the_adoption_window() -> None:
    adopted = Route(IPv4Network("10.244.9.0/26"), 186, dev="eth0", gateway=PEER)
    kernel = Kernel([adopted])
    installer = Installer(kernel, kernel.route_to)
    learned = decision("10.244.2.0/26")
    installer.sync(decisions(learned, decision("10.244.9.0/26")), remove_stale=False)
    # Both withdrawn while some session has not yet sent End-of-RIB: the route learned in this
    # run and the adopted one, once re-learned, go at once; only an adopted route nobody
    # re-announced yet would wait.
    result = installer.sync({}, remove_stale=False, changed=[learned.prefix, adopted.dst])
    assert result.removed == 2 and kernel.routes == {}


def test_routes_installed_before_exabgp_restarted_wait_for_the_sessions_again() -> None:
    kernel = Kernel()
    installer = Installer(kernel, kernel.route_to)
    installer.sync(decisions(decision("10.244.2.0/26"), decision("10.244.3.0/26")), remove_stale=True)
    writes = kernel.writes
    installer.retain_installed()          # ExaBGP exited: the RIB is empty until sessions return
    assert installer.sync({}, remove_stale=False).removed == 0 and kernel.writes == writes
    # one re-learned as it was: no write; the other not re-learned goes once the window closes
    installer.sync(decisions(decision("10.244.2.0/26")), remove_stale=False)
    assert kernel.writes == writes
    assert installer.sync(decisions(decision("10.244.2.0/26")), remove_stale=True).removed == 1
    assert set(kernel.routes) == {IPv4Network("10.244.2.0/26")}


def test_an_unreachable_next_hop_or_another_owners_route_is_an_error_per_prefix() -> None:
    blackhole = Route(IPv4Network("10.244.1.0/26"), 80, kind="blackhole")
    stale = Route(IPv4Network("10.244.5.0/26"), 186, dev="eth0", gateway=PEER)
    kernel = Kernel([blackhole, stale])
    installer = Installer(kernel, kernel.route_to)
    result = installer.sync(decisions(decision("10.244.1.0/26"),
                                      decision("10.244.5.0/26", nh=IPv4Address("203.0.113.9"))), remove_stale=False)
    assert "another owner's route is in the way" in result.errors[blackhole.dst]
    assert result.errors[stale.dst] == "no route to next hop 203.0.113.9"
    assert kernel.routes[blackhole.dst] == blackhole          # felix's route untouched
    assert stale.dst not in kernel.routes                     # a route it can no longer honour goes


def test_an_ipip_route_waits_for_the_tunnel_device() -> None:
    kernel = Kernel()
    kernel.remove_link("tunl0")
    installer = Installer(kernel, kernel.route_to)
    result = installer.sync(decisions(decision("10.244.3.0/26", InstallMode.IPIP)), remove_stale=True)
    assert result.errors == {IPv4Network("10.244.3.0/26"): "device tunl0 does not exist yet"}
    kernel.add_link("tunl0")
    installer.resync()
    assert installer.sync(decisions(decision("10.244.3.0/26", InstallMode.IPIP)), remove_stale=True).writes == 1


def test_a_block_yielded_to_felix_keeps_bgpds_route_until_felix_replaces_it() -> None:
    learned = Route(IPv4Network("10.244.2.0/26"), 186, dev="eth0", gateway=PEER)
    kernel = Kernel([learned])
    kernel.add_link("vxlan.calico")
    installer = Installer(kernel, kernel.route_to)
    result = installer.sync(decisions(decision("10.244.2.0/26", InstallMode.VXLAN)), remove_stale=True)
    assert result.writes == 0 and kernel.routes[learned.dst] == learned     # still carrying traffic
    assert not installer.carried_by_felix(learned.dst)
    felix = Route(learned.dst, 80, dev="vxlan.calico", gateway=IPv4Address("10.244.2.0"), onlink=True)
    kernel.routes[felix.dst] = felix            # felix replaces it in place
    installer.absorb([RouteChanged(felix, True)])
    assert installer.carried_by_felix(learned.dst) and not installer.installed
    assert installer.sync(decisions(decision("10.244.2.0/26", InstallMode.VXLAN)), remove_stale=True,
                          changed=[learned.dst]).writes == 0
    assert kernel.routes[felix.dst] == felix
    tunnelled = decision("10.244.2.0/26", InstallMode.IPIP)    # back to IPIP: bgpd takes it over
    assert installer.sync(decisions(tunnelled), remove_stale=True, changed=[learned.dst]).writes == 1
    assert kernel.routes[felix.dst].proto == 186 and kernel.routes[felix.dst].dev == "tunl0"


def test_a_withdrawn_block_yielded_to_felix_is_removed() -> None:
    learned = Route(IPv4Network("10.244.2.0/26"), 186, dev="eth0", gateway=PEER)
    kernel = Kernel([learned])
    installer = Installer(kernel, kernel.route_to)
    installer.sync(decisions(decision("10.244.2.0/26", InstallMode.VXLAN)), remove_stale=True)
    assert installer.sync({}, remove_stale=True, changed=[learned.dst]).removed == 1
    assert learned.dst not in kernel.routes
