"""felix.policyindex follows snapshots change by change and must always equal
felix.policycalc.node_policy calculated from scratch on the same snapshot; a change touches only
the sets and endpoints it concerns."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from calyx import model
from calyx import networkpolicy as np
from felix import policycalc as pc
from felix.policyindex import PolicyDelta, PolicyIndex

NODE = "node1"
NODES = (NODE, "node2")
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c", "d")
POLICY_NAMES = ("p", "q", "r")
PORT_NAMES = ("http", "dns")
CONTAINER_PORTS = (("http", "TCP", 80), ("http", "TCP", 8080), ("dns", "UDP", 53), ("dns", "TCP", 53))


def reference(snapshot: model.Snapshot, node: str = NODE) -> pc.NodePolicy:
    return pc.node_policy(node, snapshot.network_policies.values(),
                          [pc.policy_pod(p) for p in snapshot.pods.values()], snapshot.namespaces)


# --- random inputs -----------------------------------------------------------------------

labels = st.dictionaries(st.sampled_from(("app", "tier", "team")), st.sampled_from(("1", "2")), max_size=3)
pod_labels = st.dictionaries(st.sampled_from(("app", "tier", "team")), st.sampled_from(("1", "2")),
                             min_size=1, max_size=3)
selector_labels = st.dictionaries(st.sampled_from(("app", "team")), st.sampled_from(("1", "2")), max_size=1)


@st.composite
def label_selectors(draw) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    if draw(st.booleans()):
        selector["matchLabels"] = draw(selector_labels)
    if draw(st.integers(0, 3)) == 0:
        selector["matchExpressions"] = [draw(st.sampled_from((
            {"key": "app", "operator": "In", "values": ["1"]},
            {"key": "tier", "operator": "NotIn", "values": ["2"]},
            {"key": "team", "operator": "Exists"},
            {"key": "app", "operator": "DoesNotExist"})))]
    return selector


@st.composite
def peers(draw) -> dict[str, Any]:
    shape = draw(st.sampled_from(("pods", "namespaces", "both", "block")))
    if shape == "block":
        return {"ipBlock": {"cidr": "10.0.0.0/30", "except": ["10.0.0.1/32"]}}
    peer: dict[str, Any] = {}
    if shape in ("pods", "both"):
        peer["podSelector"] = draw(label_selectors())
    if shape in ("namespaces", "both"):
        peer["namespaceSelector"] = draw(label_selectors())
    return peer


named_ports = st.builds(lambda n, proto: {"port": n, "protocol": proto},
                        st.sampled_from(PORT_NAMES), st.sampled_from(("TCP", "UDP")))
ports = st.one_of(st.builds(lambda p: {"port": p}, st.sampled_from((80, 53))), named_ports, named_ports,
                  st.just({"protocol": "UDP"}))


@st.composite
def rules(draw, peers_key: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.integers(0, 3)) > 0:
        rule[peers_key] = draw(st.lists(peers(), min_size=1, max_size=2))
    if draw(st.booleans()):
        rule["ports"] = draw(st.lists(ports, min_size=1, max_size=2))
    return rule


@st.composite
def policies(draw) -> np.NetworkPolicy:
    spec: dict[str, Any] = {"podSelector": draw(label_selectors()),
                            "ingress": draw(st.lists(rules("from"), min_size=1, max_size=2)),
                            "egress": draw(st.lists(rules("to"), min_size=1, max_size=2))}
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    return np.parse_network_policy({"metadata": {"namespace": draw(st.sampled_from(NAMESPACES)),
                                                 "name": draw(st.sampled_from(POLICY_NAMES))},
                                    "spec": spec})


@st.composite
def pods(draw) -> model.PodInfo:
    address = draw(st.sampled_from((None, "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5")))
    return model.PodInfo(draw(st.sampled_from(NAMESPACES)), draw(st.sampled_from(POD_NAMES)),
                         draw(st.sampled_from((NODE, *NODES))),     # local more often than not
                         (IPv4Address(address),) if address else (),
                         host_network=draw(st.booleans()) and draw(st.booleans()),
                         deleting=draw(st.booleans()) and draw(st.booleans()),
                         labels=tuple(sorted(draw(pod_labels).items())),
                         container_ports=tuple(draw(st.lists(st.sampled_from(CONTAINER_PORTS), min_size=1,
                                                             max_size=2, unique=True))))


# Each step changes the snapshot; after it, the index is updated and compared or (for
# "batched" steps) the next step's change is folded into the same update.
steps = st.one_of(
    st.tuples(st.just("pod"), pods()),
    st.tuples(st.just("delete pod"), st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(POD_NAMES))),
    st.tuples(st.just("relabel pod"), st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(POD_NAMES)), pod_labels),
    st.tuples(st.just("move pod"), st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(POD_NAMES)),
              st.sampled_from(NODES)),
    st.tuples(st.just("namespace"), st.sampled_from(NAMESPACES), labels),
    st.tuples(st.just("delete namespace"), st.sampled_from(NAMESPACES)),
    st.tuples(st.just("policy"), policies()),
    st.tuples(st.just("delete policy"), st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(POLICY_NAMES))),
)


def apply(snapshot: model.Snapshot, step: tuple) -> model.Snapshot:
    kind = step[0]
    pod_map = dict(snapshot.pods)
    namespaces = dict(snapshot.namespaces)
    policy_map = dict(snapshot.network_policies)
    if kind == "pod":
        pod_map[step[1].key] = step[1]
    elif kind == "delete pod":
        pod_map.pop(step[1], None)
    elif kind == "relabel pod" and step[1] in pod_map:
        pod_map[step[1]] = replace(pod_map[step[1]], labels=tuple(sorted(step[2].items())))
    elif kind == "move pod" and step[1] in pod_map:
        pod_map[step[1]] = replace(pod_map[step[1]], node=step[2])
    elif kind == "namespace":
        namespaces[step[1]] = step[2]
    elif kind == "delete namespace":
        namespaces.pop(step[1], None)
    elif kind == "policy":
        policy_map[step[1].key] = step[1]
    elif kind == "delete policy":
        policy_map.pop(step[1], None)
    return model.Snapshot(pods=pod_map, namespaces=namespaces, network_policies=policy_map)


@st.composite
def clusters(draw) -> model.Snapshot:
    """A starting point: labelled namespaces, a few pods and policies."""
    snapshot = model.Snapshot(namespaces={ns: draw(labels) for ns in NAMESPACES})
    for step in draw(st.lists(st.one_of(st.tuples(st.just("pod"), pods()), st.tuples(st.just("policy"), policies())),
                              min_size=4, max_size=14)):
        snapshot = apply(snapshot, step)
    return snapshot


@given(clusters(), st.lists(st.tuples(steps, st.booleans()), min_size=1, max_size=30))
@settings(max_examples=300, deadline=None)
def test_the_index_equals_the_calculation_from_scratch_after_every_update(start, history):
    index = PolicyIndex(NODE)
    snapshot = start
    index.update(snapshot)
    assert index.policy == reference(snapshot)
    for step, batched in history:
        snapshot = apply(snapshot, step)
        if batched:
            continue
        index.update(snapshot)
        assert index.policy == reference(snapshot)
    index.update(snapshot)
    assert index.policy == reference(snapshot)
    # and a fresh index fed the last snapshot (felix restarting) gets there at once
    fresh = PolicyIndex(NODE)
    fresh.update(snapshot)
    assert fresh.policy == index.policy


# --- what a change touches ---------------------------------------------------------------

def pod(namespace: str, name: str, node: str, address: str, **pod_labels: str) -> model.PodInfo:
    return model.PodInfo(namespace, name, node, (IPv4Address(address),),
                         labels=tuple(sorted(pod_labels.items())))


def policy(namespace: str, name: str, selects: str, allows_from: list[dict]) -> np.NetworkPolicy:
    return np.parse_network_policy({"metadata": {"namespace": namespace, "name": name}, "spec": {
        "podSelector": {"matchLabels": {"app": selects}},
        "ingress": [{"from": allows_from, "ports": [{"port": 8080}]}]}})


def cluster() -> model.Snapshot:
    """Local servers web (x) and db (y); remote clients in x, y and z; one policy per server
    allowing from app=client of its namespace and from every pod of namespaces team=blue."""
    pod_list = [pod("x", "web", NODE, "10.0.1.1", app="web"), pod("y", "db", NODE, "10.0.1.2", app="db"),
                pod("x", "c1", "node2", "10.0.2.1", app="client"), pod("x", "c2", "node2", "10.0.2.2", app="other"),
                pod("y", "c3", "node2", "10.0.2.3", app="client"), pod("z", "c4", "node2", "10.0.2.4", app="client")]
    policy_list = [policy(ns, f"allow-{app}", app, [{"podSelector": {"matchLabels": {"app": "client"}}},
                                                    {"namespaceSelector": {"matchLabels": {"team": "blue"}}}])
                   for ns, app in (("x", "web"), ("y", "db"))]
    return model.Snapshot(pods={p.key: p for p in pod_list},
                          namespaces={"x": {"team": "red"}, "y": {"team": "red"}, "z": {"team": "blue"}},
                          network_policies={p.key: p for p in policy_list})


def set_named(result: pc.NodePolicy, description: str) -> str:
    return next(name for name, s in result.address_sets.items() if s.description == description)


def with_pod(snapshot: model.Snapshot, changed: model.PodInfo) -> model.Snapshot:
    return replace(snapshot, pods={**snapshot.pods, changed.key: changed})


def test_first_update_calculates_everything():
    index = PolicyIndex(NODE)
    delta = index.update(cluster())
    assert index.policy == reference(cluster())
    assert delta.endpoints == {"x/web", "y/db"}
    assert delta.sets == set(index.policy.address_sets) and len(delta.sets) == 3


def test_a_remote_pod_label_change_touches_only_the_set_it_joins_and_the_one_it_leaves():
    index = PolicyIndex(NODE)
    before = cluster()
    index.update(before)
    joined = set_named(index.policy, "pods app=client in namespace x")
    c2 = before.pods[("x", "c2")]
    delta = index.update(with_pod(before, replace(c2, labels=(("app", "client"),))))
    assert delta.sets == {joined} and delta.endpoints == frozenset()
    assert IPv4Address("10.0.2.2") in index.policy.address_sets[joined].members
    assert delta.evaluations <= len(index.policy.address_sets)       # one test per set, not per pod
    left = replace(c2, labels=(("app", "gone"),))
    delta = index.update(with_pod(before, left))
    assert delta.sets == {joined}
    assert index.policy == reference(with_pod(before, left))


def test_a_change_that_moves_the_pod_in_no_set_changes_nothing():
    index = PolicyIndex(NODE)
    before = cluster()
    index.update(before)
    result = index.policy
    c2 = before.pods[("x", "c2")]
    delta = index.update(with_pod(before, replace(c2, labels=(("app", "other"), ("tier", "1")), phase="Running")))
    assert delta.sets == frozenset() and delta.endpoints == frozenset()
    assert index.policy is result


def test_a_local_pod_label_change_recalculates_only_its_own_endpoint():
    index = PolicyIndex(NODE)
    before = cluster()
    index.update(before)
    web = before.pods[("x", "web")]
    after = with_pod(before, replace(web, labels=(("app", "unselected"),)))
    delta = index.update(after)
    assert delta.endpoints == {"x/web"}
    assert index.policy.endpoints["x/web"].ingress is None
    # the set only web's policy named (app=client in x) is gone; the shared one stays
    assert delta.sets == {set_named(reference(before), "pods app=client in namespace x")}
    assert index.policy == reference(after)


def test_a_namespace_label_change_moves_only_its_pods_between_namespace_selector_sets():
    index = PolicyIndex(NODE)
    before = cluster()
    index.update(before)
    blue = set_named(index.policy, "pods everything in namespaces team=blue")
    after = replace(before, namespaces={**before.namespaces, "y": {"team": "blue"}})
    delta = index.update(after)
    assert delta.sets == {blue} and delta.endpoints == frozenset()
    assert index.policy.address_sets[blue].members == {IPv4Address("10.0.1.2"), IPv4Address("10.0.2.3"),
                                                        IPv4Address("10.0.2.4")}
    assert index.policy == reference(after)


def test_a_policy_change_recalculates_the_endpoints_it_selects_and_drops_sets_no_longer_named():
    index = PolicyIndex(NODE)
    before = cluster()
    index.update(before)
    old_set = set_named(index.policy, "pods app=client in namespace y")
    changed = policy("y", "allow-db", "db", [{"podSelector": {"matchLabels": {"app": "other"}}}])
    after = replace(before, network_policies={**before.network_policies, changed.key: changed})
    delta = index.update(after)
    assert delta.endpoints == {"y/db"}
    new_set = set_named(index.policy, "pods app=other in namespace y")
    assert delta.sets == {old_set, new_set}
    assert index.policy == reference(after)
    deleted = replace(after, network_policies={k: v for k, v in after.network_policies.items() if k != changed.key})
    delta = index.update(deleted)
    assert delta.endpoints == {"y/db"} and delta.sets == {new_set}
    assert index.policy.endpoints["y/db"].ingress is None
    assert index.policy == reference(deleted)


def test_the_same_snapshot_again_is_no_work():
    index = PolicyIndex(NODE)
    snapshot = cluster()
    index.update(snapshot)
    result = index.policy
    assert index.update(snapshot) == PolicyDelta()
    assert index.update(cluster()) == PolicyDelta()          # equal objects, not the same ones
    assert index.policy is result
