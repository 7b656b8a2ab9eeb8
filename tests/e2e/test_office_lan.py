"""Scenario ``office-lan``: two Calyx nodes peer eBGP (AS 64512 -> 65000) with an FRR
gateway; a laptop on the office LAN behind it reaches pod IPs directly. The pool uses IPIP
between nodes, so the lab runs in the UML kernel.

Nobody types a route: the gateway learns every node's block (next hop: that node) and the
service CIDR from BGP, the nodes learn the office LAN from the gateway, and the laptop only has
its default route. Traffic between the LAN and pods is plain; pod to pod is IPIP. Every node
runs kube-proxy (iptables mode: the UML kernel has no nf_tables for IPv4), so the laptop also
reaches Services: the API server behind ``kubernetes`` (10.96.0.1), and the ClusterIP,
external IP and load-balancer address of a Service backed by the pods of both nodes. (The
``services`` scenario covers ECMP spread, ``externalTrafficPolicy: Local`` and endpoint moves.)
"""
from __future__ import annotations

import ipaddress
import json
import sys
from collections import Counter

import pytest

from calyxlab.servicetraffic import request_many, serve_http
from calyxlab.traffic import POD_NAMESPACE
from e2e_support import (add_pods, assert_full_matrix, bgp_routes, bgpd_status_table,
                         core_api, deployed, kubectl, node_block, ping_once, routes, wait_for,
                         wait_install_modes, wait_sessions)
from trace_support import check_every_pair, trace

pytestmark = [pytest.mark.lab, pytest.mark.uml]

NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12"}
GATEWAY = "10.0.0.254"
OFFICE_LAN = "172.16.0.0/24"
LAPTOP = "172.16.0.10"
SERVICE_CIDR = "10.96.0.0/12"


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with deployed(request, unique_lab_name, "office-lan", kernel="uml") as lab:
        yield lab


@pytest.fixture(scope="module")
def cluster_pods(lab):
    return add_pods(lab, list(NODES))


@pytest.fixture(scope="module")
def blocks(lab, cluster_pods):
    return {n: wait_for(f"node {n}: its block", lambda n=n: node_block(lab, n)) for n in NODES}


def vtysh(lab, command: str) -> dict:
    res = lab.exec("gw", ["vtysh", "-c", command], check=True, timeout=60)
    return json.loads(res.stdout or "{}")


def gateway_bgp_next_hops(lab) -> dict[str, set[str]]:
    """The gateway's BGP table: prefix -> next hops of its paths."""
    table = vtysh(lab, "show bgp ipv4 unicast json").get("routes", {})
    return {prefix: {hop["ip"] for path in paths for hop in path.get("nexthops", [])}
            for prefix, paths in table.items()}


def test_nodes_peer_with_the_gateway_and_each_other(lab, cluster_pods):
    for node in NODES:
        expected = {a: "node-to-node mesh" for n, a in NODES.items() if n != node}
        expected[GATEWAY] = "global"
        wait_sessions(lab, node, expected)
    print(bgpd_status_table(lab, "node1"))


def test_gateway_learns_every_block_and_the_service_cidr(lab, blocks):
    want = {blocks[n]: {NODES[n]} for n in NODES}
    want[SERVICE_CIDR] = set(NODES.values())
    have = wait_for(f"the gateway's BGP table to hold {want}",
                    lambda: (t := gateway_bgp_next_hops(lab))
                    and all(want[p] <= t.get(p, set()) for p in want) and t)
    print(f"gw BGP table: {have}")
    kernel = {r["dst"]: r for r in routes(lab, "gw")}
    for n in NODES:
        assert kernel.get(blocks[n], {}).get("protocol") == "bgp", \
            f"gw: {blocks[n]} not installed from BGP: {kernel.get(blocks[n])}"
    assert SERVICE_CIDR in kernel, f"gw: service CIDR not in its kernel table: {sorted(kernel)}"
    assert not routes(lab, "gw", "proto", "static"), "the gateway holds a static route"
    typed = [r["dst"] for r in routes(lab, "laptop") if r.get("protocol") != "kernel"]
    assert typed == ["default"], f"the laptop has routes besides its default: {typed}"


def test_nodes_learn_the_office_lan_and_use_ipip_between_them(lab, blocks):
    for node in NODES:
        other = next(o for o in NODES if o != node)
        wait_install_modes(lab, node, {OFFICE_LAN: (GATEWAY, False),
                                       blocks[other]: (NODES[other], True)})
        print(f"{node}: {sorted(bgp_routes(lab, node))}")


