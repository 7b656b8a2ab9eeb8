"""CRUD, errors, updates, patches, finalizers and the status subresource through the official client."""
from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from apitest_support import ippool, pod, raw_request

GROUP, VERSION = "calyx.dev", "v1"


def status_of(exc: ApiException) -> dict:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def test_create_get_list_delete_pod(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", pod("web", labels={"app": "web"}))
    meta = created.metadata
    assert meta.namespace == "default" and meta.uid and meta.generation == 1
    assert int(meta.resource_version) > 0 and meta.creation_timestamp is not None
    assert created.status.phase == "Pending"
    got = core.read_namespaced_pod("web", "default")
    assert got.metadata.uid == meta.uid and got.spec.node_name == "node-1"
    listing = core.list_namespaced_pod("default")
    assert [p.metadata.name for p in listing.items] == ["web"]
    assert int(listing.metadata.resource_version) >= int(meta.resource_version)
    everywhere = core.list_pod_for_all_namespaces()
    assert [p.metadata.name for p in everywhere.items] == ["web"]
    core.delete_namespaced_pod("web", "default")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("web", "default")
    body = status_of(err.value)
    assert err.value.status == 404 and body["reason"] == "NotFound"
    assert body["details"] == {"name": "web", "kind": "pods"}


def test_create_returns_201_and_duplicate_409_already_exists(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    _, code, _ = core.create_node_with_http_info({"metadata": {"name": "n1"}})
    assert code == 201
    with pytest.raises(ApiException) as err:
        core.create_node({"metadata": {"name": "n1"}})
    body = status_of(err.value)
    assert err.value.status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'nodes "n1" already exists'


def test_generate_name_and_namespace_must_exist(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", {"metadata": {"generateName": "job-"},
                                                     "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert created.metadata.name.startswith("job-") and len(created.metadata.name) == len("job-") + 5
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("nowhere", pod("x"))
    assert err.value.status == 404 and status_of(err.value)["message"] == 'namespaces "nowhere" not found'
    core.create_namespace({"metadata": {"name": "calyx-system"}})
    assert core.create_namespaced_pod("calyx-system", pod("x")).metadata.namespace == "calyx-system"


def test_invalid_name_is_422_naming_field_and_value(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.create_node({"metadata": {"name": "Bad_Name"}})
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert "metadata.name" in body["message"] and "Bad_Name" in body["message"]


def test_update_conflict_on_stale_resource_version(core: client.CoreV1Api) -> None:
    first = core.create_node({"metadata": {"name": "n1", "labels": {"a": "1"}}})
    first.metadata.labels["a"] = "2"
    second = core.replace_node("n1", first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    first.metadata.labels["a"] = "3"   # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_node("n1", first)
    body = status_of(err.value)
    assert err.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    assert core.read_node("n1").metadata.labels == {"a": "2"}


def test_generation_bumps_on_spec_change_only(core: client.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24"}})
    labelled = core.patch_node("n1", {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    changed = core.patch_node("n1", {"spec": {"unschedulable": True}})
    assert changed.metadata.generation == 2
    status = core.patch_node_status("n1", {"status": {"capacity": {"pods": "110"}}})
    assert status.metadata.generation == 2


def test_patch_flavours_on_pods(core: client.CoreV1Api) -> None:
    body = pod("web", labels={"app": "web", "tier": "front"})
    body["spec"]["containers"].append({"name": "side", "image": "envoy"})
    core.create_namespaced_pod("default", body)
    # strategic merge (the client's default for dict bodies): containers merge by name
    patched = core.patch_namespaced_pod("web", "default", {"spec": {"containers": [
        {"name": "side", "image": "envoy:2"}]}})
    assert [(c.name, c.image) for c in patched.spec.containers] == [("main", "busybox"), ("side", "envoy:2")]
    # strategic merge with a $patch: delete directive on a list element
    patched = core.patch_namespaced_pod("web", "default", {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}})
    assert [c.name for c in patched.spec.containers] == ["main"]
    # JSON patch (a list body)
    patched = core.patch_namespaced_pod("web", "default", [
        {"op": "add", "path": "/metadata/labels/version", "value": "v2"},
        {"op": "remove", "path": "/metadata/labels/tier"}])
    assert patched.metadata.labels == {"app": "web", "version": "v2"}
    # JSON merge patch: lists replace, null deletes
    patched = core.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"app": None}}},
                                        _content_type="application/merge-patch+json")
    assert patched.metadata.labels == {"version": "v2"}


def test_json_patch_test_failure_is_422(core: client.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "n1", "labels": {"a": "1"}}})
    with pytest.raises(ApiException) as err:
        core.patch_node("n1", [{"op": "test", "path": "/metadata/labels/a", "value": "2"},
                               {"op": "replace", "path": "/metadata/labels/a", "value": "3"}])
    assert err.value.status == 422
    assert core.read_node("n1").metadata.labels == {"a": "1"}


def test_strategic_merge_conditions_and_addresses_by_type(core: client.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "n1"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}]}})
    node = core.patch_node_status("n1", {"status": {
        "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
        "conditions": [{"type": "Ready", "status": "True"}]}})
    assert [(a.type, a.address) for a in node.status.addresses] == [("InternalIP", "10.0.0.9"),
                                                                     ("Hostname", "n1")]
    assert {c.type: c.status for c in node.status.conditions} == {"Ready": "True", "MemoryPressure": "False"}
    pod_obj = core.create_namespaced_pod("default", pod("p"))
    assert pod_obj.status.phase == "Pending"
    status = core.patch_namespaced_pod_status("p", "default", {"status": {
        "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
        "conditions": [{"type": "Ready", "status": "True"}]}})
    assert status.status.pod_ip == "10.244.1.5" and status.status.phase == "Pending"


