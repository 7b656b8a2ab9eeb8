"""Helpers shared by the datastore tests: polling, and making objects the way a real API server
and its controllers want them (namespaces before namespaced objects, pods only once the
namespace's ServiceAccount exists, Nodes as the controllers would leave them)."""
from __future__ import annotations

import time
from typing import Callable

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

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
