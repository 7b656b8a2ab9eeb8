"""felix's VXLAN manager with the real writer (calyx.vxlanlink over pyroute2) in network
namespaces: two "nodes" joined by a veth underlay each get vxlan.calico with the other's
neighbour and FDB entries; a pod address behind one answers a ping from the other through the
tunnel; a restarted manager writes nothing; stale entries are removed; the device goes when
VXLAN is no longer wanted."""
from __future__ import annotations

import contextlib
import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Iterator

from prometheus_client import CollectorRegistry

from calyx.netlink import RouteTable
from calyx.vxlanlink import VxlanLinks
from felix.dataplane.vxlan import VxlanManager
from felix.metrics import FelixMetrics
from felix.vxlancalc import VxlanPeer, VxlanSpec, vxlan_route
from scratch import ip, scratch_netns, unique_name

DEV = "vxlan.calico"
UNDERLAY = {"a": IPv4Address("192.168.77.1"), "b": IPv4Address("192.168.77.2")}
VTEP = {"a": IPv4Address("10.244.1.0"), "b": IPv4Address("10.244.2.0")}
BLOCK = {"a": IPv4Network("10.244.1.0/24"), "b": IPv4Network("10.244.2.0/24")}
POD_B = "10.244.2.5"


@contextlib.contextmanager
def two_nodes() -> Iterator[dict[str, str]]:
    with scratch_netns("cxva") as a, scratch_netns("cxvb") as b:
        left, right = unique_name("vxu"), unique_name("vxu")
        ip("link", "add", left, "type", "veth", "peer", "name", right, netns=a)
        ip("link", "set", right, "netns", b, netns=a)
        for ns, dev, node in ((a, left, "a"), (b, right, "b")):
            ip("addr", "add", f"{UNDERLAY[node]}/24", "dev", dev, netns=ns)
            ip("link", "set", dev, "up", netns=ns)
        ip("addr", "add", f"{POD_B}/32", "dev", "lo", netns=b)     # a "pod" address on node b
        yield {"a": a, "b": b}


def spec(node: str, peer_mac: str | None) -> VxlanSpec:
    other = "b" if node == "a" else "a"
    peers = (VxlanPeer(f"node-{other}", VTEP[other], peer_mac, UNDERLAY[other]),) if peer_mac else ()
    return VxlanSpec(True, address=VTEP[node], local=UNDERLAY[node], mtu=1450, peers=peers, reason="test")


def manager(netns: str) -> tuple[VxlanManager, VxlanLinks, CollectorRegistry]:
    registry = CollectorRegistry()
    links = VxlanLinks(netns)
    return VxlanManager(links, FelixMetrics.create(registry), grace=0), links, registry


def link_details(netns: str) -> dict:
    (details,) = json.loads(ip("-d", "-j", "link", "show", DEV, netns=netns).stdout)
    return details


def test_two_nodes_reach_each_others_pods_through_vxlan_calico() -> None:
    with two_nodes() as ns:
        managers = {node: manager(ns[node]) for node in ns}
        try:
            for node, (vxlan, _, _) in managers.items():   # first pass: own device, MAC not known to peers
                vxlan.apply(spec(node, None), now=0)
            macs = {node: links.device(DEV).mac for node, (_, links, _) in managers.items()}
            for node, (vxlan, _, _) in managers.items():
                other = "b" if node == "a" else "a"
                vxlan.apply(spec(node, macs[other]), now=1)
                assert vxlan.annotations == {"calyx.dev/ipv4-vxlan-tunnel-addr": str(VTEP[node]),
                                             "calyx.dev/vxlan-tunnel-mac": macs[node]}
            for node in ns:
                other = "b" if node == "a" else "a"
                with RouteTable(ns[node]) as table:
                    result = table.apply([vxlan_route(BLOCK[other], VTEP[other])], [])
                    assert result.errors == []
                details = link_details(ns[node])
                data = details["linkinfo"]["info_data"]
                assert (data["id"], data["port"], data["local"], data["learning"], details["mtu"]) == (
                    4096, 4789, str(UNDERLAY[node]), False, 1450)
                assert ip("route", "show", str(BLOCK[other]), netns=ns[node]).stdout.split() == [
                    str(BLOCK[other]), "via", str(VTEP[other]), "dev", DEV, "proto", "80", "onlink"]
                assert ip("neigh", "show", "dev", DEV, netns=ns[node]).stdout.split() == [
                    str(VTEP[other]), "lladdr", macs[other], "PERMANENT"]
                assert ip("-br", "addr", "show", DEV, netns=ns[node]).stdout.split()[2] == f"{VTEP[node]}/32"
            fdb = ip("netns", "exec", ns["a"], "bridge", "fdb", "show", "dev", DEV).stdout
            assert f"{macs['b']} dst {UNDERLAY['b']} self permanent" in fdb

            ping = ip("netns", "exec", ns["a"], "ping", "-c", "2", "-W", "2", POD_B, check=False)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            tx = json.loads(ip("-s", "-j", "link", "show", DEV, netns=ns["a"]).stdout)[0]["stats64"]["tx"]["packets"]
            assert tx >= 2          # the pings left through the tunnel

            # restart: a fresh manager adopts everything with no write
            vxlan, links, registry = manager(ns["a"])
            try:
                vxlan.apply(spec("a", macs["b"]), now=2)
                assert registry.get_sample_value("felix_netlink_writes_total", {"object": "vxlan"}) is None
                assert links.device(DEV).mac == macs["a"]
                # stale entries a gone node left are removed, the wanted ones stay
                ip("neigh", "add", "10.244.9.0", "lladdr", "66:00:00:00:00:99", "dev", DEV, "nud", "permanent",
                   netns=ns["a"])
                ip("netns", "exec", ns["a"], "bridge", "fdb", "add", "66:00:00:00:00:99", "dev", DEV,
                   "dst", "192.168.77.9", "self", "permanent")
                vxlan.apply(spec("a", macs["b"]), now=3)
                assert registry.get_sample_value("felix_netlink_writes_total", {"object": "vxlan"}) == 2
                assert links.neighbours(DEV) == {VTEP["b"]: macs["b"]}
                assert links.fdb(DEV) == {macs["b"]: UNDERLAY["b"]}
                # no longer wanted (grace 0): the device goes, its routes with it
                vxlan.apply(VxlanSpec(False, reason="no VXLAN pool"), now=4)
                assert links.device(DEV) is None
                assert vxlan.annotations == {"calyx.dev/ipv4-vxlan-tunnel-addr": None,
                                             "calyx.dev/vxlan-tunnel-mac": None}
                assert ip("route", "show", str(BLOCK["b"]), netns=ns["a"]).stdout == ""
            finally:
                links.close()
        finally:
            for _, links, _ in managers.values():
                links.close()


def test_a_device_with_another_vni_is_recreated() -> None:
    with scratch_netns("cxvr") as netns:
        ip("link", "add", "vxu0", "type", "veth", "peer", "name", "vxu1", netns=netns)
        ip("addr", "add", f"{UNDERLAY['a']}/24", "dev", "vxu0", netns=netns)
        ip("link", "add", DEV, "type", "vxlan", "id", "7", "dstport", "4789", "local", str(UNDERLAY["a"]),
           netns=netns)
        vxlan, links, _ = manager(netns)
        try:
            vxlan.apply(spec("a", None), now=0)
            device = links.device(DEV)
            assert (device.vni, device.learning, device.up, device.addresses) == (
                4096, False, True, (IPv4Interface(f"{VTEP['a']}/32"),))
        finally:
            links.close()
