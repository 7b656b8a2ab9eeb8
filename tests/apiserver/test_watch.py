"""Watches through kubernetes.watch.Watch: replay from a resourceVersion, 410 Gone and relist,
bookmarks, timeoutSeconds, selectors with enter/leave events, and ordered delivery under load."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from apitest_support import ippool, pod
from apitest_support import start_server


class Collector:
    """Runs a watch on a thread and keeps (type, name, resourceVersion) of every event."""

    def __init__(self, func: Callable[..., Any], *args: Any, stop_after: int | None = None, **kwargs: Any):
        self.events: list[tuple[str, str, str]] = []
        self.error: BaseException | None = None
        self._watch = watch.Watch()
        self._stop_after = stop_after
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        try:
            for event in self._watch.stream(func, *args, **kwargs):
                raw = event["raw_object"]
                self.events.append((event["type"], raw["metadata"].get("name", ""),
                                    raw["metadata"]["resourceVersion"]))
                if self._stop_after is not None and len(self.events) >= self._stop_after:
                    self._watch.stop()
        except BaseException as exc:      # reported to the test through .error
            self.error = exc

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[str, str, str]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        return list(self.events)

    def join(self, timeout: float = 30.0) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._watch.stop()


def names(events: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name, _ in events]


def test_watch_without_version_starts_with_added_then_follows(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("a"))
    core.create_namespaced_pod("default", pod("b"))
    collector = Collector(core.list_namespaced_pod, "default", timeout_seconds=20, stop_after=5)
    assert names(collector.wait_for(2)) == [("ADDED", "a"), ("ADDED", "b")]
    core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_pod("b", "default")
    core.create_namespaced_pod("default", pod("c"))
    assert collector.join()
    assert collector.error is None
    assert names(collector.events) == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b"),
                                       ("ADDED", "c")]
    versions = [int(rv) for _, _, rv in collector.events[2:]]
    assert versions == sorted(versions) and len(set(versions)) == 3


def test_watch_from_resource_version_replays_only_later_events(core: client.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "early"}})
    rv = core.list_node().metadata.resource_version
    core.create_node({"metadata": {"name": "late"}})
    core.patch_node("early", {"metadata": {"labels": {"a": "b"}}})
    core.delete_node("late")
    events = list(watch.Watch().stream(core.list_node, resource_version=rv, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "late"), ("MODIFIED", "early"), ("DELETED", "late")]


def test_expired_resource_version_gives_410_and_relist_recovers(tmp_path: Path) -> None:
    server, api = start_server(tmp_path, history=3)
    try:
        core = client.CoreV1Api(api)
        core.create_node({"metadata": {"name": "n0"}})
        stale = core.list_node().metadata.resource_version
        for i in range(1, 6):
            core.create_node({"metadata": {"name": f"n{i}"}})
        with pytest.raises(ApiException) as err:
            list(watch.Watch().stream(core.list_node, resource_version=stale, timeout_seconds=1))
        assert err.value.status == 410
        with pytest.raises(ApiException) as err:
            core.list_node(resource_version=stale, resource_version_match="Exact")
        assert err.value.status == 410
        fresh = core.list_node()
        assert len(fresh.items) == 6
        core.delete_node("n3")
        events = list(watch.Watch().stream(core.list_node, resource_version=fresh.metadata.resource_version,
                                           timeout_seconds=1))
        assert [(e["type"], e["object"].metadata.name) for e in events] == [("DELETED", "n3")]
    finally:
        api.close()
        server.stop()


def test_bookmarks_carry_the_current_resource_version(core: client.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "n1"}})
    rv = core.list_node().metadata.resource_version
    core.create_namespaced_pod("default", pod("unrelated"))    # another kind moves the global version
    current = core.list_namespaced_pod("default").metadata.resource_version
    w = watch.Watch()
    events = list(w.stream(core.list_node, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=4))
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, "no BOOKMARK within 4 s at a 0.5 s interval"
    assert all(e["raw_object"]["metadata"]["resourceVersion"] == current for e in bookmarks)
    assert w.resource_version == current
    plain = list(watch.Watch().stream(core.list_node, resource_version=rv, timeout_seconds=1))
    assert plain == []


def test_timeout_seconds_closes_the_watch(core: client.CoreV1Api) -> None:
    collector = Collector(core.list_node, timeout_seconds=1)
    assert collector.join(60), "the watch did not end after timeoutSeconds=1"
    assert collector.error is None and collector.events == []


def test_label_selector_enter_and_leave(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("a", labels={"app": "web"}))
    core.create_namespaced_pod("default", pod("b", labels={"app": "db"}))
    collector = Collector(core.list_namespaced_pod, "default", label_selector="app in (web, api),!canary",
                          timeout_seconds=20, stop_after=5)
    assert names(collector.wait_for(1)) == [("ADDED", "a")]
    core.patch_namespaced_pod("b", "default", {"metadata": {"labels": {"app": "api"}}})       # enters
    core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"canary": "yes"}}})    # leaves
    core.patch_namespaced_pod("b", "default", {"metadata": {"labels": {"tier": "x"}}})        # stays
    core.delete_namespaced_pod("a", "default")                                               # not seen
    core.delete_namespaced_pod("b", "default")
    assert collector.join()
    assert names(collector.events) == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a"), ("MODIFIED", "b"),
                                       ("DELETED", "b")]


def test_field_selector_on_node_name_and_metadata_name(core: client.CoreV1Api) -> None:
    collector = Collector(core.list_pod_for_all_namespaces, field_selector="spec.nodeName=node-1",
                          timeout_seconds=20, stop_after=3)
    core.create_namespaced_pod("default", pod("here", node="node-1"))
    core.create_namespaced_pod("default", pod("there", node="node-2"))
    core.create_namespaced_pod("default", pod("unscheduled", node=None))
    core.patch_namespaced_pod("unscheduled", "default", {"spec": {"nodeName": "node-1"}})   # enters
    core.delete_namespaced_pod("there", "default")
    core.delete_namespaced_pod("here", "default")
    assert collector.join()
    assert names(collector.events) == [("ADDED", "here"), ("ADDED", "unscheduled"), ("DELETED", "here")]
    core.create_namespaced_pod("default", pod("elsewhere", node="node-3"))
    only = core.list_pod_for_all_namespaces(field_selector="metadata.name=unscheduled,metadata.namespace=default")
    assert [p.metadata.name for p in only.items] == ["unscheduled"]
    listed = core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=node-1")
    assert [p.metadata.name for p in listed.items] == ["elsewhere"]


def test_custom_objects_watch(custom: client.CustomObjectsApi) -> None:
    custom.create_cluster_custom_object("calyx.dev", "v1", "ippools", ippool("p1"))
    collector = Collector(custom.list_cluster_custom_object, "calyx.dev", "v1", "ippools",
                          timeout_seconds=20, stop_after=3)
    assert names(collector.wait_for(1)) == [("ADDED", "p1")]
    custom.patch_cluster_custom_object_status("calyx.dev", "v1", "ippools", "p1", {"status": {"x": 1}})
    custom.delete_cluster_custom_object("calyx.dev", "v1", "ippools", "p1")
    assert collector.join()
    assert names(collector.events) == [("ADDED", "p1"), ("MODIFIED", "p1"), ("DELETED", "p1")]


def test_500_creates_reach_a_watcher_in_order(core: client.CoreV1Api) -> None:
    start = core.list_namespaced_pod("default").metadata.resource_version
    collector = Collector(core.list_namespaced_pod, "default", resource_version=start, timeout_seconds=120,
                          stop_after=500)
    for i in range(500):
        core.create_namespaced_pod("default", pod(f"p{i:03d}"))
    assert collector.join(120)
    assert collector.error is None
    assert [name for _, name, _ in collector.events] == [f"p{i:03d}" for i in range(500)]
    assert {kind for kind, _, _ in collector.events} == {"ADDED"}
    versions = [int(rv) for _, _, rv in collector.events]
    assert versions == sorted(versions) and len(set(versions)) == 500


def test_resource_version_from_the_future_is_refused(core: client.CoreV1Api) -> None:
    """A client resuming against a restarted (empty) server must relist, not see versions go back."""
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_node, resource_version="999999", timeout_seconds=1))
    assert err.value.status == 504 and "Too large resource version" in str(err.value)
    with pytest.raises(ApiException) as err:
        core.list_node(resource_version="999999", resource_version_match="NotOlderThan")
    assert err.value.status == 504


def test_abandoned_quiet_watches_are_released(server) -> None:
    import http.client
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    for _ in range(3):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/api/v1/nodes?watch=1")
        assert conn.getresponse().status == 200
        conn.close()
    count = lambda: server.call(server.api.store.watch_count, ("", "nodes"))   # noqa: E731
    assert count() == 3          # registered before the 200 was sent; released only by the check
    deadline = time.monotonic() + 60
    while count() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert count() == 0
