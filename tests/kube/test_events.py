"""The Event recorder and the generic resource helpers, against a real kube-apiserver."""
from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from calyx.kube import resources
from calyx.kube.events import EventRecorder, ObjectRef
from kube_helpers import SMALL_CLUSTER_TTL, create_node, create_pod, ensure_namespace

APPS_NAMESPACE = "apps"      # not "default", where Events about cluster-scoped objects go


def events_about(api, name: str, component: str, namespace: str = "default") -> list[dict]:
    """The Events ``component`` recorded about ``name`` (the cluster's own controllers may
    record Events about the same objects)."""
    return [e for e in resources.list_objects(api, resources.EVENTS, namespace=namespace).items
            if e["involvedObject"]["name"] == name and (e.get("source") or {}).get("component") == component]


def test_repeated_events_are_folded_into_one_with_a_count(kube):
    api = kube.client()
    node = create_node(api, {"metadata": {"name": "node-a"}})
    recorder = EventRecorder(api, component="bgpd", host="node-a")
    try:
        for _ in range(3):
            recorder.warning(node, "PeerDown", "peer 192.0.2.1 (AS 64700): hold timer expired")
        recorder.normal(node, "PeerUp", "peer 192.0.2.1 (AS 64700): established")
        assert recorder.flush(10)
        events = {e["reason"]: e for e in events_about(api, "node-a", "bgpd")}
        assert set(events) == {"PeerDown", "PeerUp"}
        down = events["PeerDown"]
        assert down["count"] == 3 and down["type"] == "Warning"
        assert down["source"] == {"component": "bgpd", "host": "node-a"}
        assert down["involvedObject"]["uid"] == node["metadata"]["uid"]
        assert events["PeerUp"]["type"] == "Normal" and events["PeerUp"]["count"] == 1
    finally:
        recorder.close()


def test_namespaced_objects_get_events_in_their_namespace_and_a_deleted_event_is_recreated(kube):
    api = kube.client()
    ensure_namespace(api, APPS_NAMESPACE)
    pod = create_pod(api, {
        "metadata": {"name": "web", "namespace": APPS_NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "registry.example/web:1"}]}})
    recorder = EventRecorder(api, component="felix", host="node-a")
    try:
        recorder.warning(pod, "RouteFailed", "no cali veth")
        assert recorder.flush(10)
        assert events_about(api, "web", "felix") == []            # not in "default"
        (event,) = events_about(api, "web", "felix", APPS_NAMESPACE)
        resources.delete_object(api, resources.EVENTS, event["metadata"]["name"], APPS_NAMESPACE)
        recorder.warning(pod, "RouteFailed", "no cali veth")
        assert recorder.flush(10)
        (again,) = events_about(api, "web", "felix", APPS_NAMESPACE)
        assert again["count"] == 1 and again["metadata"]["name"] != event["metadata"]["name"]
    finally:
        recorder.close()


def test_recording_never_raises_when_the_api_is_down(kube):
    api = kube.client()
    kube.stop_api()
    recorder = EventRecorder(api, component="felix", host="node-a")
    try:
        recorder.warning(ObjectRef(kind="IPPool", name="p"), "InvalidResource", "spec.cidr: 'x': bad")
        assert recorder.flush(60)        # given up on, logged, not raised
    finally:
        recorder.close()


def test_generic_helpers_treat_core_and_custom_kinds_alike(kube):
    api = kube.client()
    for resource, body, namespace in (
            (resources.IPPOOLS, {"metadata": {"name": "p"}, "spec": {"cidr": "10.1.0.0/16"}}, None),
            (resources.SECRETS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}}, "default"),
            (resources.NODES, {"metadata": {"name": "n", "annotations": SMALL_CLUSTER_TTL}}, None)):
        created = resources.create_object(api, resource, body, namespace=namespace)
        assert created["kind"] == resource.kind and created["metadata"]["resourceVersion"]
        patched = resources.patch_object(api, resource, body["metadata"]["name"],
                                         {"metadata": {"labels": {"touched": "yes"}}}, namespace=namespace)
        assert patched["metadata"]["labels"] == {"touched": "yes"}
        got = resources.get_object(api, resource, body["metadata"]["name"], namespace=namespace)
        assert got["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
        listed = resources.list_objects(api, resource, namespace=namespace, label_selector="touched=yes")
        assert [resources.object_key(o)[1] for o in listed.items] == [body["metadata"]["name"]]
        assert int(listed.resource_version) >= int(got["metadata"]["resourceVersion"])
        resources.delete_object(api, resource, body["metadata"]["name"], namespace=namespace)
        with pytest.raises(ApiException) as err:
            resources.get_object(api, resource, body["metadata"]["name"], namespace=namespace)
        assert err.value.status == 404
    with pytest.raises(ValueError, match="needs a namespace"):
        resources.get_object(api, resources.PODS, "x")
