"""felix's read-only forwarding endpoints (felix.inspect) served by the health server, against
a real kernel: route lookups answering as ``ip route get`` and ``ip route get fibmatch`` do,
blackholes found in the table, unreachable destinations, devices."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry
from pyroute2 import IPRoute

from calyx.netlink import RouteTable
from calyx.observability import HealthServer
from felix.inspect import NodeInspector
from scratch import ip


@pytest.fixture
def server(netns: str) -> Iterator[str]:
    ip("route", "add", "10.244.1.0/26", "via", "10.250.0.2", "dev", "up0", "proto", "186", netns=netns)
    ip("route", "add", "blackhole", "10.244.0.0/26", "proto", "80", netns=netns)
    ip("route", "add", "10.244.2.0/26", "via", "10.250.0.3", "dev", "up0", "onlink", "proto", "80",
       "mtu", "1400", netns=netns)
    inspector = NodeInspector("node-a", open_table=lambda: RouteTable(netns),
                              open_iproute=lambda: IPRoute(netns=netns))
    with HealthServer("127.0.0.1", 0, CollectorRegistry(), handlers=inspector.handlers()) as health:
        yield health.url


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_route_learned_over_bgp(server: str) -> None:
    status, body = get(f"{server}/v1/route?dst=10.244.1.5")
    assert status == 200
    assert body["node"] == "node-a"
    assert body["lookup"] == {"ok": True, "error": None, "type": "unicast", "dev": "up0", "gateway": "10.250.0.2",
                              "prefsrc": "10.250.0.1", "mtu": None}
    assert body["match"] == {"dst": "10.244.1.0/26", "type": "unicast", "proto": 186, "owner": "bgpd", "dev": "up0",
                             "gateway": "10.250.0.2", "onlink": False, "scope": "universe", "table": 254,
                             "mtu": None}
    assert body["device"]["name"] == "up0" and body["device"]["kind"] == "veth" and body["device"]["up"]


def test_onlink_route_with_mtu(server: str) -> None:
    _, body = get(f"{server}/v1/route?dst=10.244.2.9")
    assert body["match"]["owner"] == "felix" and body["match"]["onlink"] is True
    assert body["match"]["mtu"] == 1400 and body["lookup"]["mtu"] == 1400


def test_blackhole_is_found_in_the_table(server: str) -> None:
    _, body = get(f"{server}/v1/route?dst=10.244.0.3")
    assert body["lookup"]["ok"] is False and body["lookup"]["errno"] == "EINVAL"
    assert body["match"]["dst"] == "10.244.0.0/26" and body["match"]["type"] == "blackhole"
    assert body["match"]["owner"] == "felix" and body["device"] is None


def test_no_route(server: str) -> None:
    _, body = get(f"{server}/v1/route?dst=192.0.2.1")
    assert body["lookup"] == {"ok": False, "error": "Network is unreachable", "errno": "ENETUNREACH"}
    assert body["match"] is None


def test_bad_destination_is_refused(server: str) -> None:
    status, body = get(f"{server}/v1/route?dst=10.244.0.300")
    assert status == 400 and "dst" in body["error"] and "10.244.0.300" in body["error"]


def test_link(server: str) -> None:
    _, body = get(f"{server}/v1/link?name=up0")
    assert body["device"]["mtu"] == 1500 and body["device"]["addresses"] == ["10.250.0.1/24"]
    _, body = get(f"{server}/v1/link?name=cali0123456789a")
    assert body == {"node": "node-a", "name": "cali0123456789a", "device": None}
