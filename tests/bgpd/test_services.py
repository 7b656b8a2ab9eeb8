"""Service advertisement, pure: parsing Services and EndpointSlices (and the cut-down form they
are cached in), which service prefixes a node originates (:mod:`bgpd.services`), and the
export of a change of those prefixes alone equal to a recompute from scratch."""
from __future__ import annotations

import copy
from ipaddress import IPv4Address as A, IPv4Interface, IPv4Network as N

import pytest

from bgpd import importer
from bgpd.export import ExportPolicy, adj_rib_out
from bgpd.peers import local_speaker, peer_set
from bgpd.propagation import Dirty, Propagation
from bgpd.rib import Rib
from bgpd.services import EXCLUDE_LABEL, advertised_ranges, service_advertisement, service_prefixes
from calyx import model
from calyx.model import (BGPConfiguration, BGPPeer, NodeInfo, ServiceInfo, Snapshot, ValidationError,
                         endpoint_slice_essentials, parse_endpoint_slice, parse_service, service_essentials)

CLUSTER_IPS, EXTERNAL_IPS, LB_IPS = N("10.96.0.0/12"), N("192.0.2.0/24"), N("203.0.113.0/24")
CONFIG = BGPConfiguration(service_cluster_ips=(CLUSTER_IPS,), service_external_ips=(EXTERNAL_IPS,),
                          service_load_balancer_ips=(LB_IPS,))


def raw_service(name: str = "web", namespace: str = "shop", *, type: str = "LoadBalancer",
                cluster_ip: str = "10.96.0.10", external_ips=("192.0.2.10",), policy: str | None = "Local",
                ingress=(), **spec) -> dict:
    doc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "uid": "u-1", "resourceVersion": "7",
                        "labels": {"app": name}, "annotations": {"note": "x" * 200}},
           "spec": {"type": type, "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                    "externalIPs": list(external_ips), "ports": [{"port": 80, "targetPort": 8080}],
                    "selector": {"app": name}, "sessionAffinity": "None", **spec},
           "status": {"loadBalancer": {"ingress": [dict(i) for i in ingress]}}}
    if policy is not None:
        doc["spec"]["externalTrafficPolicy"] = policy
    return doc


def endpoint(node: str | None, ready: bool | None = True, address: str = "10.244.1.5") -> dict:
    ep: dict = {"addresses": [address], "targetRef": {"kind": "Pod", "name": "p", "namespace": "shop"},
                "zone": "a", "conditions": {"serving": True, "terminating": False}}
    if ready is not None:
        ep["conditions"]["ready"] = ready
    if node is not None:
        ep["nodeName"] = node
    return ep


def raw_slice(*endpoints: dict, name: str = "web-abc", service: str = "web", namespace: str = "shop",
              address_type: str = "IPv4") -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": name, "namespace": namespace, "uid": "u-2", "resourceVersion": "9",
                         "labels": {model.LABEL_SERVICE_NAME: service,
                                    "endpointslice.kubernetes.io/managed-by": "me"}},
            "endpoints": list(endpoints), "ports": [{"port": 8080, "protocol": "TCP"}]}


# --- parsing ---------------------------------------------------------------------------------

def test_service_parsed_to_its_addresses_and_policies():
    svc = parse_service(raw_service(ingress=[{"ip": "203.0.113.7"}, {"hostname": "lb.example"},
                                             {"ip": "2001:db8::7"}],
                                    internalTrafficPolicy="Local"))
    assert svc == ServiceInfo(namespace="shop", name="web", type="LoadBalancer", cluster_ips=(A("10.96.0.10"),),
                              external_ips=(A("192.0.2.10"),), load_balancer_ips=(A("203.0.113.7"),),
                              external_traffic_local=True, internal_traffic_local=True)


def test_service_defaults_headless_and_dual_stack():
    plain = parse_service({"metadata": {"name": "a", "namespace": "n"}, "spec": {"clusterIP": "10.96.0.1"}})
    assert (plain.type, plain.external_traffic_local, plain.internal_traffic_local) == ("ClusterIP", False, False)
    headless = parse_service(raw_service(type="ClusterIP", cluster_ip="None", external_ips=(), policy=None))
    assert headless.cluster_ips == ()
    dual = raw_service()
    dual["spec"]["clusterIPs"] = ["fd00::10", "10.96.0.10"]
    assert parse_service(dual).cluster_ips == (A("10.96.0.10"),)


