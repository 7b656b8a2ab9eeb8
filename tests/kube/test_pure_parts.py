"""The parts of calyx.kube that need no API: backoff, list diffing, the cache, Secret decoding,
resource naming and client configuration errors."""
from __future__ import annotations

import random

import kubernetes.client
import pytest

from calyx.kube import client, resources
from calyx.kube.datastore import Datastore
from calyx.kube.reflector import ADDED, DELETED, MODIFIED, Backoff, Cache, WatchSpec, diff_lists


def obj(name: str, rv: str, namespace: str | None = None) -> dict:
    meta = {"name": name, "resourceVersion": rv}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta}


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2 ** n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0 and delays[-1] >= 15.0
    assert len({round(d, 6) for d in delays[-4:]}) == 4   # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_diff_lists_reports_deleted_modified_added_and_nothing_for_unchanged():
    old = {("", "a"): obj("a", "1"), ("", "b"): obj("b", "2"), ("", "c"): obj("c", "3")}
    fresh, changes = diff_lists(old, [obj("a", "1"), obj("b", "9"), obj("d", "10")])
    assert {(c.type, c.key[1]) for c in changes} == {(DELETED, "c"), (MODIFIED, "b"), (ADDED, "d")}
    deleted = next(c for c in changes if c.type == DELETED)
    assert deleted.obj["metadata"]["resourceVersion"] == "3"   # the last known object
    assert set(fresh) == {("", "a"), ("", "b"), ("", "d")}


def test_cache_apply_and_notifications():
    seen = []
    cache = Cache(on_change=seen.extend)
    cache.apply(ADDED, obj("p", "1", "ns"))
    cache.apply(ADDED, obj("p", "2", "ns"))        # a re-add of a known key is a modification
    cache.apply(DELETED, obj("p", "3", "ns"))
    cache.apply(DELETED, obj("never-seen", "4"))
    assert [(c.type, c.key) for c in seen] == [(ADDED, ("ns", "p")), (MODIFIED, ("ns", "p")),
                                               (DELETED, ("ns", "p")), (DELETED, ("", "never-seen"))]
    assert len(cache) == 0
    cache.replace([obj("x", "5")])
    assert cache.get(("", "x")) is not None and cache.items().keys() == {("", "x")}


def test_resource_constants_and_method_names():
    assert resources.PODS.api_version == "v1" and resources.PODS.namespaced
    assert resources.IPPOOLS.api_version == "calyx.dev/v1" and not resources.IPPOOLS.namespaced
    assert resources.NODES.snake_kind == "node" and resources.BGPPEERS.snake_kind == "bgp_peer"
    assert str(resources.BGPCONFIGURATIONS) == "bgpconfigurations.calyx.dev"
    assert resources.object_key(obj("p", "1", "ns")) == ("ns", "p")
    typed = resources.with_type(resources.IPAMBLOCKS, {"metadata": {"name": "b"}})
    assert (typed["kind"], typed["apiVersion"]) == ("IPAMBlock", "calyx.dev/v1")


def test_client_load_errors_say_what_was_tried(tmp_path):
    with pytest.raises(client.ClientConfigError, match="no Kubernetes API configuration"):
        client.load(None, environ={})
    with pytest.raises(client.ClientConfigError, match="no such file"):
        client.load(str(tmp_path / "missing"), environ={})
    garbage = tmp_path / "kubeconfig"
    garbage.write_text("clusters: 3\n")
    with pytest.raises(client.ClientConfigError, match="unusable"):
        client.load(str(garbage), environ={})
    with pytest.raises(client.ClientConfigError, match="in-cluster configuration"):
        client.load(None, environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})


def test_client_load_from_kubeconfig_and_clone_share_configuration(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
""")
    api = client.load(str(kubeconfig), environ={})
    assert client.server_url(api) == "http://127.0.0.1:6443"
    other = client.clone(api)
    assert other is not api and other.configuration is api.configuration
    assert other.rest_client is not api.rest_client


def test_datastore_refuses_unknown_or_duplicate_resources():
    api = kubernetes.client.ApiClient()
    with pytest.raises(ValueError, match="events has no place"):
        Datastore(api, [WatchSpec(resources.EVENTS)])
    with pytest.raises(ValueError, match="ippools.calyx.dev watched twice"):
        Datastore(api, [WatchSpec(resources.IPPOOLS), WatchSpec(resources.IPPOOLS, label_selector="a=b")])
