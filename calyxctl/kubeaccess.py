"""calyxctl's access to the Kubernetes API: the client from ``--kubeconfig``, ``KUBECONFIG``
or the in-cluster account (:mod:`calyx.kube.client`), and plain-dict lists through
:mod:`calyx.kube.resources`. I/O only."""
from __future__ import annotations

import argparse
import os
from typing import Any

import kubernetes.client

from calyx.kube import client as kube_client
from calyx.kube import resources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig file (default: KUBECONFIG, else the in-cluster account)")


def load(args: argparse.Namespace) -> kubernetes.client.ApiClient:
    """Raises :class:`calyx.kube.client.ClientConfigError` naming what was tried."""
    return kube_client.load(getattr(args, "kubeconfig", None) or os.environ.get("KUBECONFIG") or None)


def list_raw(api: kubernetes.client.ApiClient, resource: resources.Resource) -> list[dict[str, Any]]:
    return resources.list_objects(api, resource).items


def get_raw(api: kubernetes.client.ApiClient, resource: resources.Resource, name: str) -> dict[str, Any]:
    return resources.get_object(api, resource, name)


def describe_error(exc: BaseException) -> str:
    return kube_client.describe_error(exc, api_message=True)
