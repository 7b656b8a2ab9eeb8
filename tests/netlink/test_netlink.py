"""calyx.netlink against a real kernel, in a scratch network namespace."""
from __future__ import annotations

import queue
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from calyx.netlink import LinkMonitor, NetlinkUnsupported, Route, RouteMonitor, RouteTable
from scratch import add_veth, ip, unique_name

FELIX, BGP = 80, 186

pytestmark = pytest.mark.lab     # scratch network namespaces on this machine


def pod_route(i: int, dev: str = "up0") -> Route:
    return Route(IPv4Network((0x0A640000 + i, 32)), proto=FELIX, dev=dev, scope="link")


def kernel_routes(netns: str, *selector: str) -> list[str]:
    return [line.strip() for line in ip("route", "show", *selector, netns=netns).stdout.splitlines()]


def test_bulk_apply_of_10k_routes_lands_in_the_kernel_and_dumps_back(netns: str, table: RouteTable) -> None:
    routes = [pod_route(i) for i in range(10_000)]
    result = table.apply(routes, [])
    assert result.errors == []
    assert result.writes == 10_000
    listed = kernel_routes(netns, "proto", "80")
    assert len(listed) == 10_000
    assert "10.100.0.0 dev up0 scope link" in listed
    assert "10.100.39.15 dev up0 scope link" in listed   # 10.100.0.0 + 9999
    dumped = table.dump(FELIX)
    assert dumped == {r.dst: r for r in routes}

    result = table.apply([], routes[:5000])
    assert (result.writes, result.errors) == (5000, [])
    assert set(table.dump(FELIX)) == {r.dst for r in routes[5000:]}


def test_dump_round_trips_every_route_shape(netns: str, table: RouteTable) -> None:
    shapes = [
        Route(IPv4Network("10.244.1.0/26"), proto=FELIX, kind="blackhole"),
        Route(IPv4Network("10.244.1.5/32"), proto=FELIX, dev="up0", scope="link"),
        Route(IPv4Network("10.244.2.0/26"), proto=BGP, dev="up0", gateway=IPv4Address("10.9.9.9"), onlink=True),
        Route(IPv4Network("10.244.3.0/26"), proto=BGP, gateway=IPv4Address("10.250.0.7")),
        Route(IPv4Network("0.0.0.0/0"), proto=BGP, gateway=IPv4Address("10.250.0.254")),
    ]
    assert table.apply(shapes, []).errors == []
    dumped = table.dump()
    for route in shapes:
        expected = route if route.dev or route.kind != "unicast" else Route(
            route.dst, route.proto, gateway=route.gateway, dev="up0")
        assert dumped[route.dst] == expected
    # the kernel's own connected route is reported too, with its protocol
    assert dumped[IPv4Network("10.250.0.0/24")] == Route(IPv4Network("10.250.0.0/24"), proto=2, dev="up0",
                                                          scope="link")
    assert set(table.dump(BGP)) == {IPv4Network(n) for n in ("10.244.2.0/26", "10.244.3.0/26", "0.0.0.0/0")}
    assert "blackhole 10.244.1.0/26 proto 80" in kernel_routes(netns)
    assert "10.244.2.0/26 via 10.9.9.9 dev up0 proto bgp onlink" in kernel_routes(netns)


def test_errors_are_reported_per_route_and_the_rest_is_applied(netns: str, table: RouteTable) -> None:
    good = [pod_route(i) for i in range(300)]
    no_device = pod_route(1000, dev="nosuchdev")
    unreachable_gateway = Route(IPv4Network("10.99.0.0/24"), proto=FELIX, gateway=IPv4Address("10.77.0.1"))
    mixed = good[:150] + [unreachable_gateway] + good[150:] + [no_device]
    result = table.apply(mixed, [])
    assert result.writes == 300
    problems = dict(result.errors)
    assert set(problems) == {no_device, unreachable_gateway}
    assert "nosuchdev" in problems[no_device]
    assert "unreachable" in problems[unreachable_gateway].lower()
    assert set(table.dump(FELIX)) == {r.dst for r in good}
    # deleting a route that is not there is an error for that route only
    result = table.apply([], [pod_route(5000), good[0]])
    assert result.writes == 1
    assert [r for r, _ in result.errors] == [pod_route(5000)]


