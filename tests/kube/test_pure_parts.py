"""The parts of calyx.kube that need no API: backoff, list diffing, the cache, Secret decoding,
resource naming, client configuration errors, and what watches by name report."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from calyx.kube import client, resources
from calyx.kube.datastore import Datastore, NamedChanges, NamedState, NamedWatch
from calyx.kube.reflector import ADDED, DELETED, MODIFIED, Backoff, Cache, ReflectorMetrics, WatchSpec, diff_lists
from calyx.model import ObjectName


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


def test_a_named_watch_spec_pins_one_object_by_field_selector():
    spec = WatchSpec.named(resources.SECRETS, "bgp-passwords", "calyx-system")
    assert spec == WatchSpec(resources.SECRETS, "calyx-system", field_selector="metadata.name=bgp-passwords")
    assert spec.name == "bgp-passwords" and spec.describe() == \
        "secrets namespace=calyx-system fields=metadata.name=bgp-passwords"
    assert WatchSpec(resources.PODS, field_selector="spec.nodeName=a").name is None
    assert WatchSpec(resources.SECRETS, field_selector="metadata.name=a,type=b").name is None
    with pytest.raises(ValueError, match="needs a name"):
        WatchSpec.named(resources.SECRETS, "")


def test_api_errors_are_described_with_the_status_message_on_request():
    body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": 'secrets "x" is forbidden: User "u" cannot list resource "secrets"'})
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = body.encode()
    assert client.describe_error(exc) == "HTTP 403 Forbidden"
    assert client.describe_error(exc, api_message=True) == \
        'HTTP 403 Forbidden: secrets "x" is forbidden: User "u" cannot list resource "secrets"'
    exc.body = "<html>not a Status</html>"
    assert client.describe_error(exc, api_message=True) == "HTTP 403 Forbidden"


def test_forgetting_a_reflector_drops_its_series_only():
    registry = CollectorRegistry()
    metrics = ReflectorMetrics(registry)
    for label in ("secrets/ns/a", "secrets/ns/b"):
        metrics.objects.labels(label).set(1)
        metrics.errors.labels(label).inc()
        metrics.events.labels(label, ADDED).inc()
    metrics.forget("secrets/ns/a")
    metrics.forget("never-seen")
    assert registry.get_sample_value("calyx_datastore_objects", {"resource": "secrets/ns/a"}) is None
    assert registry.get_sample_value("calyx_datastore_events_total", {"resource": "secrets/ns/a", "type": ADDED}) is None
    assert registry.get_sample_value("calyx_datastore_objects", {"resource": "secrets/ns/b"}) == 1
    assert registry.get_sample_value("calyx_datastore_errors_total", {"resource": "secrets/ns/b"}) == 1


def test_named_watches_before_start_are_pending_and_say_so_in_the_snapshot():
    ds = Datastore(kubernetes.client.ApiClient(), [WatchSpec(resources.BGPPEERS)], namespace="calyx-system")
    peer = ObjectName("BGPPeer", "tor")
    assert ds.set_named(resources.SECRETS, {("calyx-system", "a"): [peer], ("calyx-system", "b"): [peer, peer]}) \
        == NamedChanges(added=(("calyx-system", "a"), ("calyx-system", "b")))
    [a, b] = ds.named()
    assert (a.name, a.state, a.referenced_by, b.referenced_by) == ("a", NamedState.PENDING, (peer,), (peer,))
    assert a.object == ObjectName("Secret", "a", "calyx-system") and str(a.object) == "Secret calyx-system/a"
    assert a.describe() == "Secret calyx-system/a (referenced by BGPPeer tor): pending"
    assert not ds.wait_named_settled(0.1)
    snap = ds.snapshot()
    assert snap.secrets == {}
    assert snap.secret_errors == {("calyx-system", "a"): "not read from the API yet",
                                  ("calyx-system", "b"): "not read from the API yet"}
    assert ds.set_named(resources.SECRETS, {("calyx-system", "a"): [peer]}) == \
        NamedChanges(removed=(("calyx-system", "b"),))
    assert not ds.set_named(resources.SECRETS, {("calyx-system", "a"): [peer]})
    assert [w.name for w in ds.named()] == ["a"] and set(ds.snapshot().secret_errors) == {("calyx-system", "a")}
    assert ds.set_named(resources.SECRETS, {}).removed == (("calyx-system", "a"),) and ds.named() == []
    ds.stop()


def test_named_watch_states_read_as_errors_naming_the_object_and_its_referrers():
    refs = (ObjectName("BGPConfiguration", "default"), ObjectName("BGPPeer", "tor"))
    watch = NamedWatch(resources.SECRETS, "calyx-system", "pw", refs, NamedState.FORBIDDEN,
                       error='HTTP 403 Forbidden: secrets "pw" is forbidden')
    assert watch.problem == 'cannot be read: HTTP 403 Forbidden: secrets "pw" is forbidden'
    assert watch.describe() == ('Secret calyx-system/pw (referenced by BGPConfiguration default, BGPPeer tor): '
                                'cannot be read: HTTP 403 Forbidden: secrets "pw" is forbidden; retrying')
    kept = replace(watch, cached=True)
    assert kept.problem is None and kept.describe().endswith("; the version read earlier stays in use; retrying")
    assert replace(watch, state=NamedState.NOT_FOUND, error=None).problem is None
    assert replace(watch, state=NamedState.FOUND, error=None, cached=True).problem is None
    assert replace(watch, state=NamedState.PENDING, error=None).problem == "not read from the API yet"


def test_named_watches_refuse_what_has_no_place_or_is_watched_whole():
    ds = Datastore(kubernetes.client.ApiClient(), [WatchSpec(resources.IPPOOLS)])
    with pytest.raises(ValueError, match="events has no place"):
        ds.watch_named(resources.EVENTS, "e")
    with pytest.raises(ValueError, match="ippools.calyx.dev is watched whole"):
        ds.watch_named(resources.IPPOOLS, "p")
    with pytest.raises(ValueError, match="needs a name"):
        ds.watch_named(resources.SECRETS, "")
    ds.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        ds.watch_named(resources.SECRETS, "late")
