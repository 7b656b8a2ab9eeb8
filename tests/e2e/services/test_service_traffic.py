"""Scenario ``services``: a laptop on the office LAN reaches Kubernetes Services — a ClusterIP,
an ExternalIP and a LoadBalancer IP — through an FRR gateway that learns them from three Calyx
nodes over eBGP, with the real kube-proxy (nftables mode) on every node.

- ``web`` (``externalTrafficPolicy: Cluster``): every node advertises the Service ranges, the
  gateway spreads the laptop's connections over all three (ECMP, ``maximum-paths``), and the
  node a connection enters by masquerades it, so a pod sees that node as the client.
- ``web-local`` (``externalTrafficPolicy: Local``): the /32s of its addresses come only from the
  nodes with a ready endpoint, kube-proxy there hands the connection to the local pod, and the
  pod sees the laptop's own address.
- Draining a node and moving endpoints under a continuous request loop from the laptop: the
  failed requests of each step are counted and printed.

Pods run the lab's echo server (:mod:`calyxlab.echoserver`), which answers with its name and
the client address it sees. The Services are applied with kubectl; a LoadBalancer address is
written into the Service's status by the admin, as a load-balancer controller would.
"""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from calyxlab import pods
from calyxlab.servicetraffic import RequestLoop, request_many, serve_http
from calyxlab.traffic import POD_NAMESPACE, add_pod
from e2e_support import core_api, kubectl, routes, wait_for, wait_sessions
from trace_support import CALYXCTL, check_every_pair

pytestmark = [pytest.mark.lab]

NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12", "node3": "10.0.0.13"}
GATEWAY = "10.0.0.254"
LAPTOP = "172.16.0.10"
RANGES = {"serviceClusterIPs": "10.96.0.0/12", "serviceExternalIPs": "192.0.2.0/24",
          "serviceLoadBalancerIPs": "198.51.100.0/24"}
BACKENDS = ("node1", "node2")        # where the Services' pods start
REQUESTS = 30                        # per address; enough for ECMP to use every path
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: web}
  externalIPs: [192.0.2.10]
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  externalIPs: [192.0.2.20]
  ports: [{name: http, port: 80, targetPort: 8080}]
"""
LB_ADDRESSES = {"web": "198.51.100.10", "web-local": "198.51.100.20"}


@pytest.fixture(scope="module")
def backends(lab):
    """The Services' pods (label app=web), each serving HTTP on 8080: pod name -> (pod, server)."""
    made = {}
    for node in BACKENDS:
        pod = add_pod(lab, node, f"web-{node}", labels={"app": "web"})
        made[pod.name] = (pod, serve_http(lab, pod))
    return made


@pytest.fixture(scope="module")
def services(lab, backends) -> dict[str, list[str]]:
    """The two Services, applied with kubectl, their LoadBalancer addresses published:
    name -> [ClusterIP, ExternalIP, LoadBalancer IP]."""
    kubectl(lab, "apply", "-f", "-", input=SERVICES)
    core = core_api(lab)
    found = {}
    for name, lb in LB_ADDRESSES.items():
        core.patch_namespaced_service_status(name, POD_NAMESPACE, {
            "status": {"loadBalancer": {"ingress": [{"ip": lb}]}}})
        spec = core.read_namespaced_service(name, POD_NAMESPACE).spec
        found[name] = [spec.cluster_ip, spec.external_ips[0], lb]
    started = time.monotonic()
    for address in [a for addresses in found.values() for a in addresses]:
        # Ready once every node's kube-proxy has the endpoints (until then it rejects).
        wait_for(f"{address} answering the laptop",
                 lambda: all(o.ok for o in request_many(lab, "laptop", f"http://{address}/", 6)))
    print(f"services: {found}, all answering after {time.monotonic() - started:.1f} s")
    return found


def gateway_paths(lab) -> dict[str, set[str]]:
    """The gateway's kernel routes learned from BGP: destination -> next hops."""
    table = {}
    for route in routes(lab, "gw", "proto", "bgp"):
        hops = route.get("nexthops") or [route]
        table[route["dst"]] = {h["gateway"] for h in hops if h.get("gateway")}
    return table


def node_of(lab, address: str) -> str | None:
    """The node holding ``address`` (its InternalIP or management address)."""
    for node, internal in NODES.items():
        if address in (internal, lab.nodes[node].mgmt_ipv4):
            return node
    return None


