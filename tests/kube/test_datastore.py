"""The Datastore against a real kube-apiserver: snapshots of every kind, change notification,
incremental parsing, invalid objects reported once with their last valid version kept, outages,
and many concurrent updates."""
from __future__ import annotations

import base64
import ipaddress
import threading
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from calyx import model
from calyx.kube import resources
from calyx.kube.datastore import CONFLICT_REASON, INVALID_REASON, Datastore
from calyx.kube.events import EventRecorder
from calyx.kube.reflector import Backoff, WatchSpec
from kube_helpers import create_node, create_pod, ensure_namespace, wait_until

ALL_SPECS = [WatchSpec(resources.NODES), WatchSpec(resources.PODS, field_selector="spec.nodeName=node-a"),
             WatchSpec(resources.IPPOOLS), WatchSpec(resources.BGPCONFIGURATIONS),
             WatchSpec(resources.BGPPEERS), WatchSpec(resources.IPAMBLOCKS), WatchSpec(resources.SECRETS)]


def fast_backoff() -> Backoff:
    return Backoff(base=0.05, cap=0.4)


def pool(name: str, cidr: str, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}}


def errors(registry: CollectorRegistry, resource) -> float:
    return registry.get_sample_value("calyx_datastore_errors_total", {"resource": str(resource)}) or 0.0


def seed(api) -> None:
    create_node(api, {
        "metadata": {"name": "node-a", "labels": {"rack": "r1"},
                     "annotations": {model.ANNOTATION_IPV4_ADDRESS: "192.0.2.10/24"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}})
    create_pod(api, {
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "registry.example/web:1"}]}})
    create_pod(api, {
        "metadata": {"name": "elsewhere", "namespace": "default"},
        "spec": {"nodeName": "node-b", "containers": [{"name": "c", "image": "registry.example/web:1"}]}})
    resources.create_object(api, resources.IPPOOLS, pool("default-pool", "10.244.0.0/16", ipipMode="Always"))
    resources.create_object(api, resources.BGPCONFIGURATIONS, {
        "metadata": {"name": "default"}, "spec": {"asNumber": 64600, "nodeToNodeMeshEnabled": False}})
    resources.create_object(api, resources.BGPPEERS, {
        "metadata": {"name": "tor"}, "spec": {"peerIP": "192.0.2.1", "asNumber": 64700}})
    resources.create_object(api, resources.IPAMBLOCKS, {
        "metadata": {"name": "10-244-1-0-26"}, "spec": {"cidr": "10.244.1.0/26", "affinity": "host:node-a"}})
    resources.create_object(api, resources.SECRETS, {
        "metadata": {"name": "bgp-secrets", "namespace": "calyx-system"},
        "data": {"tor": base64.b64encode(b"very secret").decode()}}, namespace=None)


def test_snapshot_of_every_kind_and_change_notification(kube):
    api = kube.client()
    ensure_namespace(api, "calyx-system")
    seed(api)
    with Datastore(api, ALL_SPECS, namespace="calyx-system", backoff=fast_backoff) as ds:
        assert ds.wait_synced(20) and ds.synced and ds.readiness().ok
        assert ds.wait_for_change(0)                      # the first lists are a change
        snap = ds.snapshot()
        assert not ds.wait_for_change(0.2)                # nothing since
        assert snap.nodes["node-a"].bgp_address == ipaddress.IPv4Interface("192.0.2.10/24")
        assert set(snap.pods) == {("default", "web-1")}   # field selector: only node-a's pods
        assert snap.ippools["default-pool"].ipip_mode is model.EncapMode.ALWAYS
        assert snap.bgp_configuration.as_number == 64600 and not snap.bgp_configuration.node_to_node_mesh_enabled
        assert snap.bgp_peers["tor"].peer_ip == ipaddress.IPv4Address("192.0.2.1")
        assert snap.blocks["10-244-1-0-26"].node == "node-a"
        assert snap.secrets[("calyx-system", "bgp-secrets")] == {"tor": "very secret"}

        resources.delete_object(api, resources.BGPCONFIGURATIONS, "default")
        assert ds.wait_for_change(20)
        wait_until(lambda: ds.snapshot().bgp_configuration == model.BGPConfiguration(),
                   what="defaults once BGPConfiguration default is gone")


def test_only_changed_objects_are_parsed_again(kube):
    api = kube.client()
    for i in range(5):
        resources.create_object(api, resources.IPPOOLS, pool(f"p{i}", f"10.{i}.0.0/16"))
    with Datastore(api, [WatchSpec(resources.IPPOOLS)], backoff=fast_backoff) as ds:
        assert ds.wait_synced(20)
        first = ds.snapshot()
        resources.patch_object(api, resources.IPPOOLS, "p3", {"spec": {"natOutgoing": True}})
        assert ds.wait_for_change(20)
        second = ds.snapshot()
        assert second.ippools["p3"].nat_outgoing and second.ippools["p3"] is not first.ippools["p3"]
        for name in ("p0", "p1", "p2", "p4"):
            assert second.ippools[name] is first.ippools[name]   # reused, not re-parsed
        assert first.ippools is not second.ippools and not first.ippools["p3"].nat_outgoing