@pytest.mark.parametrize("change, field, value", [
    (lambda s: s["spec"].update(externalTrafficPolicy="Nearby"), "spec.externalTrafficPolicy", "Nearby"),
    (lambda s: s["spec"].update(type="Mesh"), "spec.type", "Mesh"),
    (lambda s: s["spec"].update(externalIPs=["192.0.2.300"]), "spec.externalIPs[0]", "192.0.2.300"),
    (lambda s: s["spec"].update(clusterIPs=["banana"]), "spec.clusterIPs[0]", "banana"),
    (lambda s: s["status"]["loadBalancer"].update(ingress=[{"ip": "x"}]), "status.loadBalancer.ingress[0].ip", "x"),
    (lambda s: s["metadata"].pop("namespace"), "metadata.namespace", None),
])
def test_a_malformed_service_is_refused_naming_field_and_value(change, field, value):
    raw = raw_service()
    change(raw)
    with pytest.raises(ValidationError) as info:
        parse_service(raw)
    assert (info.value.kind, info.value.field_path, info.value.value) == ("Service", field, value)
    assert "web" in str(info.value)


def test_slice_counts_ready_ipv4_endpoints_by_node():
    info = parse_endpoint_slice(raw_slice(
        endpoint("node1"), endpoint("node1"), endpoint("node2", ready=None),   # unknown counts as ready
        endpoint("node3", ready=False), endpoint(None)))
    assert info.service == "web"
    assert info.ready_by_node == (("node1", 2), ("node2", 1))
    assert (info.ready_on("node1"), info.ready_on("node3"), info.ready_on("node9")) == (2, 0, 0)
    assert parse_endpoint_slice(raw_slice(endpoint("node1", address="fd00::1"),
                                          address_type="IPv6")).ready_by_node == ()


def test_a_malformed_slice_is_refused_naming_field_and_value():
    with pytest.raises(ValidationError) as info:
        parse_endpoint_slice(raw_slice(endpoint("node1", ready="yes")))
    assert (info.value.kind, info.value.field_path, info.value.value) == (
        "EndpointSlice", "endpoints[0].conditions.ready", "yes")
    with pytest.raises(ValidationError) as info:
        parse_endpoint_slice({**raw_slice(), "endpoints": "none"})
    assert info.value.field_path == "endpoints"


def test_cached_forms_keep_what_the_parsers_read_and_nothing_else():
    service = raw_service(ingress=[{"ip": "203.0.113.7"}])
    slim = service_essentials(copy.deepcopy(service))
    assert parse_service(slim) == parse_service(service)
    assert "ports" not in slim["spec"] and "selector" not in slim["spec"]
    assert "annotations" not in slim["metadata"] and slim["metadata"]["uid"] == "u-1"
    slice_ = raw_slice(endpoint("node1"), endpoint("node2", ready=False), endpoint(None))
    slim = endpoint_slice_essentials(copy.deepcopy(slice_))
    assert parse_endpoint_slice(slim) == parse_endpoint_slice(slice_)
    assert slim["endpoints"] == [{"nodeName": "node1"}, {"nodeName": "node2", "conditions": {"ready": False}}, {}]
    assert slim["metadata"]["labels"] == {model.LABEL_SERVICE_NAME: "web"}
    assert "ports" not in slim
    # A malformed object stays malformed once cut down (it is reported, not silently repaired).
    bad = raw_slice(endpoint("node1", ready="yes"))
    with pytest.raises(ValidationError):
        parse_endpoint_slice(endpoint_slice_essentials(bad))


# --- the calculation -----------------------------------------------------------------------

def snapshot(services=(), slices=(), config: BGPConfiguration = CONFIG, labels=None) -> Snapshot:
    nodes = {n: NodeInfo(name=n, labels=(labels or {}).get(n, {}), bgp_address=IPv4Interface(f"10.0.0.{i}/24"))
             for i, n in enumerate(("node1", "node2"), start=11)}
    return Snapshot(nodes=nodes, bgp_configuration=config,
                    services={(s.namespace, s.name): s for s in map(parse_service, services)},
                    endpoint_slices={(s.namespace, s.name): s for s in map(parse_endpoint_slice, slices)})


def slash32(*ips: str) -> set[N]:
    return {N(f"{ip}/32") for ip in ips}


