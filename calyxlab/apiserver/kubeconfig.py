"""Kubeconfig files that point the official client and kubectl at the emulator (plain HTTP,
a dummy bearer token the emulator does not check)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

DUMMY_TOKEN = "calyx-lab-token"


def kubeconfig(server_url: str, context: str = "calyx-lab") -> dict:
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": server_url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": context, "user": {"token": DUMMY_TOKEN}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
        "current-context": context,
    }


def write_kubeconfig(path: str | os.PathLike, server_url: str, context: str = "calyx-lab") -> Path:
    """Write a kubeconfig for ``server_url`` atomically; returns its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig(server_url, context), sort_keys=False))
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return target