def invalid_events(api) -> list[dict]:
    return [e for e in resources.list_objects(api, resources.EVENTS, namespace="default").items
            if e.get("reason") == INVALID_REASON]


def test_invalid_update_is_reported_once_and_the_last_valid_version_kept(kube):
    # The API server admits only what the CRD's schema and CEL rules allow (ipipMode and
    # vxlanMode both enabled is refused at admission), so the invalid objects are ones the CRD
    # admits and the model refuses: a pool CIDR with host bits set.
    api = kube.client()
    resources.create_object(api, resources.IPPOOLS, pool("prod", "10.244.0.0/16"))
    resources.create_object(api, resources.IPPOOLS, pool("born-bad", "10.250.0.1/16"))
    recorder = EventRecorder(api, component="felix", host="node-a")
    registry = CollectorRegistry()
    with Datastore(api, [WatchSpec(resources.IPPOOLS)], events=recorder, registry=registry,
                   backoff=fast_backoff) as ds:
        assert ds.wait_synced(20)
        snap = ds.snapshot()
        assert set(snap.ippools) == {"prod"}                           # invalid from the start: absent
        resources.patch_object(api, resources.IPPOOLS, "prod",
                               {"spec": {"cidr": "10.244.0.1/16", "natOutgoing": True}})
        assert ds.wait_for_change(20)
        for _ in range(3):                                             # repeated snapshots: one report
            snap = ds.snapshot()
            assert snap.ippools["prod"].cidr == ipaddress.IPv4Network("10.244.0.0/16")
            assert not snap.ippools["prod"].nat_outgoing               # last valid version kept
        assert recorder.flush(10)
        events = invalid_events(api)
        by_name = {e["involvedObject"]["name"]: e for e in events}
        assert set(by_name) == {"prod", "born-bad"} and len(events) == 2
        prod = by_name["prod"]
        assert prod["type"] == "Warning" and prod["count"] == 1
        assert prod["involvedObject"]["kind"] == "IPPool"
        assert "spec.cidr" in prod["message"] and "'10.244.0.1/16'" in prod["message"]
        assert "host bits are set" in prod["message"]
        assert "last valid version stays in use" in prod["message"]
        assert "ignored" in by_name["born-bad"]["message"]
        assert registry.get_sample_value("calyx_datastore_invalid_objects_total",
                                         {"resource": "ippools.calyx.dev"}) == 2

        resources.patch_object(api, resources.IPPOOLS, "prod", {"spec": {"cidr": "10.244.0.0/16"}})
        wait_until(lambda: ds.wait_for_change(1) and ds.snapshot().ippools["prod"].nat_outgoing,
                   what="the fixed pool to take effect")
        resources.delete_object(api, resources.IPPOOLS, "prod")
        wait_until(lambda: ds.wait_for_change(1) and "prod" not in ds.snapshot().ippools, what="deletion")
    recorder.close()


def conflict_events(api) -> dict[str, list[dict]]:
    by_name: dict[str, list[dict]] = {}
    for e in resources.list_objects(api, resources.EVENTS, namespace="default").items:
        if e.get("reason") == CONFLICT_REASON:
            by_name.setdefault(e["involvedObject"]["name"], []).append(e)
    return by_name


def test_overlapping_pools_are_refused_reported_and_the_older_one_kept(kube):
    api = kube.client()
    seed(api)          # node-a on 192.0.2.0/24; pool default-pool 10.244.0.0/16
    resources.patch_object(api, resources.BGPCONFIGURATIONS, "default",
                           {"spec": {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}})
    wait_until(lambda: resources.list_objects(api, resources.IPPOOLS).items, what="the first pool")
    for name, cidr in (("late", "10.244.64.0/18"), ("services", "10.100.0.0/16"), ("lan", "192.0.2.0/25"),
                       ("fine", "10.250.0.0/16")):
        resources.create_object(api, resources.IPPOOLS, pool(name, cidr))
    recorder = EventRecorder(api, component="bgpd", host="node-a")
    with Datastore(api, ALL_SPECS, events=recorder, namespace="calyx-system", backoff=fast_backoff) as ds:
        assert ds.wait_synced(20)
        for _ in range(3):                                      # repeated snapshots: one report each
            snap = ds.snapshot()
            assert set(snap.ippools) == {"default-pool", "fine"}
        assert recorder.flush(10)
        events = conflict_events(api)
        assert sorted(events) == ["lan", "late", "services"] and all(len(e) == 1 for e in events.values())
        late = events["late"][0]
        assert late["type"] == "Warning" and late["involvedObject"]["kind"] == "IPPool"
        assert late["message"] == ("IPPool 'late': spec.cidr: '10.244.64.0/18': overlaps IPPool 'default-pool' "
                                   "(10.244.0.0/16), which was created earlier; the pool is not used for "
                                   "allocation or routing")
        assert "overlaps the Service CIDR 10.96.0.0/12" in events["services"][0]["message"]
        assert "overlaps the network 192.0.2.0/24 of Node 'node-a'" in events["lan"][0]["message"]

        # the older pool goes: the later one is used from then on
        resources.delete_object(api, resources.IPPOOLS, "default-pool")
        wait_until(lambda: ds.wait_for_change(1) and "late" in ds.snapshot().ippools,
                   what="the later pool to be used once the older is gone")
        assert set(ds.snapshot().ippools) == {"late", "fine"}
    recorder.close()


