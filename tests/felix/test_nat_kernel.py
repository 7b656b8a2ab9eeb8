"""felix's NAT manager on the real kernel through the real libnftables, in scratch network
namespaces: it programs ``ip calyx-nat``, a restarted manager adopts it with no write, a pool
change is an element change, the table goes when no pool wants NAT, other tables are left
alone, and the table really masquerades: a "pod" reaches an "internet" host that has no route
back to the pods only while the table is there, and pod-to-pool traffic keeps its source."""
from __future__ import annotations

import subprocess
import sys
from contextlib import ExitStack
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry

from calyx import model
from felix.dataplane import nftjson
from felix.dataplane.nat import NatManager
from felix.dataplane.nfttable import LibNftables
from felix.metrics import FelixMetrics
from felix.nat import NO_NAT, NatState, desired_nat

sys.path.insert(0, str(Path(__file__).parents[1] / "netlink"))
from scratch import ip, scratch_netns, unique_name  # noqa: E402

NODE_ADDRESS = "192.168.77.1"          # the node's address towards the "internet"
INTERNET_HOST = "192.168.77.2"         # knows no route to the pods
POD = "10.244.1.5"
PEER_POD = "10.244.2.5"                # another pod of the pool, reached without NAT


def nat_state(nat: bool = True, pools: tuple[str, ...] = ("10.244.0.0/16",)) -> NatState:
    node = model.NodeInfo("node-1", internal_ip=IPv4Address(NODE_ADDRESS))
    return desired_nat(model.Snapshot(nodes={node.name: node}, ippools={
        f"pool-{i}": model.IPPool(f"pool-{i}", IPv4Network(cidr), nat_outgoing=nat) for i, cidr in enumerate(pools)}))


def netns_exec(netns: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=check,
                          timeout=30)


def pings(netns: str, target: str) -> bool:
    return netns_exec(netns, "ping", "-c", "1", "-W", "2", target).returncode == 0


def link_pair(left: str, left_name: str, left_address: str, right: str, right_name: str,
              right_address: str) -> None:
    temp = unique_name("cxv")
    ip("link", "add", temp, "type", "veth", "peer", "name", f"{temp}p")
    ip("link", "set", temp, "netns", left)
    ip("link", "set", f"{temp}p", "netns", right)
    for netns, old, new, address in ((left, temp, left_name, left_address),
                                     (right, f"{temp}p", right_name, right_address)):
        ip("link", "set", old, "name", new, netns=netns)
        ip("addr", "add", address, "dev", new, netns=netns)
        ip("link", "set", new, "up", netns=netns)