def test_status_subresource_separation_on_custom_kind(custom: client.CustomObjectsApi) -> None:
    created = custom.create_cluster_custom_object(GROUP, VERSION, "ippools",
                                                  {**ippool("p1"), "status": {"ignored": True}})
    assert "status" not in created            # create ignores status with a status subresource
    assert created["spec"]["blockSize"] == 26  # schema default applied
    with_status = custom.patch_cluster_custom_object_status(GROUP, VERSION, "ippools", "p1",
                                                            {"status": {"allocated": 3}})
    assert with_status["status"] == {"allocated": 3}
    with_status["spec"]["ipipMode"] = "Always"
    with_status["status"] = {"allocated": 99}
    replaced = custom.replace_cluster_custom_object(GROUP, VERSION, "ippools", "p1", with_status)
    assert replaced["status"] == {"allocated": 3} and replaced["spec"]["ipipMode"] == "Always"
    assert replaced["metadata"]["generation"] == 2
    replaced["spec"]["ipipMode"] = "Never"
    replaced["status"] = {"allocated": 4}
    status_put = custom.replace_cluster_custom_object_status(GROUP, VERSION, "ippools", "p1", replaced)
    assert status_put["status"] == {"allocated": 4} and status_put["spec"]["ipipMode"] == "Always"
    assert status_put["metadata"]["generation"] == 2


def test_custom_object_schema_violation_is_422_naming_field(custom: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(GROUP, VERSION, "ippools", ippool("p1", ipipMode="Sometimes"))
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert "spec.ipipMode" in body["message"] and "Sometimes" in body["message"]
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(GROUP, VERSION, "ippools",
                                            {"apiVersion": "calyx.dev/v1", "kind": "IPPool",
                                             "metadata": {"name": "p2"}, "spec": {}})
    assert err.value.status == 422 and "cidr" in status_of(err.value)["message"]
    pruned = custom.create_cluster_custom_object(GROUP, VERSION, "ippools", ippool("p3", unknown="x"))
    assert "unknown" not in pruned["spec"]


def test_merge_patch_on_custom_kind_and_strategic_refused(custom: client.CustomObjectsApi) -> None:
    custom.create_cluster_custom_object(GROUP, VERSION, "ippools", ippool("p1", natOutgoing=True))
    patched = custom.patch_cluster_custom_object(GROUP, VERSION, "ippools", "p1",
                                                 {"spec": {"natOutgoing": None, "ipipMode": "CrossSubnet"}})
    assert "natOutgoing" not in patched["spec"] and patched["spec"]["ipipMode"] == "CrossSubnet"
    with pytest.raises(ApiException) as err:
        custom.patch_cluster_custom_object(GROUP, VERSION, "ippools", "p1", {"spec": {"disabled": True}},
                                           _content_type="application/strategic-merge-patch+json")
    assert err.value.status == 415


def test_server_side_apply_creates_then_merges(custom: client.CustomObjectsApi) -> None:
    def apply(body: dict) -> tuple[dict, int]:
        data, code, _ = custom.patch_cluster_custom_object_with_http_info(
            GROUP, VERSION, "ippools", "p1", body, field_manager="test",
            _content_type="application/apply-patch+yaml")
        return data, code
    _, code = apply(ippool("p1", ipipMode="Always"))      # the client decodes only 200 bodies of PATCH
    assert code == 201
    assert custom.get_cluster_custom_object(GROUP, VERSION, "ippools", "p1")["spec"]["ipipMode"] == "Always"
    merged, code = apply({"apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": "p1"},
                          "spec": {"natOutgoing": True}})
    assert code == 200 and merged["spec"]["natOutgoing"] is True and merged["spec"]["cidr"] == "10.244.0.0/16"
    with pytest.raises(ApiException) as err:
        custom.patch_cluster_custom_object(GROUP, VERSION, "ippools", "p1", {"spec": {}},
                                           _content_type="application/apply-patch+yaml")
    assert err.value.status == 400 and "fieldManager" in status_of(err.value)["message"]