def test_kube_proxy_runs_on_every_node(lab, services):
    for node in NODES:
        res = lab.exec(node, ["nft", "-j", "list", "table", "ip", "kube-proxy"])
        assert res.returncode == 0, f"node {node}: no kube-proxy nftables table: {res.stderr}"
        health = lab.exec(node, ["python3", "-c", "import urllib.request;print(urllib.request."
                                 "urlopen('http://127.0.0.1:10256/healthz',timeout=5).status)"])
        assert health.stdout.strip() == "200", f"node {node}: kube-proxy /healthz: {health.stderr}"


def test_gateway_has_a_path_through_every_node_for_the_service_ranges(lab, services):
    for node in NODES:
        wait_sessions(lab, node, {**{a: "node-to-node mesh" for n, a in NODES.items() if n != node},
                                  GATEWAY: "global"})
    everyone = set(NODES.values())
    table = wait_for("the gateway's ECMP routes for the Service ranges",
                     lambda: (t := gateway_paths(lab))
                     and all(t.get(cidr) == everyone for cidr in RANGES.values()) and t)
    for field, cidr in RANGES.items():
        print(f"gw: {cidr} ({field}) via {sorted(table[cidr])}")


def test_local_service_addresses_come_only_from_nodes_with_an_endpoint(lab, services):
    with_endpoint = {NODES[n] for n in BACKENDS}
    table = wait_for("the gateway's /32s of web-local via the nodes with an endpoint",
                     lambda: (t := gateway_paths(lab))
                     and all(t.get(a) == with_endpoint for a in services["web-local"]) and t)
    for address in services["web-local"]:
        print(f"gw: {address} via {sorted(table[address])}")
    for address in services["web"]:
        assert address not in table, \
            f"gw: {address} of web (externalTrafficPolicy Cluster) has a /32: {table[address]}"


KINDS = ("ClusterIP", "ExternalIP", "LoadBalancer IP")


def answers_from_both_pods(lab, services, service: str, kind: str) -> list:
    """REQUESTS requests from the laptop to ``service``'s address of ``kind``; all answered,
    by both pods."""
    address = services[service][KINDS.index(kind)]
    outcomes = request_many(lab, "laptop", f"http://{address}/", REQUESTS)
    failed = [o.reason for o in outcomes if not o.ok]
    assert len(outcomes) == REQUESTS and not failed, f"{service} {kind} {address}: failures {failed}"
    served_by = Counter(o.pod for o in outcomes)
    print(f"{service} {kind} {address}: served by {dict(served_by)}", end="; ")
    assert set(served_by) == {f"web-{n}" for n in BACKENDS}, f"not every pod served: {served_by}"
    return outcomes


@pytest.mark.parametrize("kind", KINDS)
def test_laptop_reaches_the_cluster_policy_service_through_every_node(lab, services, kind):
    outcomes = answers_from_both_pods(lab, services, "web", kind)
    entered_by = Counter(node_of(lab, o.client_ip) or o.client_ip for o in outcomes)
    print(f"entered by {dict(entered_by)}")
    assert set(entered_by) == set(NODES), \
        f"the gateway did not spread connections over every node: {entered_by}"


@pytest.mark.parametrize("kind", KINDS)
def test_laptop_reaches_the_local_policy_service(lab, services, kind):
    outcomes = answers_from_both_pods(lab, services, "web-local", kind)
    clients = Counter(o.client_ip for o in outcomes)
    print(f"client addresses {dict(clients)}")
    if kind != "ClusterIP":
        # External traffic to a Local Service keeps its source (ClusterIP traffic follows the
        # internal policy, Cluster, and is masqueraded like web's).
        assert set(clients) == {LAPTOP}, f"the client address was not preserved: {clients}"


