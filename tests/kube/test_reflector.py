"""Reflectors against a real kube-apiserver: list then watch, resume without relisting, 410 Gone
relist with the right difference, bookmarks, selectors, outages, clean stop."""
from __future__ import annotations

import threading
import time

import kubernetes.client
import pytest

from prometheus_client import CollectorRegistry

from calyx.kube import resources
from calyx.kube.reflector import ADDED, DELETED, MODIFIED, Backoff, Cache, Change, Reflector, ReflectorMetrics, WatchSpec

from kube_helpers import create_pod, wait_until, wait_watch_served

# kube-apiserver sends a watcher a BOOKMARK about once a minute and 2 s before the watch's
# timeoutSeconds runs out. The reflector asks for bookmarks and a timeout of watch_timeout
# (jittered up by at most 20 %); with 5 s every watch brings one 3-4 s after it opens.
BOOKMARK_WATCH_TIMEOUT = 5


def pool(name: str, cidr: str, **spec) -> dict:
    return {"metadata": {"name": name, "labels": spec.pop("labels", {})}, "spec": {"cidr": cidr, **spec}}


def metric(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def make_reflector(api, spec: WatchSpec, registry: CollectorRegistry, on_change=None, **kwargs) -> Reflector:
    return Reflector(api, spec, Cache(on_change=on_change), ReflectorMetrics(registry), **kwargs)


def names(cache: Cache) -> set[str]:
    return {key[1] for key in cache.items()}


def test_lists_then_watches_adds_modifications_and_deletes(kube):
    api = kube.client()
    resources.create_object(api, resources.IPPOOLS, pool("a", "10.1.0.0/16"))
    resources.create_object(api, resources.IPPOOLS, pool("b", "10.2.0.0/16"))
    registry = CollectorRegistry()
    reflector = make_reflector(api, WatchSpec(resources.IPPOOLS), registry)
    reflector.start()
    try:
        assert reflector.wait_synced(20)
        assert names(reflector.cache) == {"a", "b"}
        resources.create_object(api, resources.IPPOOLS, pool("c", "10.3.0.0/16"))
        resources.patch_object(api, resources.IPPOOLS, "a", {"spec": {"ipipMode": "Always"}})
        resources.delete_object(api, resources.IPPOOLS, "b")
        wait_until(lambda: names(reflector.cache) == {"a", "c"}, what="c added and b deleted")
        wait_until(lambda: reflector.cache.get(("", "a"))["spec"]["ipipMode"] == "Always", what="a modified")
        label = "ippools.calyx.dev"
        assert metric(registry, "calyx_datastore_events_total", resource=label, type="ADDED") == 1
        assert metric(registry, "calyx_datastore_events_total", resource=label, type="MODIFIED") == 1
        assert metric(registry, "calyx_datastore_events_total", resource=label, type="DELETED") == 1
        assert metric(registry, "calyx_datastore_synced", resource=label) == 1
        assert metric(registry, "calyx_datastore_objects", resource=label) == 2
    finally:
        reflector.stop()
    assert not reflector.alive


def test_cached_objects_are_kept_without_the_servers_bookkeeping(kube):
    """The server gives every object managedFields (and kubectl its last-applied copy); the
    cache keeps neither, whether the object came by the list or by the watch."""
    api = kube.client()
    applied = {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}
    listed = pool("listed", "10.4.0.0/16")
    listed["metadata"]["annotations"] = dict(applied)
    resources.create_object(api, resources.IPPOOLS, listed)
    assert resources.get_object(api, resources.IPPOOLS, "listed")["metadata"]["managedFields"]
    reflector = make_reflector(api, WatchSpec(resources.IPPOOLS), CollectorRegistry())
    reflector.start()
    try:
        assert reflector.wait_synced(20)
        watched = pool("watched", "10.5.0.0/16")
        watched["metadata"]["annotations"] = dict(applied)
        resources.create_object(api, resources.IPPOOLS, watched)
        wait_until(lambda: names(reflector.cache) == {"listed", "watched"}, what="watched added")
        for name in ("listed", "watched"):
            meta = reflector.cache.get(("", name))["metadata"]
            assert "managedFields" not in meta and meta["annotations"] == {"keep": "me"}
            assert meta["resourceVersion"] and meta["uid"]
    finally:
        reflector.stop()


def test_resumes_from_resource_version_after_watch_timeout_without_relisting(kube):
    api = kube.client()
    registry = CollectorRegistry()
    reflector = make_reflector(api, WatchSpec(resources.IPPOOLS), registry, watch_timeout=1)
    reflector.start()
    try:
        assert reflector.wait_synced(20)
        label = "ippools.calyx.dev"
        wait_until(lambda: metric(registry, "calyx_datastore_watch_restarts_total", resource=label) >= 2,
                   what="two watch timeouts")
        resources.create_object(api, resources.IPPOOLS, pool("late", "10.9.0.0/16"))
        wait_until(lambda: names(reflector.cache) == {"late"}, what="event after resumed watches")
        assert metric(registry, "calyx_datastore_relists_total", resource=label) == 0
        assert metric(registry, "calyx_datastore_errors_total", resource=label) == 0
        assert reflector.resource_version == reflector.cache.get(("", "late"))["metadata"]["resourceVersion"]
    finally:
        reflector.stop()


@pytest.mark.fault
def test_gone_relists_and_emits_deleted_modified_added_difference(kube, fault_record):
    api = kube.client()
    for name, cidr in (("keep", "10.1.0.0/16"), ("change", "10.2.0.0/16"), ("remove", "10.3.0.0/16")):
        resources.create_object(api, resources.IPPOOLS, pool(name, cidr))
    changes: list[Change] = []
    first_list_seen, release = threading.Event(), threading.Event()

    def on_change(batch: list[Change]) -> None:
        changes.extend(batch)
        if not first_list_seen.is_set():       # hold the reflector between its list and its watch
            first_list_seen.set()
            release.wait(60)

    registry = CollectorRegistry()
    reflector = make_reflector(api, WatchSpec(resources.IPPOOLS), registry, on_change=on_change)
    reflector.start()
    try:
        assert first_list_seen.wait(20)
        listed_at = max(int(o["metadata"]["resourceVersion"]) for o in reflector.cache.items().values())
        # While the reflector is away, changes happen, then kube-apiserver restarts. Its new watch
        # cache starts at etcd's current revision, so a watch from the resourceVersion listed
        # before is too old for it: an ERROR event with a 410 Gone Status.
        resources.delete_object(api, resources.IPPOOLS, "remove")
        resources.patch_object(api, resources.IPPOOLS, "change", {"spec": {"natOutgoing": True}})
        resources.create_object(api, resources.IPPOOLS, pool("new", "10.4.0.0/16"))
        resources.patch_object(api, resources.IPPOOLS, "new", {"spec": {"disabled": True}})
        with fault_record.case("a watch from a resourceVersion older than the API's history (410 Gone)",
                               "relist; only the difference reaches the caller") as case:
            kube.stop_api()
            kube.restart_api()
            wait_watch_served(api, resources.IPPOOLS)   # a 429 while the cache fills would be an error
            changes.clear()
            released = time.monotonic()
            release.set()
            label = "ippools.calyx.dev"
            wait_until(lambda: metric(registry, "calyx_datastore_relists_total", resource=label) == 1,
                       what="a relist after 410 Gone")
            case.recovery_s = time.monotonic() - released
            assert sorted((c.type, c.key[1]) for c in changes) == [
                (ADDED, "new"), (DELETED, "remove"), (MODIFIED, "change")]
            assert names(reflector.cache) == {"keep", "change", "new"}
            assert reflector.cache.get(("", "change"))["spec"]["natOutgoing"] is True
            assert reflector.cache.get(("", "new"))["spec"]["disabled"] is True
            assert int(reflector.resource_version) > listed_at
            assert metric(registry, "calyx_datastore_events_total", resource=label, type="ERROR") == 1
            assert metric(registry, "calyx_datastore_errors_total", resource=label) == 0
    finally:
        release.set()
        reflector.stop()


def test_bookmarks_advance_the_resource_version(kube):
    # A watch cache's resourceVersion moves with the writes to its own resource (writes to other
    # kinds reach it only through etcd's progress notifications). Writes the reflector's label
    # selector excludes move it without a single event for this watch: only bookmarks tell.
    api = kube.client()
    resources.create_object(api, resources.IPPOOLS, pool("only", "10.1.0.0/16", labels={"watched": "yes"}))
    registry = CollectorRegistry()
    reflector = make_reflector(api, WatchSpec(resources.IPPOOLS, label_selector="watched=yes"), registry,
                               watch_timeout=BOOKMARK_WATCH_TIMEOUT)
    reflector.start()
    try:
        assert reflector.wait_synced(20)
        listed_at = int(reflector.resource_version)
        written = [resources.create_object(api, resources.IPPOOLS, pool(f"unwatched-{i}", f"10.{20 + i}.0.0/16"))
                   for i in range(3)]
        last = int(written[-1]["metadata"]["resourceVersion"])
        assert last > listed_at
        wait_until(lambda: int(reflector.resource_version) >= last, timeout=30,
                   what="a bookmark carrying the last unwatched write's resourceVersion")
        label = "ippools.calyx.dev"
        assert metric(registry, "calyx_datastore_events_total", resource=label, type="BOOKMARK") >= 1
        for event_type in (ADDED, MODIFIED, DELETED, "ERROR"):
            assert metric(registry, "calyx_datastore_events_total", resource=label, type=event_type) == 0
        assert metric(registry, "calyx_datastore_relists_total", resource=label) == 0
        assert names(reflector.cache) == {"only"}
    finally:
        reflector.stop()


def _pod(name: str, node: str, labels: dict[str, str]) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.example/app:1"}]}}


def test_label_and_field_selectors_limit_the_cache(kube):
    api = kube.client()
    create_pod(api, _pod("a-web", "node-a", {"app": "web"}))
    create_pod(api, _pod("a-db", "node-a", {"app": "db"}))
    create_pod(api, _pod("b-web", "node-b", {"app": "web"}))
    spec = WatchSpec(resources.PODS, field_selector="spec.nodeName=node-a", label_selector="app=web")
    reflector = make_reflector(api, spec, CollectorRegistry())
    reflector.start()
    try:
        assert reflector.wait_synced(20)
        assert set(reflector.cache.items()) == {("default", "a-web")}
        create_pod(api, _pod("a-web-2", "node-a", {"app": "web"}))
        create_pod(api, _pod("b-web-2", "node-b", {"app": "web"}))
        resources.patch_object(api, resources.PODS, "a-db", {"metadata": {"labels": {"app": "web"}}}, "default")
        resources.patch_object(api, resources.PODS, "a-web", {"metadata": {"labels": {"app": "cache"}}}, "default")
        wait_until(lambda: set(reflector.cache.items()) == {("default", "a-web-2"), ("default", "a-db")},
                   what="selected pods only")
    finally:
        reflector.stop()


def test_api_outage_keeps_cache_retries_with_backoff_and_relists_from_the_restarted_server(kube):
    api = kube.client()
    for name, cidr in (("stays", "10.1.0.0/16"), ("goes", "10.2.0.0/16")):
        resources.create_object(api, resources.IPPOOLS, pool(name, cidr))
    registry = CollectorRegistry()
    reflector = make_reflector(api, WatchSpec(resources.IPPOOLS), registry,
                               backoff=Backoff(base=0.05, cap=0.4))
    reflector.start()
    try:
        assert reflector.wait_synced(20)
        before = reflector.cache.items()
        kube.stop_api()                                    # etcd keeps the data
        label = "ippools.calyx.dev"
        wait_until(lambda: metric(registry, "calyx_datastore_errors_total", resource=label) >= 3,
                   what="repeated failed attempts while the API is down")
        assert reflector.cache.items() == before          # nothing lost while unreachable
        assert metric(registry, "calyx_datastore_synced", resource=label) == 1
        kube.restart_api()
        resources.patch_object(api, resources.IPPOOLS, "stays", {"spec": {"ipipMode": "Always"}})
        resources.delete_object(api, resources.IPPOOLS, "goes")
        resources.create_object(api, resources.IPPOOLS, pool("arrives", "10.3.0.0/16"))
        wait_until(lambda: names(reflector.cache) == {"stays", "arrives"},
                   what="convergence on the restarted server")
        wait_until(lambda: reflector.cache.get(("", "stays"))["spec"]["ipipMode"] == "Always",
                   what="the changed pool")
        assert metric(registry, "calyx_datastore_relists_total", resource=label) >= 1
    finally:
        reflector.stop()


def test_stop_is_prompt_during_a_long_watch(kube):
    api = kube.client()
    reflector = make_reflector(api, WatchSpec(resources.NODES), CollectorRegistry(), watch_timeout=300)
    reflector.start()
    assert reflector.wait_synced(20)
    wait_until(lambda: reflector._response is not None, what="the watch to be open")
    reflector.stop(timeout=10)
    assert not reflector.alive


def test_lists_in_pages_and_keeps_each_object_in_the_callers_form(kube):
    """A list reads the collection in pages (limit/continue): every object arrives once, cut down
    by ``each`` as its page comes, and the list's resourceVersion starts the watch."""
    api = kube.client()
    for i in range(7):
        resources.create_object(api, resources.IPPOOLS, pool(f"paged-{i}", f"10.{40 + i}.0.0/16"))
    first = resources.list_objects(api, resources.IPPOOLS, page_size=3)
    seen: list[str] = []

    def cut(obj: dict) -> dict:
        seen.append(obj["metadata"]["name"])
        return {"kind": obj["kind"], "metadata": {"name": obj["metadata"]["name"]}}

    paged = resources.list_objects(api, resources.IPPOOLS, page_size=3, each=cut)
    assert sorted(seen) == [f"paged-{i}" for i in range(7)]
    assert [o["metadata"]["name"] for o in paged.items] == [o["metadata"]["name"] for o in first.items]
    assert all(set(o) == {"kind", "metadata"} for o in paged.items) and paged.resource_version
    # The server really pages: a list of 3 leaves a continue token.
    raw = kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object("calyx.dev", "v1", "ippools", limit=3)
    assert raw["metadata"].get("continue")
    # A reflector keeping a cut-down form caches that form, and watches on from the list.
    reflector = make_reflector(api, WatchSpec(resources.IPPOOLS), CollectorRegistry(), keep=cut)
    reflector.start()
    try:
        assert reflector.wait_synced(20)
        assert reflector.cache.get(("", "paged-0")) == {"kind": "IPPool", "metadata": {"name": "paged-0"}}
        resources.create_object(api, resources.IPPOOLS, pool("paged-late", "10.60.0.0/16"))
        wait_until(lambda: reflector.cache.get(("", "paged-late")) == {"kind": "IPPool", "metadata": {"name": "paged-late"}},
                   what="the watched object in the cut-down form")
    finally:
        reflector.stop()