def test_finalizers_keep_object_until_removed(core: client.CoreV1Api) -> None:
    core.create_namespaced_secret("default", {"metadata": {"name": "s", "finalizers": ["calyx.dev/hold"]},
                                              "stringData": {"password": "pw"}})
    secret = core.read_namespaced_secret("s", "default")
    assert base64.b64decode(secret.data["password"]) == b"pw"
    core.delete_namespaced_secret("s", "default")
    held = core.read_namespaced_secret("s", "default")
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["calyx.dev/hold"]
    core.delete_namespaced_secret("s", "default")      # deleting again changes nothing
    assert core.read_namespaced_secret("s", "default").metadata.resource_version == held.metadata.resource_version
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_secret("s", "default", {"metadata": {"finalizers": ["calyx.dev/another"]}})
    assert err.value.status == 422
    core.patch_namespaced_secret("s", "default", [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(ApiException) as err:
        core.read_namespaced_secret("s", "default")
    assert err.value.status == 404


def test_delete_preconditions(core: client.CoreV1Api) -> None:
    node = core.create_node({"metadata": {"name": "n1"}})
    with pytest.raises(ApiException) as err:
        core.delete_node("n1", body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other")))
    assert err.value.status == 409 and "Precondition failed" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.delete_node("n1", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version="1")))
    assert err.value.status == 409
    core.delete_node("n1", body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
        uid=node.metadata.uid, resource_version=node.metadata.resource_version)))
    assert core.list_node().items == []


def test_deletecollection_with_label_selector(core: client.CoreV1Api) -> None:
    for i in range(4):
        core.create_namespaced_pod("default", pod(f"p{i}", labels={"batch": "a" if i < 3 else "b"}))
    core.delete_collection_namespaced_pod("default", label_selector="batch=a")
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["p3"]


def test_namespace_deletion_removes_its_objects(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_pod("team", pod("p"))
    core.create_namespaced_secret("team", {"metadata": {"name": "s", "finalizers": ["x/y"]}})
    core.delete_namespace("team")
    assert core.read_namespace("team").status.phase == "Terminating"
    assert core.list_namespaced_pod("team").items == []
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("team", pod("q"))
    assert err.value.status == 403
    core.patch_namespaced_secret("s", "team", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespace("team")
    assert err.value.status == 404


def test_list_limit_continue_is_consistent(core: client.CoreV1Api) -> None:
    for i in range(7):
        core.create_node({"metadata": {"name": f"n{i}"}})
    page = core.list_node(limit=3)
    names = [n.metadata.name for n in page.items]
    assert page.metadata.remaining_item_count == 4 and page.metadata._continue
    core.create_node({"metadata": {"name": "n00"}})           # after the first page: not in this list
    core.delete_node("n6")
    while page.metadata._continue:
        page = core.list_node(limit=3, _continue=page.metadata._continue)
        names += [n.metadata.name for n in page.items]
    assert names == [f"n{i}" for i in range(7)]


def test_list_at_exact_resource_version(core: client.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "a"}})
    rv = core.list_node().metadata.resource_version
    core.create_node({"metadata": {"name": "b"}})
    core.patch_node("a", {"metadata": {"labels": {"later": "yes"}}})
    old = core.list_node(resource_version=rv, resource_version_match="Exact")
    assert [(n.metadata.name, n.metadata.labels) for n in old.items] == [("a", None)]
    assert old.metadata.resource_version == rv


