"""Service advertisement: which service prefixes this node originates toward peers outside the
cluster, from the Services, their EndpointSlices, the BGPConfiguration and this node.

Pure calculation, following Calico's rules:

* **Ranges.** Every node advertises the configured ranges: all of ``serviceClusterIPs``, and
  those of ``serviceExternalIPs`` and ``serviceLoadBalancerIPs`` wider than one address. A
  single-address entry (a /32) is not a range: it is advertised per Service, below, so that a
  Service with ``externalTrafficPolicy: Local`` is not drawn to nodes without its endpoints.
* **Local Services.** A Service of type ClusterIP, NodePort or LoadBalancer with
  ``externalTrafficPolicy: Local`` and a cluster IP: the /32 of its cluster IPs inside
  ``serviceClusterIPs``, of its external IPs inside ``serviceExternalIPs`` and of the
  load-balancer addresses published in its ``status.loadBalancer.ingress`` inside
  ``serviceLoadBalancerIPs`` is advertised by the nodes running at least one ready endpoint of
  it (its IPv4 EndpointSlices), and by no other. The longer prefix wins at the router, so
  traffic goes only to those nodes, which keep the client's source address.
* **Cluster Services with a single-address entry.** A Service with the default
  ``externalTrafficPolicy: Cluster`` whose external IP or load-balancer address is exactly a
  /32 entry of ``serviceExternalIPs`` / ``serviceLoadBalancerIPs``: those /32s (and the ones
  of its other addresses, as for a Local Service) are advertised by every node, since no range
  covers that entry. Other Cluster Services need no /32: a range covers them.
* An address outside its configured ranges is never advertised; ``internalTrafficPolicy`` plays
  no part (it concerns traffic from inside the cluster); headless and ExternalName Services
  have nothing to advertise.
* A node labelled ``node.kubernetes.io/exclude-from-external-load-balancers=true`` advertises
  no service prefix at all, neither ranges nor /32s.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Iterable, Mapping

from calyx.model import BGPConfiguration, EndpointSliceInfo, NodeInfo, ServiceInfo, Snapshot

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
ADVERTISED_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer"})


@dataclass(frozen=True)
class ServiceAdvertisement:
    """What this node originates for Services: the configured ranges and the /32s of
    individual Services (each with the Services that ask for it, for logs and status)."""

    ranges: frozenset[IPv4Network] = frozenset()
    addresses: Mapping[IPv4Network, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @property
    def prefixes(self) -> frozenset[IPv4Network]:
        return self.ranges | frozenset(self.addresses)


def excluded(node: NodeInfo | None) -> bool:
    """Whether the node is kept out of service advertisement by its label."""
    return node is not None and node.labels.get(EXCLUDE_LABEL) == "true"


def advertised_ranges(config: BGPConfiguration) -> frozenset[IPv4Network]:
    """The configured ranges every node advertises (single-address entries of the external
    and load-balancer lists excepted: they go per Service)."""
    return frozenset(config.service_cluster_ips) | frozenset(
        cidr for cidr in config.service_external_ips + config.service_load_balancer_ips if cidr.prefixlen < 32)


def _inside(address: IPv4Address, cidrs: Iterable[IPv4Network]) -> bool:
    return any(address in cidr for cidr in cidrs)


def _single(address: IPv4Address, cidrs: Iterable[IPv4Network]) -> bool:
    return any(cidr.prefixlen == 32 and address == cidr.network_address for cidr in cidrs)


def service_addresses(service: ServiceInfo, config: BGPConfiguration) -> tuple[IPv4Address, ...]:
    """The Service's addresses inside their configured ranges: cluster IPs in
    serviceClusterIPs, external IPs in serviceExternalIPs, published load-balancer addresses
    in serviceLoadBalancerIPs."""
    found = [ip for ip in service.cluster_ips if _inside(ip, config.service_cluster_ips)]
    found += [ip for ip in service.external_ips if _inside(ip, config.service_external_ips)]
    if service.type == "LoadBalancer":
        found += [ip for ip in service.load_balancer_ips if _inside(ip, config.service_load_balancer_ips)]
    return tuple(dict.fromkeys(found))


def needs_local_endpoints(service: ServiceInfo) -> bool:
    """Whether the Service's /32s are advertised only by nodes with a ready endpoint of it."""
    return service.external_traffic_local


def advertised_by_every_node(service: ServiceInfo, config: BGPConfiguration) -> bool:
    """A Cluster-policy Service whose external IP or published load-balancer address is a
    single-address entry of the configuration: no range covers it, every node advertises it."""
    if service.external_traffic_local:
        return False
    if any(_single(ip, config.service_external_ips) for ip in service.external_ips):
        return True
    return service.type == "LoadBalancer" and any(
        _single(ip, config.service_load_balancer_ips) for ip in service.load_balancer_ips)


def ready_services_on(slices: Mapping[tuple[str, str], EndpointSliceInfo], node: str) -> frozenset[tuple[str, str]]:
    """(namespace, Service name) of every Service with a ready endpoint on ``node``."""
    return frozenset((s.namespace, s.service) for s in slices.values()
                     if s.service is not None and s.ready_on(node) > 0)


def service_advertisement(snapshot: Snapshot, node_name: str) -> ServiceAdvertisement:
    """What ``node_name`` originates for Services (see the module docstring)."""
    if excluded(snapshot.nodes.get(node_name)):
        return ServiceAdvertisement()
    config = snapshot.bgp_configuration
    ranges = advertised_ranges(config)
    if not (config.service_cluster_ips or config.service_external_ips or config.service_load_balancer_ips):
        return ServiceAdvertisement(ranges)
    local = ready_services_on(snapshot.endpoint_slices, node_name)
    wanted: dict[IPv4Network, list[tuple[str, str]]] = defaultdict(list)
    for key, service in snapshot.services.items():
        if service.type not in ADVERTISED_TYPES or not service.cluster_ips:
            continue
        if needs_local_endpoints(service):
            if key not in local:
                continue
        elif not advertised_by_every_node(service, config):
            continue
        for address in service_addresses(service, config):
            wanted[IPv4Network(address)].append(key)
    return ServiceAdvertisement(ranges, {prefix: tuple(sorted(keys)) for prefix, keys in wanted.items()})


def service_prefixes(snapshot: Snapshot, node_name: str) -> frozenset[IPv4Network]:
    """The service prefixes ``node_name`` originates: ranges and /32s together."""
    return service_advertisement(snapshot, node_name).prefixes