def test_calyxctl_traces_a_service_address_to_an_endpoint(lab, services, backends):
    """``calyxctl trace`` from a pod on node3 to web's ClusterIP (port 80): the Service's hop
    lists both ready endpoints, the path goes on to the first at its target port 8080 and is
    complete; a port the Service lacks is diagnosed on the Service's hop. Between the pods, every
    pair's path is plain routing, as each node's kernel routes it."""
    client = add_pod(lab, "node3", "trace-client")
    cluster_ip = services["web"][0]
    argv = [CALYXCTL, "trace", f"{POD_NAMESPACE}/{client.name}", cluster_ip, "--port", "80"]
    env = {"KUBECONFIG": str(lab.kubeconfig)}
    res = lab.exec("node1", argv + ["-o", "json"], env=env, timeout=120)
    assert res.returncode == 0, f"calyxctl trace exited {res.returncode}: {res.stdout}{res.stderr}"
    trace = json.loads(res.stdout)
    assert trace["service"]["name"] == "web" and trace["service"]["role"] == "ClusterIP"
    assert sorted(e["name"] for e in trace["service"]["endpoints"]) == sorted(backends)
    assert trace["dst"]["name"] in backends and trace["complete"], trace
    translated = next(f for f in trace["hops"][1]["facts"] if f["label"] == "translated")
    assert translated["text"].endswith(f"({trace['dst']['ip']}:8080)"), translated
    print("node1$ " + " ".join(argv[1:]) + "\n" + lab.exec("node1", argv, env=env, timeout=120).stdout)
    wrong = lab.exec("node1", argv[:-1] + ["443", "-o", "json"], env=env, timeout=120)
    assert wrong.returncode == 1, wrong.stderr
    assert [p["cause"] for p in json.loads(wrong.stdout)["problems"]] == ["not-a-service-port"]
    pairs = {pod.node: pod for pod, _ in backends.values()}
    check_every_pair(lab, {**pairs, "node3": client}, "none")


def test_drain_and_endpoint_moves_under_a_request_loop(lab, services, backends):
    """Moves web-local's endpoints under 20 requests/s from the laptop to its LoadBalancer IP,
    printing the failed requests of each step: a new endpoint on node3, node1 drained (its pod
    terminating, as under kubectl drain, until the gateway has moved; then gone), node2's pod
    removed abruptly. A terminating endpoint stops being advertised at once while kube-proxy
    still serves with it, so a drain loses nothing; a new endpoint may lose a few requests
    while its node's kube-proxy catches up, an abrupt removal what reaches the node until the
    gateway moves."""
    lb = services["web-local"][2]
    core = core_api(lab)
    figures = []

    def step(label: str, action, want_nodes: set[str], then=lambda: None) -> int:
        """``action`` under the request loop; the time until the gateway routes ``lb`` via
        ``want_nodes`` only; ``then`` (the rest of the step), and 2 s more of requests."""
        loop = RequestLoop(lab, "laptop", f"http://{lb}/").start()
        try:
            began = time.monotonic()
            action()
            wait_for(f"gw: {lb} via {sorted(want_nodes)}",
                     lambda: gateway_paths(lab).get(lb) == {NODES[n] for n in want_nodes},
                     interval=0.05)
            converged = time.monotonic() - began
            then()
            time.sleep(2.0)
        finally:
            outcomes = loop.stop()
        failed = [o for o in outcomes if not o.ok]
        served = Counter(o.pod for o in outcomes if o.ok)
        figures.append(f"{label}: {len(outcomes)} requests, {len(failed)} failed; the gateway "
                       f"moved in {converged:.2f} s; served by {dict(served)}")
        assert outcomes and outcomes[-1].ok, f"{label}: the last request failed: {outcomes[-1:]}"
        return len(failed)

    def add_node3() -> None:
        pod = add_pod(lab, "node3", "web-node3", labels={"app": "web"})
        backends[pod.name] = (pod, serve_http(lab, pod))

    def terminate(pod_name: str) -> None:
        """As kubectl drain does: the Pod is deleted with a grace period and terminates."""
        core.delete_namespaced_pod(pod_name, POD_NAMESPACE, grace_period_seconds=30)

    def remove(pod_name: str) -> None:
        """The pod's process and sandbox go (DEL), and the Pod with them."""
        pod, server = backends.pop(pod_name)
        lab.kill(server)
        pods.delete_pod(lab, POD_NAMESPACE, pod_name, pod.node)

    step("endpoint added on node3", add_node3, {"node1", "node2", "node3"})
    drained = step("node1 drained (its pod terminating, then gone)", lambda: terminate("web-node1"),
                   {"node2", "node3"}, then=lambda: remove("web-node1"))
    step("node2's pod removed abruptly", lambda: remove("web-node2"), {"node3"})
    print("\n" + "\n".join(figures))
    # Only the drain is bound to lose nothing: its pod is gone only after the gateway moved.
    # A new endpoint's /32 can reach the gateway before kube-proxy on that node has the
    # endpoint (both follow the same EndpointSlice), and an abrupt removal loses what reaches
    # the node until the withdrawal arrives: those are measured, not bounded here.
    assert drained == 0, f"requests failed while the drained pod still served: {figures}"
    outcomes = request_many(lab, "laptop", f"http://{lb}/", 10)
    assert all(o.ok and o.pod == "web-node3" and o.client_ip == LAPTOP for o in outcomes), outcomes
