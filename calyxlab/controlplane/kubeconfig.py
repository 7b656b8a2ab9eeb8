"""Kubeconfig files for the lab cluster: the server URL, its CA and one client certificate, all
embedded, so a file works wherever it is copied (a node's namespace, UML, a test's temp dir).

``tls-server-name`` lets one API server certificate serve clients that reach it through any
address (a test's veth, the loopback), as kubectl, helm and the Python client all honour it.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from calyxlab.controlplane.pki import KeyPair

SERVER_NAME = "kubernetes"   # a DNS name every API server certificate of the lab carries


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server_url: str, ca_cert: Path, client: KeyPair, user: str,
               cluster: str = "calyx-lab", namespace: str = "default") -> dict:
    """The kubeconfig document (pure but for reading the PEM files)."""
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": cluster, "cluster": {
            "server": server_url, "certificate-authority-data": _b64(ca_cert),
            "tls-server-name": SERVER_NAME}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": _b64(client.cert), "client-key-data": _b64(client.key)}}],
        "contexts": [{"name": f"{user}@{cluster}", "context": {
            "cluster": cluster, "user": user, "namespace": namespace}}],
        "current-context": f"{user}@{cluster}",
    }


def write(path: str | os.PathLike[str], document: dict) -> Path:
    """Write a kubeconfig atomically, readable by root only; returns its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(document, sort_keys=False))
    os.replace(tmp, target)
    return target
