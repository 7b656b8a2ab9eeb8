"""Registers a lab node in the Kubernetes API the way kubelet does.

Creates (or updates) the Node object named after the lab node, with the topology labels plus
``kubernetes.io/hostname``, the InternalIP and Hostname addresses and a Ready condition.
Uses the official kubernetes client with the node's own kubelet credentials
(``system:node:NAME``), so the Node authorizer and NodeRestriction admission check every write.
"""
from __future__ import annotations

import datetime
from typing import Mapping

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException


CAPACITY = {"cpu": "2", "memory": "4Gi", "pods": "110"}


def node_body(name: str, labels: Mapping[str, str], internal_ip: str | None) -> dict:
    """The Node object kubelet would register (pure)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    addresses = ([{"type": "InternalIP", "address": internal_ip}] if internal_ip else [])
    addresses.append({"type": "Hostname", "address": name})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name,
                     "labels": {**labels, "kubernetes.io/hostname": name,
                                "kubernetes.io/os": "linux"}},
        "spec": {},
        "status": {
            # What the scheduler needs to place a pod here (a DaemonSet's, say).
            "capacity": dict(CAPACITY), "allocatable": dict(CAPACITY),
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "calyx-lab node is ready",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
        },
    }


def register(kubeconfig: str, name: str, labels: Mapping[str, str],
             internal_ip: str | None) -> None:
    """Create or update Node ``name`` with its addresses and a Ready condition."""
    api_client = k8s_config.new_client_from_config(config_file=kubeconfig)
    try:
        core = k8s.CoreV1Api(api_client)
        body = node_body(name, labels, internal_ip)
        try:
            core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise RuntimeError(f"Node {name!r}: create failed: {exc.status} {exc.reason}: "
                                   f"{exc.body}") from None
            core.patch_node(name, {"metadata": {"labels": body["metadata"]["labels"]}})
        current = core.read_node(name)
        ready = any(c.type == "Ready" and c.status == "True"
                    for c in (current.status.conditions or [])) if current.status else False
        if not ready:
            try:
                core.patch_node_status(name, {"status": body["status"]})
            except ApiException as exc:
                raise RuntimeError(f"Node {name!r}: status update failed: {exc.status} "
                                   f"{exc.reason}: {exc.body}") from None
    finally:
        api_client.close()
