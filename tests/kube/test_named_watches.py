"""Objects watched by name (``Datastore.watch_named`` / ``set_named``) against a real
kube-apiserver: Secrets followed through create, update and delete into the same Snapshot as
every other watch, nothing else of the namespace read, watches added and removed at run time,
outages survived like any reflector's; and, under a ServiceAccount whose Role grants Secrets by
``resourceNames`` only, the granted Secret is followed while a refused one is reported (log
line, Event on the referring object, ``Snapshot.secret_errors``) without disturbing the other
watches, and a password read before a refusal is kept."""
from __future__ import annotations

import logging

import kubernetes.client
from prometheus_client import CollectorRegistry

from calyx import model
from calyx.kube import resources
from calyx.kube.datastore import NOT_FOUND_REASON, UNREADABLE_REASON, Datastore, NamedChanges, NamedState
from calyx.kube.events import EventRecorder
from calyx.kube.reflector import Backoff, WatchSpec
from calyx.model import ObjectName
from kube_helpers import (can_list_by_name, ensure_namespace, secret_grant_rules, service_account_api,
                          wait_until)

NAMESPACE = "calyx-system"
ACCOUNT = "calyx-named-watch-test"
PEER_A = ObjectName(model.KIND_BGP_PEER, "peer-a")
PEER_B = ObjectName(model.KIND_BGP_PEER, "peer-b")
MESH = ObjectName(model.KIND_BGP_CONFIGURATION, "default")


def fast_backoff() -> Backoff:
    return Backoff(base=0.05, cap=0.4)


def secret(name: str, **values: str) -> dict:
    return {"metadata": {"name": name, "namespace": NAMESPACE}, "stringData": values}


def states(ds: Datastore) -> dict[str, NamedState]:
    return {w.name: w.state for w in ds.named(resources.SECRETS)}


def fresh(ds: Datastore) -> model.Snapshot:
    ds.wait_for_change(0.5)
    return ds.snapshot()


def events_about(api, name: str, reason: str) -> list[dict]:
    return [e for e in resources.list_objects(api, resources.EVENTS, namespace="default").items
            if e["involvedObject"]["name"] == name and e["reason"] == reason]


def test_a_secret_watched_by_name_follows_create_update_delete_and_nothing_else_is_read(kube):
    api = kube.client()
    ensure_namespace(api, NAMESPACE)
    resources.create_object(api, resources.SECRETS, secret("unreferenced", pw="never read"))
    recorder = EventRecorder(api, component="bgpd", host="node-a")
    registry = CollectorRegistry()
    with Datastore(api, [WatchSpec(resources.IPPOOLS)], events=recorder, namespace=NAMESPACE,
                   registry=registry, backoff=fast_backoff) as ds:
        assert ds.wait_synced(20)
        assert ds.named() == [] and ds.snapshot().secrets == {}        # no Secret watch at all
        assert ds.watch_named(resources.SECRETS, "bgp-passwords", referenced_by=[PEER_A])
        assert ds.wait_named_settled(20)
        [watch] = ds.named()
        assert (watch.namespace, watch.name, watch.state) == (NAMESPACE, "bgp-passwords", NamedState.NOT_FOUND)
        assert watch.describe() == \
            "Secret calyx-system/bgp-passwords (referenced by BGPPeer peer-a): not found; watching for it"
        snap = ds.snapshot()
        assert snap.secrets == {} and snap.secret_errors == {}         # absent from both: not found

        resources.create_object(api, resources.SECRETS, secret("bgp-passwords", tor="alpha"))
        wait_until(lambda: fresh(ds).secrets == {(NAMESPACE, "bgp-passwords"): {"tor": "alpha"}},
                   what="the created Secret")
        resources.patch_object(api, resources.SECRETS, "bgp-passwords", {"stringData": {"tor": "beta"}}, NAMESPACE)
        wait_until(lambda: fresh(ds).secrets == {(NAMESPACE, "bgp-passwords"): {"tor": "beta"}},
                   what="the updated Secret")
        assert states(ds) == {"bgp-passwords": NamedState.FOUND}
        label = f"secrets/{NAMESPACE}/bgp-passwords"
        assert registry.get_sample_value("calyx_datastore_objects", {"resource": label}) == 1
        resources.delete_object(api, resources.SECRETS, "bgp-passwords", NAMESPACE)
        wait_until(lambda: fresh(ds).secrets == {}, what="the deleted Secret to leave the snapshot")
        assert states(ds) == {"bgp-passwords": NamedState.NOT_FOUND}

        assert recorder.flush(10)
        [event] = events_about(api, "peer-a", NOT_FOUND_REASON)      # once per change: twice not found
        assert event["involvedObject"]["kind"] == "BGPPeer" and event["count"] == 2
        assert event["message"] == watch.describe()

        assert ds.unwatch_named(resources.SECRETS, "bgp-passwords")
        assert ds.named() == [] and not ds.unwatch_named(resources.SECRETS, "bgp-passwords")
        resources.create_object(api, resources.SECRETS, secret("bgp-passwords", tor="gamma"))
        assert not ds.wait_for_change(1.0) or ds.snapshot().secrets == {}
        assert ds.snapshot().secrets == {}
        assert registry.get_sample_value("calyx_datastore_objects", {"resource": label}) is None
    recorder.close()


