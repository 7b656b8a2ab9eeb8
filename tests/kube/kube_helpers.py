"""Helpers shared by the datastore tests: polling, and making objects the way a real API server
and its controllers want them (namespaces before namespaced objects, pods only once the
namespace's ServiceAccount exists, Nodes as the controllers would leave them)."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from calyx.cni.install import render_kubeconfig
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyxlab.controlplane.cluster import create_once_admitted

# kube-controller-manager's ttl controller annotates every Node with the TTL it wants (0 s in a
# cluster of up to 100 nodes) and leaves one alone that already carries it. Nodes made with it
# are not written by anyone but the test, whose resourceVersions and change counts stay its own
# (after an API outage the controller may only catch up many seconds later).
NODE_TTL_ANNOTATION = "node.alpha.kubernetes.io/ttl"
SMALL_CLUSTER_TTL = {NODE_TTL_ANNOTATION: "0"}


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05,
               what: str = "condition") -> object:
    """Poll ``predicate`` until truthy; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def ensure_namespace(api: kubernetes.client.ApiClient, name: str) -> None:
    """Create namespace ``name`` unless it exists (namespaces outlive a test: the cluster is
    shared by the whole session and only the objects in them are cleaned up)."""
    try:
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def create_pod(api: kubernetes.client.ApiClient, body: dict, timeout: float = 60.0) -> dict:
    """Create a pod, waiting out a brand-new namespace's missing ServiceAccount."""
    return create_once_admitted(lambda: resources.create_object(api, resources.PODS, body), timeout)


def create_node(api: kubernetes.client.ApiClient, body: dict) -> dict:
    """Create a Node that carries the ttl controller's annotation already (see above)."""
    meta = body.setdefault("metadata", {})
    meta["annotations"] = {**SMALL_CLUSTER_TTL, **(meta.get("annotations") or {})}
    return resources.create_object(api, resources.NODES, body)


def secret_grant_rules(names: Sequence[str]) -> list[dict]:
    """get, list and watch on the Secrets ``names`` only (RBAC resourceNames), as the chart
    grants BGP password Secrets to felix and bgpd's account."""
    return [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": list(names),
             "verbs": ["get", "list", "watch"]}]


@contextmanager
def service_account_api(api: kubernetes.client.ApiClient, kube, namespace: str, account: str,
                        secret_names: Sequence[str], cluster_rules: Sequence[dict] = ()
                        ) -> Iterator[kubernetes.client.ApiClient]:
    """A client authenticated as ServiceAccount ``namespace/account`` with a token from the
    TokenRequest API (as a pod of the account gets one), granted the Secrets ``secret_names``
    by name (Role and RoleBinding ``account``) and ``cluster_rules`` (ClusterRole and binding
    ``account``). The account and its grants are deleted afterwards (the ``kube`` fixture
    cleans up Secrets and Events only)."""
    core, rbac = kubernetes.client.CoreV1Api(api), kubernetes.client.RbacAuthorizationV1Api(api)
    subject = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": account}, "rules": secret_grant_rules(secret_names)})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": account}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account}})
    cluster_name = f"{namespace}-{account}"
    if cluster_rules:
        rbac.create_cluster_role({"metadata": {"name": cluster_name}, "rules": list(cluster_rules)})
        rbac.create_cluster_role_binding({
            "metadata": {"name": cluster_name}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name}})
    client = None
    try:
        token = core.create_namespaced_service_account_token(
            account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
        path = Path(kube.workdir) / f"{account}.kubeconfig"
        ca = kube.control_plane.pki.ca.cert.read_bytes()
        path.write_text(json.dumps(render_kubeconfig(kube.control_plane.url, ca, token)))
        client = kube_client.load(str(path))
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster_rules:
            rbac.delete_cluster_role_binding(cluster_name)
            rbac.delete_cluster_role(cluster_name)
        rbac.delete_namespaced_role_binding(account, namespace)
        rbac.delete_namespaced_role(account, namespace)
        core.delete_namespaced_service_account(account, namespace)


def can_list_by_name(api: kubernetes.client.ApiClient, resource: resources.Resource, name: str,
                     namespace: str) -> bool:
    """Whether the authorizer lets ``api`` list ``name`` with the field selector that pins it
    (False on 403; any other error is raised)."""
    try:
        resources.list_objects(api, resource, namespace, field_selector=f"metadata.name={name}")
        return True
    except ApiException as exc:
        if exc.status != 403:
            raise
        return False


def wait_watch_served(api: kubernetes.client.ApiClient, resource: resources.Resource,
                      timeout: float = 30.0) -> None:
    """Wait until the API server serves watches of ``resource`` from its watch cache.

    A restarted kube-apiserver builds a custom resource's watch cache on the first request for
    it; until the cache has listed from etcd, watches may be refused with 429 "storage is
    (re)initializing", which a reflector counts as a failure and retries after a backoff."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rv = resources.list_objects(api, resource).resource_version
            response = resources.open_watch(api, resource, rv, 1)
        except ApiException as exc:
            if exc.status != 429 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        response.close()
        return
