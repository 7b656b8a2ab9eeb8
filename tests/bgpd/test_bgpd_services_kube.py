"""Service advertisement from real Services and EndpointSlices: bgpd's datastore
(``bgpd.daemon.watch_specs``) against a real kube-apiserver, and what each node originates
(:func:`bgpd.services.service_advertisement`) as the objects change: an endpoint moving from
one node to another, a load-balancer address published through the status subresource, the
Service deleted. Proven end to end with BIRD in tests/bgpd/test_bgpd_daemon.py."""
from __future__ import annotations

import time
import uuid
from ipaddress import IPv4Network

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from bgpd import daemon as bgpd_daemon
from bgpd.services import service_advertisement
from calyx import model
from calyx.kube import resources
from calyx.kube.datastore import Datastore
from calyx.kube.reflector import Backoff

from bgpdtest_support import wait_for

CONFIG = {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}], "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}],
          "serviceLoadBalancerIPs": [{"cidr": "203.0.113.0/24"}]}


def endpoint_slice(namespace: str, name: str, service: str, node: str, ready: bool = True) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": namespace, "labels": {model.LABEL_SERVICE_NAME: service}},
            "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": node, "conditions": {"ready": ready}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def addresses(ds: Datastore, node: str) -> set[str]:
    ds.wait_for_change(0.2)
    return {str(p) for p in service_advertisement(ds.snapshot(), node).addresses}


def test_service_addresses_follow_the_ready_endpoints_and_the_published_lb_address(kube) -> None:
    api = kube.client()
    core = kubernetes.client.CoreV1Api(api)
    namespace = f"svc-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        for node in ("node1", "node2"):
            resources.create_object(api, resources.NODES, {"metadata": {"name": node}})
        resources.create_object(api, resources.BGPCONFIGURATIONS, {"metadata": {"name": "default"}, "spec": CONFIG})
        created = resources.create_object(api, resources.SERVICES, {
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "externalIPs": ["192.0.2.10", "198.51.100.10"],   # the second outside serviceExternalIPs
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        cluster_ip = created["spec"]["clusterIP"]
        resources.create_object(api, resources.ENDPOINTSLICES, endpoint_slice(namespace, "web-1", "web", "node1"))
        with Datastore(api, bgpd_daemon.watch_specs(), backoff=lambda: Backoff(base=0.05, cap=0.4)) as ds:
            assert ds.wait_synced(30)
            want = {f"{cluster_ip}/32", "192.0.2.10/32"}
            wait_for(lambda: addresses(ds, "node1") == want, what="node1 advertises the Service")
            assert addresses(ds, "node2") == set()
            snap = ds.snapshot()
            raw = ds.raw(resources.ENDPOINTSLICES)[(namespace, "web-1")]
            assert raw["endpoints"] == [{"nodeName": "node1"}]     # cut down: node, ready by default
            assert snap.services[(namespace, "web")].external_traffic_local

            # The endpoint moves to node2: node1 withdraws, node2 advertises.
            started = time.monotonic()
            resources.patch_object(api, resources.ENDPOINTSLICES, "web-1",
                                   {"endpoints": [{"addresses": ["10.244.2.5"], "nodeName": "node2",
                                                   "conditions": {"ready": True}}]}, namespace)
            wait_for(lambda: addresses(ds, "node1") == set() and addresses(ds, "node2") == want,
                     what="the advertisement moves to node2")
            print(f"endpoint moved: advertisement recalculated {time.monotonic() - started:.3f} s after the update")

            # Not ready any more: nobody advertises it.
            resources.patch_object(api, resources.ENDPOINTSLICES, "web-1",
                                   {"endpoints": [{"addresses": ["10.244.2.5"], "nodeName": "node2",
                                                   "conditions": {"ready": False}}]}, namespace)
            wait_for(lambda: addresses(ds, "node2") == set(), what="node2 withdraws the not-ready endpoint")
            resources.patch_object(api, resources.ENDPOINTSLICES, "web-1",
                                   {"endpoints": [{"addresses": ["10.244.2.5"], "nodeName": "node2",
                                                   "conditions": {"ready": True}}]}, namespace)
            wait_for(lambda: addresses(ds, "node2") == want, what="ready again")

            # A load-balancer address counts once published in status (the status subresource),
            # and only inside serviceLoadBalancerIPs.
            core.patch_namespaced_service_status("web", namespace, {"status": {"loadBalancer": {
                "ingress": [{"ip": "203.0.113.7"}, {"ip": "198.51.100.77"}]}}})
            wait_for(lambda: addresses(ds, "node2") == want | {"203.0.113.7/32"},
                     what="the published LB address is advertised")

            # The Service goes: every /32 of it is withdrawn, the ranges stay.
            core.delete_namespaced_service("web", namespace)
            wait_for(lambda: addresses(ds, "node2") == set(), what="the deleted Service's /32s withdrawn")
            assert service_advertisement(ds.snapshot(), "node2").ranges == {
                IPv4Network("10.96.0.0/12"), IPv4Network("192.0.2.0/24"), IPv4Network("203.0.113.0/24")}
    finally:
        try:
            core.delete_namespace(namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        api.close()