def test_service_and_event_and_namespaced_custom_kind(core: client.CoreV1Api,
                                                      custom: client.CustomObjectsApi) -> None:
    svc = core.create_namespaced_service("default", {"metadata": {"name": "dns"}, "spec": {
        "ports": [{"port": 53, "protocol": "UDP"}], "selector": {"app": "dns"}}})
    assert svc.spec.ports[0].port == 53 and svc.spec.cluster_ip == "10.96.0.2" and svc.spec.type == "ClusterIP"
    assert core.create_namespaced_service("default", {"metadata": {"name": "api"}, "spec": {
        "ports": [{"port": 443}]}}).spec.cluster_ip == "10.96.0.3"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("default", {"metadata": {"name": "dup"}, "spec": {
            "clusterIP": "10.96.0.3", "ports": [{"port": 1}]}})
    assert err.value.status == 422 and "10.96.0.3" in status_of(err.value)["message"]
    core.create_namespaced_event("default", {"metadata": {"name": "ev1"}, "reason": "Started",
                                             "involvedObject": {"kind": "Pod", "name": "web",
                                                                "namespace": "default"}})
    assert [e.reason for e in core.list_namespaced_event("default", field_selector="involvedObject.name=web")
            .items] == ["Started"]
    w = custom.create_namespaced_custom_object("test.calyx.dev", "v1", "default", "widgets", {
        "apiVersion": "test.calyx.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"any": [1]}})
    assert w["metadata"]["namespace"] == "default" and w["spec"] == {"any": [1]}
    assert len(custom.list_cluster_custom_object("test.calyx.dev", "v1", "widgets")["items"]) == 1


def test_bad_selector_is_400(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.list_node(label_selector="a in (b")
    assert err.value.status == 400 and "labelSelector" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.list_node(field_selector="spec.nodeName=x")
    assert err.value.status == 400 and "field label not supported" in status_of(err.value)["message"]


def test_unknown_fields_are_dropped_without_strict_validation(server, core: client.CoreV1Api) -> None:
    body = pod("p")
    body["spec"]["nodeNmae"] = "typo"
    code, created = raw_request(server.url, "POST", "/api/v1/namespaces/default/pods", body)
    assert code == 201 and "nodeNmae" not in created["spec"]
    assert core.read_namespaced_pod("p", "default").spec.containers[0].name == "main"
    body["metadata"]["name"] = "q"
    code, status = raw_request(server.url, "POST", "/api/v1/namespaces/default/pods?fieldValidation=Strict", body)
    assert code == 400 and status["kind"] == "Status" and 'unknown field "spec.nodeNmae"' in status["message"]


def test_malformed_requests_get_status_objects(server) -> None:
    code, status = raw_request(server.url, "POST", "/api/v1/namespaces/default/pods", [1])
    assert code == 400 and status["reason"] == "BadRequest" and "JSON object" in status["message"]
    code, status = raw_request(server.url, "POST", "/api/v1/namespaces/default/pods",
                               {"kind": "Node", "metadata": {"name": "x"}})
    assert code == 400 and "'Node'" in status["message"]
    code, status = raw_request(server.url, "POST", "/api/v1/nodes",
                               {"metadata": {"name": "n", "labels": {"a": 1}}})
    assert code == 422 and "metadata.labels" in status["message"]
    code, status = raw_request(server.url, "GET", "/api/v1/pods?watch=1&resourceVersion=abc")
    assert code == 400 and "'abc'" in status["message"]
    code, status = raw_request(server.url, "GET", "/apis/nothing.example/v1/things")
    assert code == 404 and status["kind"] == "Status"
    code, status = raw_request(server.url, "PATCH", "/api/v1/nodes/none", {}, "application/merge-patch+json")
    assert code == 404 and status["message"] == 'nodes "none" not found'