def test_local_service_advertised_by_the_nodes_with_a_ready_endpoint_only():
    snap = snapshot([raw_service(ingress=[{"ip": "203.0.113.7"}])], [raw_slice(endpoint("node1"))])
    one = service_advertisement(snap, "node1")
    assert set(one.addresses) == slash32("10.96.0.10", "192.0.2.10", "203.0.113.7")
    assert one.addresses[N("10.96.0.10/32")] == (("shop", "web"),)
    assert one.ranges == {CLUSTER_IPS, EXTERNAL_IPS, LB_IPS}
    assert service_prefixes(snap, "node1") == one.ranges | slash32("10.96.0.10", "192.0.2.10", "203.0.113.7")
    assert service_advertisement(snap, "node2").addresses == {}
    assert service_prefixes(snap, "node2") == {CLUSTER_IPS, EXTERNAL_IPS, LB_IPS}


def test_a_not_ready_endpoint_or_one_of_another_service_does_not_count():
    services = [raw_service()]
    assert service_advertisement(snapshot(services, [raw_slice(endpoint("node1", ready=False))]),
                                 "node1").addresses == {}
    assert service_advertisement(snapshot(services, [raw_slice(endpoint("node1"), service="other")]),
                                 "node1").addresses == {}
    other_namespace = raw_slice(endpoint("node1"), namespace="elsewhere")
    assert service_advertisement(snapshot(services, [other_namespace]), "node1").addresses == {}
    # Two slices of the Service: one ready endpoint anywhere among them is enough.
    two = [raw_slice(endpoint("node2"), name="a"), raw_slice(endpoint("node1"), name="b")]
    assert set(service_advertisement(snapshot(services, two), "node1").addresses) == slash32(
        "10.96.0.10", "192.0.2.10")


def test_addresses_outside_their_ranges_and_unpublished_lb_addresses_are_not_advertised():
    svc = raw_service(cluster_ip="10.200.0.1", external_ips=("198.51.100.1", "192.0.2.20"),
                      ingress=[{"ip": "198.51.100.9"}], loadBalancerIP="203.0.113.50")
    got = service_advertisement(snapshot([svc], [raw_slice(endpoint("node1"))]), "node1")
    assert set(got.addresses) == slash32("192.0.2.20")
    # The LB address counts once it is published in status, inside serviceLoadBalancerIPs.
    published = raw_service(ingress=[{"ip": "203.0.113.50"}], loadBalancerIP="203.0.113.50")
    got = service_advertisement(snapshot([published], [raw_slice(endpoint("node1"))]), "node1")
    assert N("203.0.113.50/32") in got.addresses
    # Only a LoadBalancer Service's published addresses count.
    node_port = raw_service(type="NodePort", ingress=[{"ip": "203.0.113.50"}])
    got = service_advertisement(snapshot([node_port], [raw_slice(endpoint("node1"))]), "node1")
    assert set(got.addresses) == slash32("10.96.0.10", "192.0.2.10")


def test_no_cluster_ip_range_configured_no_cluster_ip_advertised():
    config = BGPConfiguration(service_external_ips=(EXTERNAL_IPS,))
    got = service_advertisement(snapshot([raw_service()], [raw_slice(endpoint("node1"))], config), "node1")
    assert set(got.addresses) == slash32("192.0.2.10") and got.ranges == {EXTERNAL_IPS}
    nothing = service_advertisement(snapshot([raw_service()], [raw_slice(endpoint("node1"))], BGPConfiguration()),
                                    "node1")
    assert (nothing.ranges, nothing.addresses) == (frozenset(), {})


def test_cluster_policy_services_get_no_slash32_the_range_covers_them():
    services = [raw_service(policy="Cluster", ingress=[{"ip": "203.0.113.7"}]),
                raw_service(name="plain", type="ClusterIP", external_ips=(), policy=None)]
    for node in ("node1", "node2"):
        assert service_advertisement(snapshot(services, [raw_slice(endpoint("node1"))]), node).addresses == {}


def test_internal_traffic_policy_local_alone_advertises_nothing_more():
    svc = raw_service(type="ClusterIP", external_ips=(), policy=None, internalTrafficPolicy="Local")
    assert service_advertisement(snapshot([svc], [raw_slice(endpoint("node1"))]), "node1").addresses == {}


def test_headless_and_external_name_services_are_skipped():
    headless = raw_service(cluster_ip="None")
    external_name = raw_service(type="ExternalName", cluster_ip="")
    external_name["spec"].pop("clusterIPs")
    snap = snapshot([headless, external_name], [raw_slice(endpoint("node1"))])
    assert service_advertisement(snap, "node1").addresses == {}