@pytest.fixture
def world() -> Iterator[dict[str, str]]:
    """node (routes, NAT) between pod (10.244.1.5), peer pod (10.244.2.5) and internet
    (192.168.77.2, which routes nothing back to 10.244.0.0/16)."""
    with ExitStack() as stack:
        names = {role: stack.enter_context(scratch_netns(prefix)) for role, prefix in
                 (("node", "cxnn"), ("pod", "cxnp"), ("peer", "cxnq"), ("internet", "cxni"))}
        link_pair(names["node"], "cali1", "169.254.1.1/32", names["pod"], "eth0", f"{POD}/32")
        link_pair(names["node"], "cali2", "169.254.1.1/32", names["peer"], "eth0", f"{PEER_POD}/32")
        link_pair(names["node"], "eth1", f"{NODE_ADDRESS}/24", names["internet"], "eth0", f"{INTERNET_HOST}/24")
        ip("route", "add", f"{POD}/32", "dev", "cali1", netns=names["node"])
        ip("route", "add", f"{PEER_POD}/32", "dev", "cali2", netns=names["node"])
        for pod in ("pod", "peer"):
            ip("route", "add", "169.254.1.1/32", "dev", "eth0", netns=names[pod])
            ip("route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink", netns=names[pod])
        netns_exec(names["node"], "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        for dev in ("cali1", "cali2"):
            netns_exec(names["node"], "sysctl", "-qw", f"net.ipv4.conf.{dev}.proxy_arp=1", check=True)
        yield names


def manager(netns: str) -> tuple[NatManager, LibNftables, CollectorRegistry]:
    nft = LibNftables(netns)
    registry = CollectorRegistry()
    return NatManager(lambda: nft, FelixMetrics.create(registry)), nft, registry


def writes(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("felix_netlink_writes_total", {"object": "nat"}) or 0.0


def observed(nft: LibNftables) -> nftjson.ObservedTable | None:
    listing = nft.list_table(nftjson.FAMILY, nftjson.TABLE)
    return None if listing is None else nftjson.parse_table(listing)


def test_program_adopt_change_remove_on_the_kernel(world: dict[str, str]) -> None:
    node = world["node"]
    other = LibNftables(node)
    other.run([{"add": {"table": {"family": "ip", "name": "cxtest-other"}}},
               {"add": {"chain": {"family": "ip", "table": "cxtest-other", "name": "c"}}}])
    assert not pings(world["pod"], INTERNET_HOST)      # the internet host cannot answer a pod address

    nat, nft, registry = manager(node)
    plan = nat.reconcile(nat_state(), reread=True)
    assert plan is not None and plan.action == "create" and writes(registry) == 1
    table = observed(nft)
    assert table is not None and table.intact, table and table.differences
    assert table.elements == nftjson.wanted_elements(nat_state())
    assert registry.get_sample_value("felix_nat_available") == 1
    assert pings(world["pod"], INTERNET_HOST)          # masqueraded to 192.168.77.1
    assert pings(world["pod"], PEER_POD)

    # a restarted manager finds the table as wanted: nothing is written
    restarted, _, registry2 = manager(node)
    assert restarted.reconcile(nat_state(), reread=True).commands == () and writes(registry2) == 0

    # a second pool with natOutgoing: one transaction of element changes, the sets stay
    handles = {i["set"]["name"]: i["set"]["handle"] for i in nft.list_table("ip", nftjson.TABLE) if "set" in i}
    two = nat_state(pools=("10.244.0.0/16", "10.70.0.0/16"))
    plan = restarted.reconcile(two)
    assert plan is not None and plan.action == "update" and writes(registry2) == 1
    assert {i["set"]["name"]: i["set"]["handle"] for i in nft.list_table("ip", nftjson.TABLE) if "set" in i} == handles
    assert observed(nft).elements == nftjson.wanted_elements(two)
    assert restarted.reconcile(two, reread=True).commands == ()

    # someone deletes the table by hand: the next re-read brings it back
    other.run([nftjson.delete_table_command()])
    assert not pings(world["pod"], INTERNET_HOST)
    assert restarted.reconcile(two, reread=True).action == "create"
    assert pings(world["pod"], INTERNET_HOST)

    # no pool wants NAT any more: the table goes, the other table stays
    assert restarted.reconcile(nat_state(nat=False)).action == "remove"
    assert observed(nft) is None
    assert other.list_table("ip", "cxtest-other") is not None
    assert restarted.reconcile(NO_NAT, reread=True).commands == ()
    assert not pings(world["pod"], INTERNET_HOST)


def test_pod_to_pool_traffic_keeps_its_source(world: dict[str, str]) -> None:
    """The peer pod sees the pod's own address; the internet host sees the node's."""
    nat, _, _ = manager(world["node"])
    nat.reconcile(nat_state(), reread=True)
    # the internet host could answer the pod directly here: what it sees is the translation alone
    ip("route", "add", "10.244.0.0/16", "via", NODE_ADDRESS, netns=world["internet"])
    sources = {}
    for target, address in (("peer", PEER_POD), ("internet", INTERNET_HOST)):
        with subprocess.Popen(["ip", "netns", "exec", world[target], "tcpdump", "-l", "-n", "-c", "1", "-i", "eth0",
                               "icmp[icmptype] == icmp-echo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as dump:
            try:
                for _ in range(20):
                    if pings(world["pod"], address) and dump.poll() is not None:
                        break
                out, _ = dump.communicate(timeout=10)
            finally:
                if dump.poll() is None:
                    dump.kill()
        sources[target] = out.split(" IP ")[1].split(" > ")[0] if " IP " in out else out
    assert sources == {"peer": POD, "internet": NODE_ADDRESS}
