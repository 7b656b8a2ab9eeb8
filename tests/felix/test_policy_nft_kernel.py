"""felix's NetworkPolicy table on the real kernel through the real libnftables: a scratch
"node" namespace with three "pods" wired as the CNI plugin wires them (cali veths, /32 routes,
proxy ARP), the table built from :func:`felix.policycalc.node_policy` and applied in one
transaction, and real traffic checked against the verdicts of :func:`felix.policycalc.allows`:
ping and TCP between the pods under deny-all, allow-from-a-selector-on-a-port and
egress-to-a-named-port policies, replies of allowed connections passing, dropped packets
counted per endpoint."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import ExitStack
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from calyx import networkpolicy as np
from felix import policycalc as pc
from felix.dataplane import policynft
from felix.dataplane.nfttable import LibNftables

sys.path.insert(0, str(Path(__file__).parents[1] / "netlink"))
from scratch import ip, scratch_netns, unique_name  # noqa: E402

PORT = 8080
PODS = {"a": ("10.244.1.10", {"app": "client"}), "b": ("10.244.1.11", {"app": "web"}),
        "c": ("10.244.1.12", {"app": "other"})}


def run(netns: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def node():
    """(node namespace, pod name -> (namespace, device), servers started)."""
    with ExitStack() as stack:
        node_ns = stack.enter_context(scratch_netns("cxpn"))
        run(node_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        pods = {}
        for name, (address, _) in PODS.items():
            pod_ns = stack.enter_context(scratch_netns("cxpp"))
            device = f"cali{unique_name('')[-8:]}{name}"[:15]
            ip("link", "add", device, "type", "veth", "peer", "name", "eth0", "netns", pod_ns, netns=node_ns)
            ip("link", "set", device, "up", netns=node_ns)
            run(node_ns, "sysctl", "-qw", f"net.ipv4.conf.{device}.proxy_arp=1")
            ip("route", "add", f"{address}/32", "dev", device, netns=node_ns)
            ip("addr", "add", f"{address}/32", "dev", "eth0", netns=pod_ns)
            ip("link", "set", "eth0", "up", netns=pod_ns)
            ip("route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", netns=pod_ns)
            mac = ip("-j", "link", "show", device, netns=node_ns).stdout.split('"address":"')[1].split('"')[0]
            ip("neigh", "add", "169.254.1.1", "lladdr", mac, "dev", "eth0", "nud", "permanent", netns=pod_ns)
            ip("route", "add", "default", "via", "169.254.1.1", "dev", "eth0", netns=pod_ns)
            server = subprocess.Popen(["ip", "netns", "exec", pod_ns, sys.executable, "-m", "http.server",
                                       str(PORT), "--bind", address], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            stack.callback(lambda s=server: (s.terminate(), s.wait(5)))
            pods[name] = (pod_ns, device)
        time.sleep(0.5)
        yield node_ns, pods


def pings(pods, src: str, dst: str) -> bool:
    return run(pods[src][0], "ping", "-c", "1", "-W", "1", PODS[dst][0]).returncode == 0


def connects(pods, src: str, dst: str) -> bool:
    probe = (f"import urllib.request; urllib.request.urlopen('http://{PODS[dst][0]}:{PORT}/', timeout=2)")
    return run(pods[src][0], sys.executable, "-c", probe).returncode == 0


def apply(node_ns: str, pods, policies) -> pc.NodePolicy:
    cluster = [pc.PolicyPod("default", name, "node1", IPv4Address(address), labels)
               for name, (address, labels) in PODS.items()]
    result = pc.node_policy("node1", policies, cluster, {"default": {"kubernetes.io/metadata.name": "default"}})
    table = policynft.desired_table(result, {f"default/{n}": dev for n, (_, dev) in pods.items()})
    converge(node_ns, table)
    return result


def observed(node_ns: str) -> policynft.ObservedTable | None:
    listing = LibNftables(node_ns).list_table(policynft.FAMILY, policynft.TABLE)
    return None if listing is None else policynft.parse_table(listing)


def converge(node_ns: str, table: policynft.PolicyTable) -> policynft.PolicyPlan:
    """From whatever the kernel holds to ``table`` in one transaction, as felix does; after
    it, the kernel reads back as wanted (a second plan has nothing to do)."""
    step = policynft.plan(table, observed(node_ns))
    if step.commands:
        LibNftables(node_ns).run(step.commands)
    again = policynft.plan(table, observed(node_ns))
    assert again.commands == (), f"after {step.action} ({step.why}) still to do: {again.commands}"
    return step


def policy(name: str, **spec) -> np.NetworkPolicy:
    return np.parse_network_policy({"metadata": {"name": name, "namespace": "default"}, "spec": spec})


def matrix(pods) -> dict[tuple[str, str], tuple[bool, bool]]:
    return {(s, d): (pings(pods, s, d), connects(pods, s, d)) for s in PODS for d in PODS if s != d}


def test_traffic_follows_the_policies(node):
    node_ns, pods = node
    before = matrix(pods)
    assert all(ok == (True, True) for ok in before.values()), f"the pods cannot reach each other: {before}"

    # b takes only TCP 8080 from app=client: a reaches b's server but cannot ping it, c nothing.
    apply(node_ns, pods, [policy("web", podSelector={"matchLabels": {"app": "web"}},
                                 ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                           "ports": [{"port": PORT}]}])])
    got = matrix(pods)
    assert got[("a", "b")] == (False, True) and got[("c", "b")] == (False, False), got
    assert got[("b", "a")] == (True, True) and got[("b", "c")] == (True, True), \
        f"b's own connections (and their replies) must pass: {got}"

    # a may send nothing out but to app=web on TCP; everything else as before.
    apply(node_ns, pods, [policy("client-out", podSelector={"matchLabels": {"app": "client"}},
                                 policyTypes=["Egress"],
                                 egress=[{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                          "ports": [{"protocol": "TCP"}]}])])
    got = matrix(pods)
    assert got[("a", "b")] == (False, True) and got[("a", "c")] == (False, False), got
    assert got[("c", "a")] == (True, True), f"a still takes connections (replies pass): {got}"

    # Deny all ingress: nothing reaches any pod; drops are counted on the endpoint's chain.
    apply(node_ns, pods, [policy("deny", podSelector={}, policyTypes=["Ingress"])])
    assert not any(ok for pair in matrix(pods).values() for ok in pair)
    listed = LibNftables(node_ns).list_table(policynft.FAMILY, policynft.TABLE)
    counters = [e["counter"]["packets"] for item in listed if "rule" in item
                and item["rule"]["chain"] == policynft.chain_name(np.INGRESS, pods["b"][1])
                for e in item["rule"]["expr"] if "counter" in e]
    assert counters and counters[0] > 0, f"no drops counted for b: {counters}"


def test_ip_blocks_with_exceptions_and_named_ports(node):
    node_ns, pods = node
    # c takes anything from 10.244.1.0/24 but b.
    apply(node_ns, pods, [policy("block", podSelector={"matchLabels": {"app": "other"}},
                                 ingress=[{"from": [{"ipBlock": {"cidr": "10.244.1.0/24",
                                                                 "except": ["10.244.1.11/32"]}}]}])])
    assert pings(pods, "a", "c") and connects(pods, "a", "c")
    assert not pings(pods, "b", "c") and not connects(pods, "b", "c")

    # a may only open connections to a port named http: b has one (8080), c has none.
    cluster = [pc.PolicyPod("default", n, "node1", IPv4Address(a), labels,
                            (pc.ContainerPort("http", "TCP", PORT),) if n == "b" else ())
               for n, (a, labels) in PODS.items()]
    out = policy("to-http", podSelector={"matchLabels": {"app": "client"}}, policyTypes=["Egress"],
                 egress=[{"ports": [{"port": "http"}]}])
    result = pc.node_policy("node1", [out], cluster, {"default": {}})
    converge(node_ns, policynft.desired_table(result, {f"default/{n}": dev for n, (_, dev) in pods.items()}))
    assert connects(pods, "a", "b")
    assert not connects(pods, "a", "c") and not pings(pods, "a", "b")
    assert pings(pods, "b", "a") and connects(pods, "c", "a"), "a still takes connections"


def test_changes_are_element_and_chain_updates_and_the_table_goes_with_the_last_policy(node):
    node_ns, pods = node
    devices = {f"default/{n}": dev for n, (_, dev) in pods.items()}
    web = policy("web", podSelector={"matchLabels": {"app": "web"}},
                 ingress=[{"from": [{"podSelector": {"matchLabels": {"role": "trusted"}}}]}])

    def table(labels_of_a: dict[str, str]) -> policynft.PolicyTable:
        cluster = [pc.PolicyPod("default", n, "node1", IPv4Address(a), labels_of_a if n == "a" else labels)
                   for n, (a, labels) in PODS.items()]
        return policynft.desired_table(pc.node_policy("node1", [web], cluster, {"default": {}}), devices)

    assert converge(node_ns, table({"app": "client"})).action == "create"
    assert not pings(pods, "a", "b")
    # a gains the label: one set element, nothing else.
    step = converge(node_ns, table({"app": "client", "role": "trusted"}))
    assert [next(iter(c)) + " " + next(iter(next(iter(c.values())))) for c in step.commands] == ["add element"]
    assert pings(pods, "a", "b") and not pings(pods, "c", "b")
    # Someone adds a chain of their own to Calyx's table: rebuilt, as wanted again.
    LibNftables(node_ns).run([{"add": {"map": {"family": "ip", "table": policynft.TABLE, "name": "mine",
                                               "type": "ipv4_addr", "map": "verdict"}}}])
    assert converge(node_ns, table({"app": "client", "role": "trusted"})).action == "rebuild"
    assert pings(pods, "a", "b")
    # No policy left: the table goes; a table of someone else's stays.
    LibNftables(node_ns).run([{"add": {"table": {"family": "ip", "name": "theirs"}}}])
    empty = policynft.desired_table(pc.node_policy("node1", [], [], {}), devices)
    assert converge(node_ns, empty).action == "remove"
    assert observed(node_ns) is None and LibNftables(node_ns).list_table("ip", "theirs") is not None


def test_a_pod_leaving_policy_loses_its_chain_and_unused_sets_go_in_one_transaction(node):
    """nftables refuses to delete a chain a map still jumps to, or a set a rule still uses: the
    plan must order these (and this is where it would fail)."""
    node_ns, pods = node
    devices = {f"default/{n}": dev for n, (_, dev) in pods.items()}
    cluster = [pc.PolicyPod("default", n, "node1", IPv4Address(a), labels) for n, (a, labels) in PODS.items()]
    web = policy("web", podSelector={"matchLabels": {"app": "web"}},
                 ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}])
    other = policy("other", podSelector={"matchLabels": {"app": "other"}},
                   ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
                   egress=[{"to": [{"podSelector": {"matchLabels": {"app": "client"}}}]}])

    def table(*policies) -> policynft.PolicyTable:
        return policynft.desired_table(pc.node_policy("node1", list(policies), cluster, {"default": {}}), devices)

    converge(node_ns, table(web, other))
    assert not pings(pods, "a", "c") and pings(pods, "c", "a")
    step = converge(node_ns, table(web))          # c's two chains, their map entries, a set go
    assert step.action == "update"
    assert set(observed(node_ns).chains) == {policynft.FORWARD, policynft.chain_name("Ingress", pods["b"][1])}
    assert pings(pods, "a", "c") and pings(pods, "c", "a") and not pings(pods, "c", "b")