def test_set_named_adds_removes_and_updates_referrers_at_run_time(kube):
    api = kube.client()
    ensure_namespace(api, NAMESPACE)
    for name in ("a", "b", "c"):
        resources.create_object(api, resources.SECRETS, secret(name, pw=f"pw-{name}"))
    with Datastore(api, [], namespace=NAMESPACE, backoff=fast_backoff) as ds:
        changes = ds.set_named(resources.SECRETS, {(NAMESPACE, "a"): [PEER_A], (NAMESPACE, "b"): [PEER_B, MESH]})
        assert changes == NamedChanges(added=((NAMESPACE, "a"), (NAMESPACE, "b")))
        assert ds.wait_named_settled(20)
        assert set(ds.snapshot().secrets) == {(NAMESPACE, "a"), (NAMESPACE, "b")}
        # The same set with other referrers starts nothing.
        assert not ds.set_named(resources.SECRETS, {(NAMESPACE, "a"): [PEER_B], (NAMESPACE, "b"): [MESH]})
        assert {w.name: w.referenced_by for w in ds.named()} == {"a": (PEER_B,), "b": (MESH,)}
        # b goes, c comes.
        changes = ds.set_named(resources.SECRETS, {(NAMESPACE, "a"): [PEER_A], (NAMESPACE, "c"): [PEER_B]})
        assert changes == NamedChanges(added=((NAMESPACE, "c"),), removed=((NAMESPACE, "b"),))
        assert ds.wait_named_settled(20)
        wait_until(lambda: set(fresh(ds).secrets) == {(NAMESPACE, "a"), (NAMESPACE, "c")}, what="b out, c in")
        assert ds.snapshot().secrets[(NAMESPACE, "c")] == {"pw": "pw-c"}
        assert ds.set_named(resources.SECRETS, {}) == NamedChanges(removed=((NAMESPACE, "a"), (NAMESPACE, "c")))
        wait_until(lambda: fresh(ds).secrets == {}, what="no Secret once none is referenced")
        assert ds.named() == []


def test_a_named_watch_survives_an_outage_and_relists_the_difference(kube):
    api = kube.client()
    ensure_namespace(api, NAMESPACE)
    resources.create_object(api, resources.SECRETS, secret("mesh", pw="before"))
    registry = CollectorRegistry()
    with Datastore(api, [], namespace=NAMESPACE, registry=registry, backoff=fast_backoff) as ds:
        ds.watch_named(resources.SECRETS, "mesh", referenced_by=[MESH])
        assert ds.wait_named_settled(20)
        assert ds.snapshot().secrets == {(NAMESPACE, "mesh"): {"pw": "before"}}
        kube.stop_api()
        label = f"secrets/{NAMESPACE}/mesh"
        wait_until(lambda: (registry.get_sample_value("calyx_datastore_errors_total", {"resource": label}) or 0) >= 2,
                   what="failed attempts while the API is down")
        [watch] = ds.named()
        assert watch.state is NamedState.FAILING and watch.cached and watch.problem is None
        snap = ds.snapshot()
        assert snap.secrets == {(NAMESPACE, "mesh"): {"pw": "before"}} and snap.secret_errors == {}
        kube.restart_api()
        resources.patch_object(api, resources.SECRETS, "mesh", {"stringData": {"pw": "after"}}, NAMESPACE)
        wait_until(lambda: fresh(ds).secrets == {(NAMESPACE, "mesh"): {"pw": "after"}}, what="the change made meanwhile")
        assert states(ds) == {"mesh": NamedState.FOUND}
        assert registry.get_sample_value("calyx_datastore_relists_total", {"resource": label}) >= 1