def test_outage_keeps_the_snapshot_and_the_restarted_server_converges_it(kube):
    api = kube.client()
    resources.create_object(api, resources.IPPOOLS, pool("old", "10.1.0.0/16"))
    create_node(api, {"metadata": {"name": "node-a"}})
    specs = [WatchSpec(resources.IPPOOLS), WatchSpec(resources.NODES)]
    registry = CollectorRegistry()
    with Datastore(api, specs, registry=registry, backoff=fast_backoff) as ds:
        assert ds.wait_synced(20)
        before = ds.snapshot()
        kube.stop_api()                                    # etcd keeps the data
        wait_until(lambda: errors(registry, resources.IPPOOLS) >= 2 and errors(registry, resources.NODES) >= 2,
                   what="failed attempts of both reflectors while the API is down")
        assert not ds.wait_for_change(1.0)                 # an outage is not a change
        during = ds.snapshot()
        assert during.ippools == before.ippools and during.nodes == before.nodes
        assert ds.readiness().ok                           # listed once: serves its cache meanwhile
        kube.restart_api()
        resources.delete_object(api, resources.IPPOOLS, "old")
        resources.create_object(api, resources.IPPOOLS, pool("new", "10.2.0.0/16"))
        create_node(api, {"metadata": {"name": "node-b"}})
        wait_until(lambda: ds.wait_for_change(1) and set(ds.snapshot().ippools) == {"new"}
                   and set(ds.snapshot().nodes) == {"node-a", "node-b"}, what="convergence")
        assert ds.synced


def test_not_ready_until_the_api_answers_for_the_first_time(kube):
    api = kube.client()
    kube.stop_api()
    registry = CollectorRegistry()
    with Datastore(api, [WatchSpec(resources.IPPOOLS)], registry=registry, backoff=fast_backoff) as ds:
        assert not ds.wait_synced(1.0)
        check = ds.readiness()
        assert not check.ok and "ippools.calyx.dev" in check.reason
        assert errors(registry, resources.IPPOOLS) >= 1
        kube.restart_api()
        resources.create_object(api, resources.IPPOOLS, pool("p", "10.1.0.0/16"))
        assert ds.wait_synced(20)
        assert ds.readiness().ok
        wait_until(lambda: "p" in ds.snapshot().ippools, what="first pool")


def test_a_thousand_concurrent_updates_all_arrive(kube):
    api = kube.client()
    count = 1000
    with Datastore(api, [WatchSpec(resources.NODES)], backoff=fast_backoff) as ds:
        assert ds.wait_synced(20)
        local = threading.local()

        def client():
            if not hasattr(local, "api"):
                local.api = kube.client()
            return local.api

        def create(i: int) -> None:
            resources.create_object(client(), resources.NODES,
                                    {"metadata": {"name": f"n{i:04d}", "labels": {"gen": "1"}}})

        def relabel(i: int) -> None:
            resources.patch_object(client(), resources.NODES, f"n{i:04d}",
                                   {"metadata": {"labels": {"gen": "2", "index": str(i)}}})

        with ThreadPoolExecutor(max_workers=8) as pool_:
            list(pool_.map(create, range(count)))
            list(pool_.map(relabel, range(count)))

        def converged() -> bool:
            ds.wait_for_change(0.5)
            nodes = ds.snapshot().nodes
            return len(nodes) == count and all(n.labels.get("gen") == "2" for n in nodes.values())

        wait_until(converged, timeout=60, what=f"{count} nodes relabelled")
        nodes = ds.snapshot().nodes
        assert all(nodes[f"n{i:04d}"].labels["index"] == str(i) for i in range(count))


def test_stop_ends_every_reflector_promptly(kube):
    api = kube.client()
    ds = Datastore(api, ALL_SPECS[:4], watch_timeout=300, backoff=fast_backoff)
    ds.start()
    assert ds.wait_synced(20)
    ds.stop(timeout=10)
    alive = [t.name for t in threading.enumerate() if t.name.startswith("reflector-")]
    assert alive == []
