"""The reconcile spine for kernel routes: the delta tracker, the ownership policies, and a route
sync writing only the difference through the RouteWriter seam (an in-memory kernel here)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from calyx.deltatracker import DeltaTracker
from calyx.memroutes import MemoryRouteWriter
from calyx.naming import cali_interface_name
from calyx.ownership import BGPD_OWNERSHIP, FELIX_OWNERSHIP
from calyx.route import Route
from calyx.routesync import RouteSync

CALI = [cali_interface_name("default", f"p{i}") for i in range(8)]
LINKS = frozenset(CALI) | {"eth0", "tunl0"}
GW = IPv4Address("192.0.2.2")


def pod(i: int, ip: str) -> Route:
    return Route(IPv4Network(f"{ip}/32"), 80, dev=CALI[i], scope="link")


def blackhole(cidr: str) -> Route:
    return Route(IPv4Network(cidr), 80, kind="blackhole")


def learned(cidr: str, dev: str = "eth0") -> Route:
    return Route(IPv4Network(cidr), 186, dev=dev, gateway=GW, onlink=dev == "tunl0")


def felix_sync(*routes: Route, links=LINKS) -> tuple[RouteSync, MemoryRouteWriter]:
    kernel = MemoryRouteWriter(links, routes)
    sync = RouteSync(kernel, FELIX_OWNERSHIP)
    sync.resync()
    return sync, kernel


# --- DeltaTracker -----------------------------------------------------------------------

def test_tracker_names_exactly_the_keys_that_differ() -> None:
    t: DeltaTracker[str, int] = DeltaTracker()
    t.replace_actual({"a": 1, "b": 2, "c": 3})
    t.replace_desired({"a": 1, "b": 20, "d": 4})
    assert dict(t.pending_updates) == {"b": 20, "d": 4}
    assert dict(t.pending_deletions) == {"c": 3}
    t.set_actual("b", 20)
    t.delete_actual("c")
    t.set_actual("d", 4)
    assert t.in_sync


OPS = st.lists(st.tuples(st.sampled_from(["sd", "dd", "sa", "da"]), st.integers(0, 5), st.integers(0, 2)),
               max_size=40)


@settings(max_examples=300)
@given(OPS)
def test_tracker_kept_incrementally_equals_the_difference_recomputed(ops) -> None:
    t: DeltaTracker[int, int] = DeltaTracker()
    desired: dict[int, int] = {}
    actual: dict[int, int] = {}
    for op, key, value in ops:
        if op == "sd":
            t.set_desired(key, value)
            desired[key] = value
        elif op == "dd":
            t.delete_desired(key)
            desired.pop(key, None)
        elif op == "sa":
            t.set_actual(key, value)
            actual[key] = value
        else:
            t.delete_actual(key)
            actual.pop(key, None)
        assert dict(t.pending_updates) == {k: v for k, v in desired.items() if actual.get(k) != v}
        assert dict(t.pending_deletions) == {k: v for k, v in actual.items() if k not in desired}


# --- ownership --------------------------------------------------------------------------

def test_felix_adopts_old_pod_routes_but_never_the_kernels_or_bgpds() -> None:
    want = pod(0, "10.244.1.1")
    assert FELIX_OWNERSHIP.may_replace(Route(want.dst, 4, dev=want.dev, scope="link"), want)     # proto static
    assert not FELIX_OWNERSHIP.may_replace(Route(want.dst, 2, dev=want.dev, scope="link"), want)
    assert not FELIX_OWNERSHIP.may_replace(Route(want.dst, 186, dev=want.dev, scope="link"), want)
    assert not FELIX_OWNERSHIP.owns(Route(want.dst, 4, dev=want.dev, scope="link"))
    assert BGPD_OWNERSHIP.owns(learned("10.244.2.0/24")) and not BGPD_OWNERSHIP.may_replace(want, learned("10.244.1.1/32"))


# --- RouteSync --------------------------------------------------------------------------

def test_sync_writes_only_the_difference_and_keeps_pending_routes_aside() -> None:
    keep, add, stale = pod(0, "10.244.1.1"), pod(1, "10.244.1.2"), pod(2, "10.244.1.4")
    waiting = Route(IPv4Network("10.244.1.3/32"), 80, dev="cali0000000beef", scope="link")
    bgp = learned("10.244.2.0/24")
    sync, kernel = felix_sync(keep, stale, bgp)
    sync.replace_desired({r.dst: r for r in (keep, add, waiting)})
    report = sync.apply()
    assert report.added == (add,) and report.removed == (stale,) and report.pending == (waiting,)
    assert kernel.writes == 2 and set(kernel.routes.values()) == {keep, add, bgp}
    assert sync.programmed == 2
    sync.link_event("cali0000000beef", True)
    kernel.add_link("cali0000000beef")
    assert sync.apply().added == (waiting,)
    assert sync.in_sync


def test_a_foreign_route_in_the_way_is_a_conflict_and_left_alone() -> None:
    block = blackhole("10.244.1.0/24")
    bgp = learned("10.244.1.0/24")
    sync, kernel = felix_sync(bgp)
    sync.set_desired(block)
    report = sync.apply()
    assert report.conflicts == ((block, bgp),) and kernel.writes == 0
    assert "another owner" in report.problems()[block.dst]


def test_adopting_what_is_there_writes_nothing() -> None:
    routes = [pod(i, f"10.244.1.{i + 1}") for i in range(5)] + [blackhole("10.244.1.0/24")]
    sync, kernel = felix_sync(*routes)
    sync.replace_desired({r.dst: r for r in routes})
    report = sync.apply()
    assert not report.changed and kernel.writes == 0 and sync.in_sync


def test_routes_deleted_behind_its_back_are_rewritten_from_events_or_a_resync() -> None:
    a, b = pod(0, "10.244.1.1"), pod(1, "10.244.1.2")
    sync, kernel = felix_sync()
    sync.replace_desired({a.dst: a, b.dst: b})
    sync.apply()
    del kernel.routes[a.dst]
    sync.route_event(a, present=False)           # the netlink event
    assert sync.apply().added == (a,)
    del kernel.routes[b.dst]                      # no event: only the periodic dump notices
    assert not sync.apply().changed
    assert sync.resync() == 1
    assert sync.apply().added == (b,)


def test_a_vanished_link_takes_its_routes_and_they_wait_for_it() -> None:
    a = pod(0, "10.244.1.1")
    sync, kernel = felix_sync()
    sync.set_desired(a)
    sync.apply()
    kernel.remove_link(a.dev)
    assert sync.link_event(a.dev, present=False)
    assert sync.owned == {} and sync.apply().pending == (a,)


def test_retained_routes_survive_until_released_and_deletes_of_gone_routes_are_no_error() -> None:
    cni = pod(0, "10.244.1.77")
    sync, kernel = felix_sync(cni)
    assert sync.apply(retain=lambda r: r.dev == cni.dev).removed == ()
    del kernel.routes[cni.dst]                    # gone meanwhile, unseen
    report = sync.apply()
    assert report.failed == () and report.removed == () and sync.owned == {}


def test_kernel_refusals_are_reported_and_not_believed() -> None:
    a = pod(0, "10.244.1.1")
    sync, kernel = felix_sync()
    kernel.refuse[a.dst] = "Invalid argument"
    sync.set_desired(a)
    report = sync.apply()
    assert report.failed == ((a, "Invalid argument"),) and sync.owned == {}
    assert report.problems() == {a.dst: "Invalid argument"}
    del kernel.refuse[a.dst]
    assert sync.apply().added == (a,)


def test_a_replaced_route_is_reported_with_what_it_replaced() -> None:
    direct, tunnelled = learned("10.244.2.0/24"), learned("10.244.2.0/24", dev="tunl0")
    kernel = MemoryRouteWriter(LINKS, [direct])
    sync = RouteSync(kernel, BGPD_OWNERSHIP)
    sync.resync()
    sync.set_desired(tunnelled)
    assert sync.apply().replaced == ((tunnelled, direct),)
    assert sync.owned == {tunnelled.dst: tunnelled}


# --- properties -------------------------------------------------------------------------

DSTS = st.builds(lambda i, plen: IPv4Network((0x0AF40000 + (i << 4), plen), strict=False),
                 st.integers(0, 15), st.sampled_from([28, 32]))
DEVS = st.sampled_from(sorted(LINKS) + ["cali0000000dead", None])
ROUTES = st.builds(
    lambda dst, proto, dev, kind: Route(dst, proto, kind=kind if dev is None else "unicast", dev=dev,
                                        scope="link" if dev else "universe"),
    DSTS, st.sampled_from([80, 80, 186, 2, 4]), DEVS, st.sampled_from(["unicast", "blackhole"]),
)
TABLES = st.lists(ROUTES, max_size=12).map(lambda rs: {r.dst: r for r in rs if r.dev != "cali0000000dead"})
DESIRED = st.lists(ROUTES, max_size=12).map(
    lambda rs: {r.dst: Route(r.dst, 80, kind=r.kind, dev=r.dev, scope=r.scope) for r in rs})


@settings(max_examples=300)
@given(DESIRED, TABLES)
def test_one_apply_converges_and_never_touches_foreign_routes(desired, actual) -> None:
    sync, kernel = felix_sync(*actual.values())
    sync.replace_desired(desired)
    first = sync.apply()
    writes = kernel.writes
    again = sync.apply()
    assert not again.changed and kernel.writes == writes
    assert again.pending == first.pending and again.conflicts == first.conflicts
    assert all(r.proto == 80 for r in first.removed)
    for dst, have in actual.items():
        if have.proto in (2, 186):
            assert kernel.routes[dst] == have
    assert {**sync.owned, **sync.foreign} == kernel.routes


@settings(max_examples=300)
@given(DESIRED)
def test_a_kernel_that_already_matches_needs_no_writes(desired) -> None:
    programmable = {d: r for d, r in desired.items() if r.dev is None or r.dev in LINKS}
    sync, kernel = felix_sync(*programmable.values())
    sync.replace_desired(desired)
    sync.apply()
    assert kernel.writes == 0


# --- carrier handover between felix and bgpd ---------------------------------------------

VTEP = IPv4Address("10.244.2.0")


def vxlan_route(cidr: str) -> Route:
    return Route(IPv4Network(cidr), 80, dev="vxlan.calico", gateway=VTEP, onlink=True)


def test_felix_takes_over_bgpds_route_to_a_block_in_place_and_bgpd_then_leaves_it() -> None:
    bgp = learned("10.244.2.0/26")
    kernel = MemoryRouteWriter(LINKS | {"vxlan.calico"}, [bgp])
    felix, bgpd = RouteSync(kernel, FELIX_OWNERSHIP), RouteSync(kernel, BGPD_OWNERSHIP)
    felix.resync()
    bgpd.resync()
    bgpd.replace_desired({bgp.dst: bgp})
    want = vxlan_route("10.244.2.0/26")
    felix.set_desired(want)
    report = felix.apply()
    assert report.replaced == ((want, bgp),) and kernel.writes == 1
    bgpd.route_event(want, True)            # bgpd hears of felix's write: no longer its route
    bgpd.delete_desired(bgp.dst)
    assert not bgpd.apply().changed and kernel.routes[want.dst] == want and kernel.writes == 1


def test_bgpd_takes_over_felixs_route_to_a_block_in_place_and_felix_then_leaves_it() -> None:
    carried = vxlan_route("10.244.2.0/26")
    kernel = MemoryRouteWriter(LINKS | {"vxlan.calico"}, [carried])
    felix, bgpd = RouteSync(kernel, FELIX_OWNERSHIP), RouteSync(kernel, BGPD_OWNERSHIP)
    felix.resync()
    bgpd.resync()
    felix.replace_desired({carried.dst: carried})
    tunnelled = learned("10.244.2.0/26", dev="tunl0")
    bgpd.set_desired(tunnelled)
    assert bgpd.apply().replaced == ((tunnelled, carried),) and kernel.writes == 1
    felix.route_event(tunnelled, True)
    felix.delete_desired(carried.dst)
    assert not felix.apply().changed and kernel.routes[carried.dst] == tunnelled and kernel.writes == 1


def test_only_carrier_routes_change_hands() -> None:
    bgp, block = learned("10.244.1.0/24"), blackhole("10.244.1.0/24")
    pod_route = pod(0, "10.244.1.1")
    assert not FELIX_OWNERSHIP.may_replace(bgp, block)            # a blackhole is no carrier
    assert not BGPD_OWNERSHIP.may_replace(block, bgp)
    assert not BGPD_OWNERSHIP.may_replace(pod_route, learned("10.244.1.1/32"))
    assert not BGPD_OWNERSHIP.may_replace(Route(bgp.dst, 4, dev="eth0", gateway=GW), bgp)   # static