def test_under_resource_names_rbac_the_granted_secret_is_followed_and_a_refused_one_reported(kube, caplog):
    admin = kube.client()
    ensure_namespace(admin, NAMESPACE)
    recorder = EventRecorder(admin, component="bgpd", host="node-a")
    pools = [{"apiGroups": ["calyx.dev"], "resources": ["ippools"], "verbs": ["list", "watch"]}]
    with service_account_api(admin, kube, NAMESPACE, ACCOUNT, ["granted"], cluster_rules=pools) as api:
        wait_until(lambda: can_list_by_name(api, resources.SECRETS, "granted", NAMESPACE), what="the Role in force")
        # The authorizer's part: by name yes, anything else no.
        assert not can_list_by_name(api, resources.SECRETS, "refused", NAMESPACE)
        ds = Datastore(api, [WatchSpec(resources.IPPOOLS)], events=recorder, namespace=NAMESPACE,
                       backoff=fast_backoff)
        caplog.set_level(logging.WARNING, logger="calyx.kube.datastore")
        with ds:
            assert ds.wait_synced(20)
            ds.set_named(resources.SECRETS, {(NAMESPACE, "granted"): [PEER_A], (NAMESPACE, "refused"): [PEER_B, MESH]})
            assert ds.wait_named_settled(20)
            watches = {w.name: w for w in ds.named()}
            assert watches["granted"].state is NamedState.NOT_FOUND
            refused = watches["refused"]
            assert refused.state is NamedState.FORBIDDEN and not refused.cached
            assert refused.error.startswith('HTTP 403 Forbidden: secrets "refused" is forbidden: '
                                            f'User "system:serviceaccount:{NAMESPACE}:{ACCOUNT}" cannot list')
            assert refused.describe().startswith(
                "Secret calyx-system/refused (referenced by BGPConfiguration default, BGPPeer peer-b): "
                "cannot be read: HTTP 403 Forbidden")
            snap = ds.snapshot()
            assert snap.secrets == {}
            assert snap.secret_errors == {(NAMESPACE, "refused"): f"cannot be read: {refused.error}"}

            # Both exist now: only the granted one is read; the other watches go on.
            resources.create_object(admin, resources.SECRETS, secret("granted", pw="one"))
            resources.create_object(admin, resources.SECRETS, secret("refused", pw="hidden"))
            resources.create_object(admin, resources.IPPOOLS,
                                    {"metadata": {"name": "p"}, "spec": {"cidr": "10.9.0.0/16"}})
            wait_until(lambda: (s := fresh(ds)).secrets == {(NAMESPACE, "granted"): {"pw": "one"}} and "p" in s.ippools,
                       what="the granted Secret and the pool")
            resources.patch_object(admin, resources.SECRETS, "granted", {"stringData": {"pw": "two"}}, NAMESPACE)
            wait_until(lambda: fresh(ds).secrets == {(NAMESPACE, "granted"): {"pw": "two"}}, what="the update")
            resources.delete_object(admin, resources.SECRETS, "granted", NAMESPACE)
            wait_until(lambda: fresh(ds).secrets == {}, what="the deletion")
            assert states(ds) == {"granted": NamedState.NOT_FOUND, "refused": NamedState.FORBIDDEN}
            assert ds.readiness().ok           # a refused Secret does not make the daemon unready

        assert recorder.flush(10)
        for referrer in ("peer-b", "default"):
            [event] = events_about(admin, referrer, UNREADABLE_REASON)
            assert event["type"] == "Warning" and event["message"] == refused.describe()
        assert events_about(admin, "peer-a", UNREADABLE_REASON) == []
        [line] = [r for r in caplog.records if r.getMessage() == "referenced object cannot be read"]
        assert line.calyx_fields["name"] == "refused" and line.calyx_fields["namespace"] == NAMESPACE
        assert line.calyx_fields["referenced_by"] == ["BGPConfiguration default", "BGPPeer peer-b"]
    recorder.close()


def test_a_password_read_before_its_grant_is_revoked_stays(kube):
    admin = kube.client()
    ensure_namespace(admin, NAMESPACE)
    resources.create_object(admin, resources.SECRETS, secret("granted", pw="kept"))
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
    with service_account_api(admin, kube, NAMESPACE, ACCOUNT, ["granted"]) as api:
        wait_until(lambda: can_list_by_name(api, resources.SECRETS, "granted", NAMESPACE), what="the Role in force")
        # Watches of a second each: the revocation is met when the next one opens.
        with Datastore(api, [], namespace=NAMESPACE, watch_timeout=1, backoff=fast_backoff) as ds:
            ds.watch_named(resources.SECRETS, "granted", referenced_by=[PEER_A])
            assert ds.wait_named_settled(20)
            assert ds.snapshot().secrets == {(NAMESPACE, "granted"): {"pw": "kept"}}
            rbac.patch_namespaced_role(ACCOUNT, NAMESPACE, {"rules": secret_grant_rules(["something-else"])})
            wait_until(lambda: states(ds) == {"granted": NamedState.FORBIDDEN}, what="the refusal", timeout=30)
            [watch] = ds.named()
            assert watch.cached and watch.problem is None
            assert watch.describe().endswith("; the version read earlier stays in use; retrying")
            snap = fresh(ds)
            assert snap.secrets == {(NAMESPACE, "granted"): {"pw": "kept"}} and snap.secret_errors == {}

            resources.patch_object(admin, resources.SECRETS, "granted", {"stringData": {"pw": "new"}}, NAMESPACE)
            rbac.patch_namespaced_role(ACCOUNT, NAMESPACE, {"rules": secret_grant_rules(["granted"])})
            wait_until(lambda: fresh(ds).secrets == {(NAMESPACE, "granted"): {"pw": "new"}},
                       what="the change made while refused, once granted again", timeout=30)
            assert states(ds) == {"granted": NamedState.FOUND}