def test_a_delete_never_removes_another_owners_route(netns: str, table: RouteTable) -> None:
    dst = IPv4Network("10.244.9.0/26")
    ip("route", "add", str(dst), "via", "10.250.0.9", "proto", "186", netns=netns)
    felix_view = Route(dst, proto=FELIX, gateway=IPv4Address("10.250.0.9"))
    result = table.apply([], [felix_view])
    assert result.writes == 0 and len(result.errors) == 1
    assert table.dump()[dst].proto == BGP


def test_an_upsert_replaces_a_device_route_of_another_protocol(netns: str, table: RouteTable) -> None:
    ip("route", "add", "10.244.7.7/32", "dev", "up0", "scope", "link", "proto", "static", netns=netns)
    adopted = Route(IPv4Network("10.244.7.7/32"), proto=FELIX, dev="up0", scope="link")
    assert table.apply([adopted], []).writes == 1
    assert kernel_routes(netns, "10.244.7.7/32") == ["10.244.7.7 dev up0 proto 80 scope link"]
    assert table.dump()[adopted.dst] == adopted


def test_lookups_links_and_addresses(netns: str, table: RouteTable) -> None:
    assert table.links()["up0"] > 1
    assert table.route_to(IPv4Address("10.250.0.77")) == ("up0", None)
    ip("route", "add", "10.66.0.0/16", "via", "10.250.0.2", netns=netns)
    assert table.route_to(IPv4Address("10.66.1.1")) == ("up0", IPv4Address("10.250.0.2"))
    assert table.route_to(IPv4Address("192.0.2.1")) == (None, None)
    assert table.interface_prefix(IPv4Address("10.250.0.1")) == 24
    assert table.interface_prefix(IPv4Address("10.250.0.2")) is None

    table.set_link("up0", mtu=1400, up=False)
    table.add_address("up0", IPv4Interface("10.251.0.1/32"))
    link = table.link("up0")
    assert link is not None and (link.kind, link.mtu, link.up) == ("veth", 1400, False)
    assert IPv4Interface("10.251.0.1/32") in link.addresses
    table.delete_address("up0", IPv4Interface("10.251.0.1/32"))
    table.set_link("up0", up=True)
    link = table.link("up0")
    assert link is not None and link.up and IPv4Interface("10.251.0.1/32") not in link.addresses
    assert table.link("nosuchdev") is None


def test_create_ipip_matches_what_the_kernel_can_do(netns: str, table: RouteTable) -> None:
    probe = unique_name("cxp")
    kernel_can = ip("link", "add", probe, "type", "ipip", netns=netns, check=False).returncode == 0
    if kernel_can:
        table.create_ipip("tunl0")    # the fallback device exists already: adopting it is fine
        link = table.link("tunl0")
        assert link is not None and link.kind == "ipip"
    else:
        with pytest.raises(NetlinkUnsupported, match="ipip"):
            table.create_ipip("tunl0")
        assert table.link("tunl0") is None


def test_link_monitor_reports_links_appearing_and_going(netns: str) -> None:
    events: queue.Queue = queue.Queue()
    monitor = LinkMonitor(lambda name, index, present: events.put((name, present)), netns=netns).start()
    try:
        add_veth(netns, "cali1234567890a", peer="podside0")
        seen = _collect(events, lambda e: e == ("cali1234567890a", True))
        assert ("cali1234567890a", True) in seen
        ip("link", "del", "cali1234567890a", netns=netns)
        assert ("cali1234567890a", False) in _collect(events, lambda e: e == ("cali1234567890a", False))
    finally:
        monitor.stop()


def test_route_monitor_reports_a_deleted_route(netns: str, table: RouteTable) -> None:
    events: queue.Queue = queue.Queue()
    route = pod_route(1)
    monitor = RouteMonitor(lambda r, present: events.put((r, present)), netns=netns).start()
    try:
        table.apply([route], [])
        assert (route, True) in _collect(events, lambda e: e == (route, True))
        ip("route", "del", "10.100.0.1/32", netns=netns)
        assert (route, False) in _collect(events, lambda e: e == (route, False))
    finally:
        monitor.stop()


def _collect(events: queue.Queue, until, timeout: float = 10.0) -> list:
    seen = []
    while True:
        try:
            event = events.get(timeout=timeout)
        except queue.Empty:
            return seen
        seen.append(event)
        if until(event):
            return seen