def test_calyxctl_trace_between_the_pods_and_to_the_laptop(lab, cluster_pods, blocks):
    """``calyxctl trace`` from the lab's host: both pod pairs complete through tunl0, and a pod's
    way to the laptop leaves by the gateway's route to the office LAN (learned over BGP)."""
    check_every_pair(lab, cluster_pods, "ipip", node=None)
    rc, body, _ = trace(lab, f"{POD_NAMESPACE}/{cluster_pods['node1'].name}", LAPTOP, node=None, text=True)
    assert rc == 0 and body["complete"], body["problems"]
    assert body["hops"][1]["route"]["dst"] == OFFICE_LAN and body["hops"][1]["route"]["gateway"] == GATEWAY


def test_laptop_reaches_every_pod_and_pods_reach_the_laptop(lab, cluster_pods, blocks):
    for pod in cluster_pods.values():
        ok = wait_for(f"laptop -> {pod.name} ({pod.ip})",
                      lambda p=pod: lab.exec("laptop", ["ping", "-c", "1", "-W", "2", p.ip]
                                             ).returncode == 0, timeout=60)
        assert ok
        assert ping_once(lab, pod, LAPTOP), f"{pod.name} cannot reach the laptop {LAPTOP}"
        print(f"laptop <-> {pod.name} ({pod.ip}): ok")
    assert_full_matrix(lab, list(cluster_pods.values()), "office-lan, IPIP between nodes")


def api_version_from(lab, node: str, address: str) -> str:
    """GET https://ADDRESS/version from ``node`` (the API server's certificate is not checked:
    the laptop holds no cluster CA); its gitVersion, or the error."""
    script = ("import json, ssl, sys, urllib.request\n"
              "try:\n"
              f"    body = urllib.request.urlopen('https://{address}/version', timeout=15,\n"
              "        context=ssl._create_unverified_context()).read()\n"
              "    print(json.loads(body)['gitVersion'])\n"
              "except Exception as exc:\n"
              "    print(f'failed: {exc}')\n")
    res = lab.exec(node, [sys.executable, "-c", script], timeout=60)
    return res.stdout.strip() or f"failed: exit {res.returncode}: {res.stderr.strip()[-300:]}"


def test_laptop_reaches_the_api_server_through_its_cluster_ip(lab, blocks):
    """The article's example: a developer's laptop reaching 10.96.0.1 through the gateway; the
    node it enters by (kube-proxy) sends it on to the API server."""
    answers: list[str] = []

    def answered() -> bool:
        answers.append(api_version_from(lab, "laptop", "10.96.0.1"))
        return answers[-1].startswith("v")
    try:
        wait_for("laptop -> https://10.96.0.1/version", answered, timeout=180, interval=2.0)
    except AssertionError:     # say where it stops: the gateway's choice, each node on its own
        gateway = lab.exec("gw", ["ip", "route", "get", "10.96.0.1", "from", LAPTOP, "iif", "eth2"]).stdout
        direct = {n: api_version_from(lab, n, "10.96.0.1") for n in NODES}
        raise AssertionError(f"laptop -> 10.96.0.1: last answers {answers[-3:]}; the gateway "
                             f"routes it {gateway.strip()!r}; from each node itself: {direct}") from None
    print(f"laptop -> kubernetes Service 10.96.0.1: API server {answers[-1]} "
          f"(after {len(answers)} attempts)")


def test_laptop_reaches_a_service_backed_by_pods_on_both_nodes(lab, cluster_pods, blocks):
    """Its ClusterIP, its external IP and its load-balancer address (written into its status
    by the admin, as a load-balancer controller would), each answered by both pods."""
    names = [p.name for p in cluster_pods.values()]
    kubectl(lab, "label", "pod", *names, "tier=web", "--overwrite")
    kubectl(lab, "apply", "-f", "-", input=(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
        "spec:\n  type: LoadBalancer\n  selector: {tier: web}\n  externalIPs: [192.0.2.10]\n"
        "  ports: [{port: 80, targetPort: 8080}]\n"))
    core = core_api(lab)
    core.patch_namespaced_service_status("web", "default", {
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}]}}})
    for pod in cluster_pods.values():
        serve_http(lab, pod, timeout=90)
    cluster_ip = core.read_namespaced_service("web", "default").spec.cluster_ip
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(SERVICE_CIDR)
    for address in (cluster_ip, "192.0.2.10", "198.51.100.10"):
        served = wait_for(f"laptop -> web {address}: every pod answering",
                          lambda a=address: (o := request_many(lab, "laptop", f"http://{a}/", 12, timeout=3))
                          and all(x.ok for x in o) and {x.pod for x in o} == set(names) and o,
                          timeout=90)
        print(f"laptop -> web {address}: served by {dict(Counter(o.pod for o in served))}")
