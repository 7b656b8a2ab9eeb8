"""IPPool ``natOutgoing`` end to end (``tests/lab/topologies/nat-outgoing``): two Calyx nodes
with the real control plane and the chart's DaemonSet, plain BGP on the host kernel, and an
"internet" host beside node1 that has no route back to the pods.

felix programs ``ip calyx-nat`` on every node; a pod reaches the internet host (which sees
node1's address, so the reply can only come back through node1's masquerade) while pod-to-pod
packets keep the pods' own addresses on the wire; switching natOutgoing off removes the table
and the internet host becomes unreachable for pods again.
"""
from __future__ import annotations

import contextlib
import json
import re
import secrets
import sys
import time
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from calyxlab import pytest_plugin
from calyxlab.traffic import POD_NAMESPACE
from e2e_support import add_pods, capture_icmp, custom_api, ping_once, wait_for
from trace_support import check_every_pair, trace
from felix.dataplane import nftjson

pytestmark = [pytest.mark.lab]

TOPOLOGY = Path(__file__).parents[1] / "lab" / "topologies" / "nat-outgoing" / "nat-outgoing.clab.yml"
POOL = "default-ipv4-ippool"
NODES = {"node1": "10.0.0.1", "node2": "10.0.0.2"}
NODE1_INTERNET_ADDRESS = "203.0.113.1"
INTERNET_HOST = "203.0.113.10"
LIST_TABLE = ("import json, nftables; n = nftables.Nftables(); n.set_json_output(True); "
              f"print(json.dumps(n.json_cmd({{'nftables': [{json.dumps(nftjson.list_table_command())}]}})))")


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with pytest_plugin.module_lab(request, unique_lab_name("nat-outgoing"), TOPOLOGY, kernel="host") as lab:
        yield lab


@pytest.fixture(scope="module")
def cluster_pods(lab):
    return add_pods(lab, list(NODES))


def nat_table(lab, node: str) -> nftjson.ObservedTable | None:
    """``ip calyx-nat`` as the node's kernel lists it (read with libnftables inside the node)."""
    res = lab.exec(node, [sys.executable, "-c", LIST_TABLE], check=True, timeout=60)
    rc, output, error = json.loads(res.stdout)
    if rc != 0:
        assert "No such file or directory" in error, f"node {node}: listing the NAT table failed: {error}"
        return None
    return nftjson.parse_table([item for item in output["nftables"] if "metainfo" not in item])


def test_every_node_programs_the_nat_table(lab, cluster_pods):
    want = {"masq-sources": {IPv4Network("10.244.0.0/16")}, "all-pools": {IPv4Network("10.244.0.0/16")},
            "node-addresses": {IPv4Network(f"{a}/32") for a in NODES.values()}}
    for node in NODES:
        table = wait_for(f"node {node}: ip calyx-nat as wanted",
                         lambda node=node: (t := nat_table(lab, node)) is not None and t.intact
                         and {k: set(v) for k, v in t.elements.items()} == want and t)
        print(f"node {node}: {dict(table.elements)}")


def test_a_pod_reaches_the_internet_host_masqueraded(lab, cluster_pods):
    pod = cluster_pods["node1"]
    log = lab.names.log_dir("internet") / f"tcpdump-{secrets.token_hex(3)}.log"
    handle = lab.spawn("internet", ["tcpdump", "-l", "-nn", "-i", "eth1", "-c", "2", "icmp"], log=log,
                       name="tcpdump")
    try:
        wait_for("tcpdump listening on internet:eth1",
                 lambda: log.exists() and "listening on" in log.read_text(errors="replace"))
        wait_for(f"pod {pod.name} ({pod.ip}) pings {INTERNET_HOST}", lambda: ping_once(lab, pod, INTERNET_HOST))
        deadline = time.monotonic() + 30
        while lab.alive(handle) and time.monotonic() < deadline:
            time.sleep(0.2)
        text = log.read_text(errors="replace")
    finally:
        lab.kill(handle, grace=2)
        with contextlib.suppress(OSError):
            log.unlink()
    requests = re.findall(r"IP (\S+) > " + re.escape(INTERNET_HOST) + r": ICMP echo request", text)
    print(f"internet host saw echo requests from {requests}")
    assert requests and set(requests) == {NODE1_INTERNET_ADDRESS}, text
    # the internet host has no way back to a pod's own address: no default route, no pool route
    table = lab.exec("internet", ["ip", "-4", "route", "show"], check=True).stdout
    assert "default" not in table and "10.244." not in table, table


def test_calyxctl_trace_says_the_way_out_is_masqueraded(lab, cluster_pods):
    """``calyxctl trace`` from node1's pod to the internet host: one hop out of node1, leaving
    with node1's address as the source (the pool's natOutgoing); between the pods, plain routing
    as each node's kernel routes it."""
    pod = cluster_pods["node1"]
    rc, body, _ = trace(lab, f"{POD_NAMESPACE}/{pod.name}", INTERNET_HOST, text=True)
    assert rc == 0 and body["complete"], body["problems"]
    source = next(f["text"] for f in body["hops"][1]["facts"] if f["label"] == "source")
    assert source.startswith(f"masqueraded to {NODE1_INTERNET_ADDRESS}"), source
    check_every_pair(lab, cluster_pods, "none")


def test_pod_to_pod_keeps_the_pod_source_address(lab, cluster_pods):
    src, dst = cluster_pods["node1"], cluster_pods["node2"]
    packets = capture_icmp(lab, "node2", "eth1", src, dst)      # only packets between the two pod IPs count
    print(f"node2:eth1 saw {[(p.src, p.dst) for p in packets]}")
    assert all({p.src, p.dst} == {src.ip, dst.ip} for p in packets)
    assert any(p.src == src.ip and p.dst == dst.ip for p in packets)


def test_switching_nat_outgoing_off_removes_the_table(lab, cluster_pods):
    custom_api(lab).patch_cluster_custom_object("calyx.dev", "v1", "ippools", POOL, {"spec": {"natOutgoing": False}})
    for node in NODES:
        wait_for(f"node {node}: ip calyx-nat removed", lambda node=node: nat_table(lab, node) is None)
    pod = cluster_pods["node1"]
    assert not ping_once(lab, pod, INTERNET_HOST), "a pod reached the internet host without masquerade"
    assert ping_once(lab, pod, cluster_pods["node2"].ip)
