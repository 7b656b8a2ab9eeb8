"""NetworkPolicy semantics, pure: calyx.networkpolicy parses the objects, felix.policycalc says
what each node's endpoints allow, and :func:`felix.policycalc.allows` gives the verdict a
dataplane must reach. The cases follow the Kubernetes network-policy e2e tests and Cyclonus'
shape (namespaces x, y, z; pods a, b, c in each; servers on TCP 80/81, UDP 80, SCTP 80),
each compared against the verdict the API's documentation gives for every pod pair."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from calyx import networkpolicy as np
from calyx.model import ValidationError
from felix import policycalc as pc

NAMESPACES = {ns: {"ns": ns, "kubernetes.io/metadata.name": ns} for ns in ("x", "y", "z")}
NODES = ("node1", "node2")


def cluster() -> list[pc.PolicyPod]:
    pods = []
    for i, ns in enumerate(NAMESPACES):
        for j, name in enumerate("abc"):
            # Pod c calls its port 81 "alt" instead: names mean different numbers on
            # different pods.
            alt = pc.ContainerPort("alt", "TCP", 81) if name == "c" else pc.ContainerPort("serve-81-tcp", "TCP", 81)
            pods.append(pc.PolicyPod(ns, name, NODES[(i + j) % 2], IPv4Address(f"10.244.{i}.{j + 10}"),
                                     {"pod": name},
                                     (pc.ContainerPort("serve-80-tcp", "TCP", 80), alt,
                                      pc.ContainerPort("serve-80-udp", "UDP", 80))))
    return pods


PODS = cluster()
BY_KEY = {f"{p.namespace}/{p.name}": p for p in PODS}


def policy(name: str, namespace: str = "x", **spec) -> np.NetworkPolicy:
    return np.parse_network_policy({"metadata": {"name": name, "namespace": namespace},
                                    "spec": {"podSelector": {}, **spec}})


def connects(policies, src: str, dst: str, protocol: str = "TCP", port: int = 80) -> bool:
    s, d = BY_KEY[src], BY_KEY[dst]
    out = pc.node_policy(s.node, policies, PODS, NAMESPACES)
    into = pc.node_policy(d.node, policies, PODS, NAMESPACES)
    return (pc.allows(out, src, np.EGRESS, d.ip, protocol, port)
            and pc.allows(into, dst, np.INGRESS, s.ip, protocol, port))


def table(policies, protocol="TCP", port=80) -> set[tuple[str, str]]:
    """Every (src, dst) pod pair that connects."""
    return {(s, d) for s in BY_KEY for d in BY_KEY if connects(policies, s, d, protocol, port)}


ALL = {(s, d) for s in BY_KEY for d in BY_KEY}


def into(namespaces: str, pods: str = "abc") -> set[str]:
    return {f"{ns}/{p}" for ns in namespaces for p in pods}


def test_no_policy_allows_everything():
    assert table([]) == ALL


def test_deny_all_ingress_in_x_cuts_everything_into_x_but_nothing_out_of_it():
    got = table([policy("deny", policyTypes=["Ingress"])])
    assert got == {(s, d) for s, d in ALL if d not in into("x")}


def test_allow_from_the_same_namespace():
    got = table([policy("same-ns", ingress=[{"from": [{"podSelector": {}}]}])])
    assert got == {(s, d) for s, d in ALL if d not in into("x") or s in into("x")}


def test_namespace_selector_alone_means_every_pod_there():
    got = table([policy("from-y", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])])
    assert got == {(s, d) for s, d in ALL if d not in into("x") or s in into("y")}


def test_pod_and_namespace_selector_in_one_peer_is_and_in_two_peers_is_or():
    both = policy("and", podSelector={"matchLabels": {"pod": "a"}},
                  ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                      "podSelector": {"matchLabels": {"pod": "b"}}}]}])
    either = policy("or", podSelector={"matchLabels": {"pod": "a"}},
                    ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                                       {"podSelector": {"matchLabels": {"pod": "b"}}}]}])
    assert {s for s, d in table([both]) if d == "x/a"} == {"y/b"}
    assert {s for s, d in table([either]) if d == "x/a"} == into("y") | {"x/b"}
    assert {(s, d) for s, d in ALL if d != "x/a"} <= table([both])


def test_match_expressions():
    pol = policy("exprs", podSelector={"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
                 ingress=[{"from": [{"namespaceSelector": {"matchExpressions": [
                     {"key": "ns", "operator": "NotIn", "values": ["x"]}]},
                     "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}}]}])
    got = table([pol])
    for dst in ("x/a", "x/b"):
        assert {s for s, d in got if d == dst} == into("yz")
    assert {s for s, d in got if d == "x/c"} == set(BY_KEY)


def test_ip_block_with_except():
    pol = policy("block", ingress=[{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}}]}])
    got = table([pol])
    assert {s for s, d in got if d == "x/a"} == into("xz")


def test_ports_by_number_protocol_and_range():
    pol = policy("port-81", ingress=[{"ports": [{"port": 81}]}])
    assert table([pol], "TCP", 80) == {(s, d) for s, d in ALL if d not in into("x")}
    assert table([pol], "TCP", 81) == ALL
    assert table([pol], "UDP", 81) == {(s, d) for s, d in ALL if d not in into("x")}
    ranged = policy("range", ingress=[{"ports": [{"port": 8080, "endPort": 8090, "protocol": "SCTP"}]}])
    assert connects([ranged], "y/a", "x/a", "SCTP", 8085)
    assert not connects([ranged], "y/a", "x/a", "SCTP", 8091)
    assert not connects([ranged], "y/a", "x/a", "TCP", 8085)
    protocol_only = policy("udp", ingress=[{"ports": [{"protocol": "UDP"}]}])
    assert connects([protocol_only], "y/a", "x/a", "UDP", 53) and not connects([protocol_only], "y/a", "x/a", "TCP", 53)


def test_named_ports_resolve_on_the_destination_pod():
    ingress = policy("named-in", ingress=[{"ports": [{"port": "serve-81-tcp"}]}])
    assert connects([ingress], "y/a", "x/a", "TCP", 81) and not connects([ingress], "y/a", "x/a", "TCP", 80)
    assert not connects([ingress], "y/a", "x/c", "TCP", 81)      # x/c has no port of that name
    from_y = policy("named-from-y", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                              "ports": [{"port": "alt"}]}])
    assert connects([from_y], "y/a", "x/c", "TCP", 81) and not connects([from_y], "y/a", "x/a", "TCP", 81)
    wrong_protocol = policy("named-udp", ingress=[{"ports": [{"port": "serve-81-tcp", "protocol": "UDP"}]}])
    assert not connects([wrong_protocol], "y/a", "x/a", "UDP", 81)
    egress = policy("named-out", egress=[{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                          "ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}])
    assert connects([egress], "x/a", "y/b", "UDP", 80)
    assert not connects([egress], "x/a", "y/b", "TCP", 80)
    assert not connects([egress], "x/a", "z/b", "UDP", 80)
    to_alt = policy("to-alt", egress=[{"ports": [{"port": "alt"}]}])
    assert connects([to_alt], "x/a", "y/c", "TCP", 81) and not connects([to_alt], "x/a", "y/b", "TCP", 81)


def test_egress_deny_all_and_egress_only_policy_types():
    deny_out = policy("deny-out", policyTypes=["Egress"])
    got = table([deny_out])
    assert got == {(s, d) for s, d in ALL if s not in into("x")}
    to_y = policy("to-y", egress=[{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])
    assert to_y.types == frozenset({np.INGRESS, np.EGRESS})
    assert {d for s, d in table([to_y]) if s == "x/a"} == into("y")


def test_policies_add_up():
    a = policy("from-y", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])
    b = policy("from-z-pod-c", ingress=[{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}}]}])
    assert {s for s, d in table([a, b]) if d == "x/b"} == into("y") | {"x/c", "z/c"}


def test_a_pod_joining_a_selector_changes_only_that_sets_members():
    pol = policy("from-web", ingress=[{"from": [{"podSelector": {"matchLabels": {"role": "web"}}}]}])
    before = pc.node_policy("node1", [pol], PODS, NAMESPACES)
    relabelled = [pc.PolicyPod(p.namespace, p.name, p.node, p.ip, {**p.labels, "role": "web"}, p.ports)
                  if (p.namespace, p.name) == ("x", "b") else p for p in PODS]
    after = pc.node_policy("node1", [pol], relabelled, NAMESPACES)
    assert before.endpoints == after.endpoints        # the rules are the same
    (name,) = before.address_sets
    assert after.address_sets[name].members - before.address_sets[name].members == {BY_KEY["x/b"].ip}


@pytest.mark.parametrize("spec, path", [
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}, "spec.ingress[0].ports[0].port"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}, "spec.ingress[0].ports[0].endPort"),
    ({"podSelector": {}, "egress": [{"ports": [{"protocol": "ICMP"}]}]}, "spec.egress[0].ports[0].protocol"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}},
     "spec.podSelector.matchExpressions[0].operator"),
    ({"podSelector": {}, "policyTypes": ["Both"]}, "spec.policyTypes"),
])
def test_bad_policies_are_refused_naming_field_and_value(spec, path):
    with pytest.raises(ValidationError) as err:
        np.parse_network_policy({"metadata": {"name": "bad", "namespace": "x"}, "spec": spec})
    assert err.value.field_path == path and "NetworkPolicy 'x/bad'" in str(err.value)


def test_a_pods_labels_and_named_ports_come_from_the_pod_object():
    from calyx import model
    pod = model.parse_pod({
        "metadata": {"name": "web", "namespace": "x", "labels": {"app": "web", "tier": "front"}},
        "spec": {"nodeName": "node1", "containers": [
            {"name": "main", "ports": [{"name": "http", "containerPort": 8080},
                                       {"containerPort": 9090},
                                       {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
        "status": {"podIP": "10.244.0.5"}})
    seen = pc.policy_pod(pod)
    assert seen.labels == {"app": "web", "tier": "front"} and seen.ip == IPv4Address("10.244.0.5")
    assert seen.port_named("http", "TCP") == 8080 and seen.port_named("dns", "UDP") == 53
    assert seen.port_named("dns", "TCP") is None
    host = model.parse_pod({"metadata": {"name": "h", "namespace": "x"},
                            "spec": {"hostNetwork": True}, "status": {"podIP": "10.0.0.11"}})
    assert pc.policy_pod(host).ip is None        # a node's address is not a pod peer
