"""felix's policy view in words (felix.policyview), and selectors read back in Kubernetes
syntax (calyx.selector.kubernetes_text)."""
from __future__ import annotations

from ipaddress import IPv4Address

from calyx import networkpolicy as np
from calyx.selector import kubernetes_text
from felix import policycalc as pc
from felix.policyview import PolicyView, describe

PODS = [pc.PolicyPod("x", "web", "n1", IPv4Address("10.244.0.10"), {"app": "web"},
                     (pc.ContainerPort("http", "TCP", 8080),)),
        pc.PolicyPod("y", "client", "n2", IPv4Address("10.244.1.10"), {"role": "client"})]
POLICY = np.parse_network_policy({"metadata": {"name": "web", "namespace": "x"}, "spec": {
    "podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "NotIn",
                                                                      "values": ["prod", "dev"]}]},
                           "podSelector": {"matchLabels": {"role": "client"}}},
                          {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                 "ports": [{"port": "http"}, {"port": 9000, "endPort": 9010, "protocol": "UDP"}]}],
    "egress": []}})


def test_a_selected_pod_is_described_in_words():
    result = pc.node_policy("n1", [POLICY], PODS, {"x": {}, "y": {"env": "test"}})
    assert describe(result, "x/web") == {
        "pod": "x/web", "ip": "10.244.0.10", "selected_by": ["x/web"],
        "ingress": ["from pods role=client in namespaces env notin (dev,prod), UDP 9000-9010, TCP 8080",
                    "from 192.168.0.0/16 except 192.168.1.0/24, UDP 9000-9010, TCP 8080"],
        "egress": "not isolated: everything allowed"}
    assert describe(result, "y/client") is None          # not on this node


def test_the_view_answers_verdicts_and_refuses_bad_questions():
    view = PolicyView()
    assert view.query({"pod": ["x/web"]})[0] == 503
    view.publish(pc.node_policy("n1", [POLICY], PODS, {"x": {}, "y": {"env": "test"}}))
    status, body = view.query({"pod": ["x/web"], "peer": ["10.244.1.10"], "port": ["8080"]})
    assert status == 200 and body["verdict"]["allowed"] is True
    status, body = view.query({"pod": ["x/web"], "peer": ["192.168.1.5"], "port": ["8080"]})
    assert body["verdict"]["allowed"] is False
    assert view.query({"pod": ["x/nope"]})[0] == 404
    assert view.query({"pod": ["x/web"], "peer": ["not-an-ip"]})[0] == 400
    assert view.query({"pod": ["x/web"], "peer": ["10.0.0.1"], "direction": ["Sideways"]})[0] == 400


def test_selectors_read_back_in_kubernetes_syntax():
    expr = np.label_selector(None, "spec.podSelector", {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                             {"key": "legacy", "operator": "DoesNotExist"},
                             {"key": "canary", "operator": "Exists"}]})
    assert kubernetes_text(expr) == "app=web,tier in (a,b),!legacy,canary"
    assert kubernetes_text(np.label_selector(None, "x", {})) == "everything"
