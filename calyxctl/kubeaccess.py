"""calyxctl's access to the Kubernetes API: the client from ``--kubeconfig``, ``KUBECONFIG``
or the in-cluster account (:mod:`calyx.kube.client`), and plain-dict lists through
:mod:`calyx.kube.resources`. I/O only."""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Mapping, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from calyx import model
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyxctl.daemonviews import ViewUnavailable

T = TypeVar("T")


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


def parse_each(items: list[dict[str, Any]], parse: Callable[[Mapping[str, Any]], Any],
               invalid: list[str]) -> dict[str, Any]:
    """Each object parsed (``model.parse_*``) by name; those that fail validation are left out
    and their errors appended to ``invalid``."""
    out: dict[str, Any] = {}
    for raw in items:
        try:
            parsed = parse(raw)
        except model.ValidationError as exc:
            invalid.append(str(exc))
            continue
        out[parsed.name] = parsed
    return out


def describe_error(exc: BaseException) -> str:
    return kube_client.describe_error(exc, api_message=True)


def read(what: str, call: Callable[[], T]) -> T:
    """``call()`` against the API, any failure a :class:`ViewUnavailable` naming ``what`` (e.g.
    "Pod x/a"): not found, refused, unreachable, or no client configuration."""
    try:
        return call()
    except kube_client.ClientConfigError as exc:
        raise ViewUnavailable(str(exc)) from None
    except ApiException as exc:
        if exc.status == 404:
            raise ViewUnavailable(f"{what} not found") from None
        raise ViewUnavailable(f"reading {what}: {describe_error(exc)}") from None
    except (HTTPError, OSError) as exc:
        raise ViewUnavailable(f"reading {what}: {describe_error(exc)}") from None
