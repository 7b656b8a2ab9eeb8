"""The two ends of a trace and the Calyx resources it reasons with, read from the Kubernetes
API: a pod's address and node, the Service an address belongs to and its ready endpoints, the
Nodes (addresses, VTEPs), IPPools and IPAM blocks. I/O only; the parsing is :mod:`calyx.model`'s
and :mod:`calyxctl.trace.facts`'."""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Mapping

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from calyx import crds, model
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyxctl import kubeaccess
from calyxctl.trace.facts import (AddressEnd, Endpoint, PodEnd, ServiceEnd, ready_endpoint_addresses,
                                  service_ports)


class ResolveError(RuntimeError):
    """An end of the trace cannot be used; the message names the object and why."""


@dataclass(frozen=True)
class Cluster:
    nodes: Mapping[str, model.NodeInfo]
    pools: Mapping[str, model.IPPool]
    blocks: Mapping[str, model.IPAMBlock]
    skipped: tuple[str, ...] = ()        # objects that failed validation, with why


def read_cluster(api: kubernetes.client.ApiClient) -> Cluster:
    schemas = crds.spec_schemas()
    skipped: list[str] = []
    nodes = kubeaccess.parse_each(resources.list_objects(api, resources.NODES).items, model.parse_node, skipped)
    pools = kubeaccess.parse_each(resources.list_objects(api, resources.IPPOOLS).items,
                       lambda o: model.parse_ippool(o, schemas), skipped)
    blocks = kubeaccess.parse_each(resources.list_objects(api, resources.IPAMBLOCKS).items,
                        lambda o: model.parse_ipam_block(o, schemas), skipped)
    return Cluster(nodes, pools, blocks, tuple(skipped))


def _pod_end(pod: model.PodInfo) -> PodEnd:
    where = f"pod {pod.namespace}/{pod.name}"
    if pod.host_network:
        raise ResolveError(f"{where}: spec.hostNetwork: true: it uses its node's addresses, not a Calyx pod address")
    if pod.node is None:
        raise ResolveError(f"{where}: spec.nodeName: not scheduled to a node yet")
    if not pod.ips:
        raise ResolveError(f"{where}: status.podIPs: no IPv4 address yet (phase {pod.phase or 'unknown'})")
    return PodEnd(pod.namespace, pod.name, pod.ips[0], pod.node)


def resolve_pod(api: kubernetes.client.ApiClient, text: str) -> PodEnd:
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name:
        raise ResolveError(f"{text!r}: expected a pod as NAMESPACE/NAME")
    try:
        raw = resources.get_object(api, resources.PODS, name, namespace=namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise ResolveError(f"pod {namespace}/{name}: not found") from None
        raise ResolveError(f"pod {namespace}/{name}: {kube_client.describe_error(exc, api_message=True)}") from None
    return _pod_end(model.parse_pod(raw))


def resolve_destination(api: kubernetes.client.ApiClient, text: str) -> Endpoint:
    """A pod given as NAMESPACE/NAME, or an IPv4 address: the pod holding it when there is one
    (so the trace checks its delivery too), else the bare address."""
    try:
        ip = IPv4Address(text)
    except ValueError:
        if "/" in text:
            return resolve_pod(api, text)
        raise ResolveError(f"{text!r}: expected a pod as NAMESPACE/NAME or an IPv4 address") from None
    holder = _pod_holding(api, ip)
    return _pod_end(holder) if holder is not None else AddressEnd(ip)


def _pod_holding(api: kubernetes.client.ApiClient, ip: IPv4Address) -> model.PodInfo | None:
    holders = [model.parse_pod(p) for p in resources.list_objects(
        api, resources.PODS, field_selector=f"status.podIP={ip}").items]
    holders = [p for p in holders if not p.host_network and not p.deleting]
    return holders[0] if holders else None


def _role(service: model.ServiceInfo, ip: IPv4Address) -> str | None:
    if ip in service.cluster_ips:
        return "ClusterIP"
    if ip in service.external_ips:
        return "external IP"
    if ip in service.load_balancer_ips:
        return "load-balancer IP"
    return None


def resolve_service(api: kubernetes.client.ApiClient, ip: IPv4Address) -> ServiceEnd | None:
    """The Service whose ClusterIP, external IP or published load-balancer address ``ip`` is,
    with its ready endpoints (the pods holding their addresses) and ports; None if none is."""
    for raw in resources.list_objects(api, resources.SERVICES).items:
        try:
            service = model.parse_service(raw)
        except model.ValidationError:
            continue
        role = _role(service, ip)
        if role is None:
            continue
        slices = resources.list_objects(api, resources.ENDPOINTSLICES, namespace=service.namespace,
                                        label_selector=f"{model.LABEL_SERVICE_NAME}={service.name}").items
        endpoints = []
        for address in ready_endpoint_addresses(slices):
            pod = _pod_holding(api, address)
            if pod is not None and pod.node is not None and pod.ips:
                endpoints.append(_pod_end(pod))
        return ServiceEnd(service.namespace, service.name, ip, role, tuple(endpoints), service_ports(raw, slices))
    return None
