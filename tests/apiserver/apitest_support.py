"""Object builders shared by the API emulator tests."""
from __future__ import annotations


def pod(name: str, node: str | None = "node-1", labels: dict | None = None, **spec) -> dict:
    body: dict = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
                  "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


def ippool(name: str, cidr: str = "10.244.0.0/16", **spec) -> dict:
    return {"apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec}}