def test_single_address_entries_go_per_service():
    config = BGPConfiguration(service_cluster_ips=(CLUSTER_IPS,),
                              service_external_ips=(EXTERNAL_IPS, N("198.51.100.1/32")),
                              service_load_balancer_ips=(N("203.0.113.7/32"),))
    assert advertised_ranges(config) == {CLUSTER_IPS, EXTERNAL_IPS}
    # Cluster policy, address equal to a single entry: every node advertises the Service's /32s.
    cluster = raw_service(policy="Cluster", external_ips=("198.51.100.1",), ingress=[{"ip": "203.0.113.7"}])
    for node in ("node1", "node2"):
        assert set(service_advertisement(snapshot([cluster], [], config), node).addresses) == slash32(
            "10.96.0.10", "198.51.100.1", "203.0.113.7")
    # Local policy: only the node with the endpoint.
    local = raw_service(external_ips=("198.51.100.1",))
    snap = snapshot([local], [raw_slice(endpoint("node2"))], config)
    assert service_advertisement(snap, "node1").addresses == {}
    assert set(service_advertisement(snap, "node2").addresses) == slash32("10.96.0.10", "198.51.100.1")


def test_an_excluded_node_advertises_no_service_prefix():
    snap = snapshot([raw_service()], [raw_slice(endpoint("node1"))], labels={"node1": {EXCLUDE_LABEL: "true"}})
    assert service_prefixes(snap, "node1") == frozenset()
    assert service_prefixes(snap, "node2") == {CLUSTER_IPS, EXTERNAL_IPS, LB_IPS}


def test_one_address_shared_by_two_services_stays_while_either_wants_it():
    a = raw_service(name="a", cluster_ip="10.96.0.1", external_ips=("192.0.2.10",))
    b = raw_service(name="b", cluster_ip="10.96.0.2", external_ips=("192.0.2.10",))
    slices = [raw_slice(endpoint("node1"), name="a-1", service="a"), raw_slice(endpoint("node1"), name="b-1", service="b")]
    got = service_advertisement(snapshot([a, b], slices), "node1")
    assert got.addresses[N("192.0.2.10/32")] == (("shop", "a"), ("shop", "b"))
    got = service_advertisement(snapshot([a, b], slices[1:]), "node1")
    assert got.addresses[N("192.0.2.10/32")] == (("shop", "b"),)


# --- export of a change of the service /32s alone ---------------------------------------------

def test_a_change_of_service_prefixes_alone_is_exported_as_a_recompute_would():
    """The speaker turns a change of the service prefixes alone into the changed prefixes
    (``Dirty.touch``); the result equals a recompute from scratch, and cluster nodes get none."""
    router = BGPPeer(name="router", peer_ip=A("10.0.0.254"), as_number=65001)
    base = Snapshot(nodes={n: NodeInfo(name=n, bgp_address=IPv4Interface(f"10.0.0.{i}/24"), pod_cidrs=(N(f"10.244.{i}.0/24"),))
                           for i, n in ((11, "node1"), (12, "node2"))},
                    bgp_configuration=CONFIG, bgp_peers={"router": router})
    local, peers = local_speaker(base, "node1"), peer_set(base, "node1")
    own = frozenset({N("10.244.11.0/24")})
    ctx = importer.ImportContext(local=IPv4Interface("10.0.0.11/24"), own_networks=tuple(own), pools={})
    rib, propagation = Rib(), Propagation()
    established = set(peers)
    sent: dict = {}

    def run(services: frozenset[N], dirty: Dirty) -> None:
        policy = ExportPolicy(local, peers, own, services)
        changes = propagation.compute(rib, set(peers), policy, ctx, established, sent, dirty)
        for address, change in changes.peers.items():
            sent[address] = change.applied_to(sent.get(address, {}))
        assert sent == {a: r for a, r in adj_rib_out(local, peers, established, tuple(own), tuple(services),
                                                    propagation.best).items() if r}

    without = service_prefixes(snapshot([raw_service()], []), "node1")
    run(without, Dirty())
    with_local = service_prefixes(snapshot([raw_service()], [raw_slice(endpoint("node1"))]), "node1")
    run(with_local, Dirty(everything=False, prefixes=set(without ^ with_local)))
    assert set(sent[A("10.0.0.254")]) == set(own) | with_local
    assert set(sent[A("10.0.0.12")]) == set(own)           # the other node: no service prefix
    run(without, Dirty(everything=False, prefixes=set(without ^ with_local)))
    assert set(sent[A("10.0.0.254")]) == set(own) | without
