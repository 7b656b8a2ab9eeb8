"""Building Kubernetes API clients: from a kubeconfig file, else from the in-cluster service
account, else a clear error. Never touches the kubernetes package's global default configuration.

Thread safety: an ``ApiClient``'s synchronous calls may be shared between threads (its urllib3
``PoolManager`` is thread-safe and the legacy async ``ThreadPool`` is created under a lock), but
its pool is small and a long-running watch holds one of its connections for minutes. Each
reflector thread therefore gets its own client (:func:`clone`) sharing the same
:class:`kubernetes.client.Configuration`, so watches never starve ordinary requests.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import MaxRetryError

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


class ClientConfigError(RuntimeError):
    """No usable API configuration; the message says what was tried."""


def load(kubeconfig: str | None, environ: Mapping[str, str] | None = None,
         context: str | None = None) -> kubernetes.client.ApiClient:
    """An ApiClient for ``kubeconfig``; with None, the in-cluster configuration when
    ``KUBERNETES_SERVICE_HOST`` is set; otherwise :class:`ClientConfigError`."""
    env = os.environ if environ is None else environ
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        if not os.path.isfile(kubeconfig):
            raise ClientConfigError(f"kubeconfig {kubeconfig!r}: no such file")
        try:
            kubernetes.config.load_kube_config(config_file=kubeconfig, context=context,
                                               client_configuration=configuration,
                                               persist_config=False)
        except (ConfigException, ValueError, TypeError, KeyError) as exc:
            raise ClientConfigError(f"kubeconfig {kubeconfig!r}: unusable: {exc}") from exc
    elif env.get(IN_CLUSTER_ENV):
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ClientConfigError(f"in-cluster configuration ({IN_CLUSTER_ENV}={env[IN_CLUSTER_ENV]}): "
                                    f"unusable: {exc}") from exc
    else:
        raise ClientConfigError(f"no Kubernetes API configuration: pass a kubeconfig (KUBECONFIG or --kubeconfig) "
                                f"or run in a pod ({IN_CLUSTER_ENV} unset)")
    # One immediate retry (a pooled keep-alive connection the server closed); beyond that the
    # callers' own backoff decides when to try again.
    configuration.retries = 1
    return kubernetes.client.ApiClient(configuration)


def clone(api: kubernetes.client.ApiClient) -> kubernetes.client.ApiClient:
    """A new ApiClient (own connection pool) with the same configuration, for another thread."""
    return kubernetes.client.ApiClient(api.configuration)


def server_url(api: kubernetes.client.ApiClient) -> str:
    return str(api.configuration.host)


def describe_error(exc: BaseException, api_message: bool = False) -> str:
    """A one-line account of a failed API call for logs: HTTP status and reason, or the
    connection error. With ``api_message``, an HTTP error also carries the message of the API's
    Status (a 403 names the user, the verb and the resource refused)."""
    if isinstance(exc, ApiException):
        text = f"HTTP {exc.status} {exc.reason or ''}".strip()
        message = status_message(exc) if api_message else ""
        return f"{text}: {message}" if message else text
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def status_message(exc: ApiException) -> str:
    """The ``message`` of the Status an API error carries ("" when the body is not one)."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return ""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) else ""
