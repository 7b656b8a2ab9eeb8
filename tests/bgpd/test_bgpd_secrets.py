"""bgpd reads BGP passwords from the Secrets its configuration names, and from no other: its
datastore (``bgpd.daemon.watch_specs`` and ``settled_snapshot``) against a real kube-apiserver,
as ``bgpd run`` drives it. RBAC by ``resourceNames`` with the chart's own account is proven in
tests/chart/test_chart_rbac.py."""
from __future__ import annotations

import base64
from ipaddress import IPv4Address

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from bgpd import daemon as bgpd_daemon
from bgpd.peers import peer_set
from calyx import model
from calyx.kube import resources
from calyx.kube.datastore import Datastore, NamedState
from calyx.kube.reflector import Backoff

from bgpdtest_support import wait_for

NAMESPACE = "calyx-system"
NODE = "node-a"
TOR = IPv4Address("192.0.2.1")
MESH_PEER = IPv4Address("192.0.2.11")


def ensure_namespace(api: kubernetes.client.ApiClient) -> None:
    try:
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def node(name: str, address: str) -> dict:
    return {"metadata": {"name": name, "annotations": {model.ANNOTATION_IPV4_ADDRESS: address,
                                                       "node.alpha.kubernetes.io/ttl": "0"}}}


def secret(name: str, **values: str) -> dict:
    return {"metadata": {"name": name, "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def settled(ds: Datastore) -> model.Snapshot:
    """What bgpd hands its speaker after a change (or after its first sync)."""
    ds.wait_for_change(0.5)
    return bgpd_daemon.settled_snapshot(ds, NAMESPACE)


def test_bgpd_watches_exactly_the_referenced_secrets_and_its_peers_get_the_password(kube) -> None:
    api = kube.client()
    ensure_namespace(api)
    resources.create_object(api, resources.NODES, node(NODE, "192.0.2.10/24"))
    resources.create_object(api, resources.NODES, node("node-b", "192.0.2.11/24"))
    resources.create_object(api, resources.SECRETS, secret("bgp-passwords", tor="alpha"))
    resources.create_object(api, resources.SECRETS, secret("unrelated", tor="never read"))
    resources.create_object(api, resources.BGPCONFIGURATIONS, {"metadata": {"name": "default"}, "spec": {}})
    resources.create_object(api, resources.BGPPEERS, {"metadata": {"name": "tor"}, "spec": {
        "peerIP": str(TOR), "asNumber": 65001,
        "password": {"secretKeyRef": {"name": "bgp-passwords", "key": "tor"}}}})
    with Datastore(api, bgpd_daemon.watch_specs(), namespace=NAMESPACE,
                   backoff=lambda: Backoff(base=0.05, cap=0.4)) as ds:
        assert ds.wait_synced(20)
        snap = settled(ds)
        assert snap.secrets == {(NAMESPACE, "bgp-passwords"): {"tor": "alpha"}}
        peers = peer_set(snap, NODE, NAMESPACE)
        assert peers[TOR].password == "alpha" and peers[TOR].error is None
        assert peers[MESH_PEER].password is None and peers[MESH_PEER].error is None
        assert [(w.name, w.referenced_by) for w in ds.named()] == [
            ("bgp-passwords", (model.ObjectName("BGPPeer", "tor"),))]

        # The mesh names a Secret that does not exist: an error naming it, then the password.
        resources.patch_object(api, resources.BGPCONFIGURATIONS, "default", {
            "spec": {"nodeMeshPassword": {"secretKeyRef": {"name": "mesh", "key": "pw"}}}})
        snap = wait_for(lambda: (s := settled(ds)).bgp_configuration.node_mesh_password is not None and s,
                        what="the mesh password reference")
        assert {w.name: w.state for w in ds.named()} == {"bgp-passwords": NamedState.FOUND, "mesh": NamedState.NOT_FOUND}
        assert peer_set(snap, NODE, NAMESPACE)[MESH_PEER].error == (
            "BGPConfiguration 'default' nodeMeshPassword: password.secretKeyRef.name: 'mesh': "
            "Secret not found in 'calyx-system'")
        resources.create_object(api, resources.SECRETS, secret("mesh", pw="beta"))
        snap = wait_for(lambda: (s := settled(ds)) and (NAMESPACE, "mesh") in s.secrets and s,
                        what="the mesh Secret")
        assert peer_set(snap, NODE, NAMESPACE)[MESH_PEER].password == "beta"
        resources.patch_object(api, resources.SECRETS, "bgp-passwords",
                               {"data": {"tor": base64.b64encode(b"gamma").decode()}}, NAMESPACE)
        snap = wait_for(lambda: (s := settled(ds)) and s.secrets[(NAMESPACE, "bgp-passwords")] == {"tor": "gamma"}
                        and s, what="the changed password")
        assert peer_set(snap, NODE, NAMESPACE)[TOR].password == "gamma"

        # Nothing refers to a Secret any more: no Secret is watched at all.
        resources.delete_object(api, resources.BGPPEERS, "tor")
        resources.patch_object(api, resources.BGPCONFIGURATIONS, "default", {"spec": {"nodeMeshPassword": None}})
        snap = wait_for(lambda: (s := settled(ds)) and not s.bgp_peers and
                        s.bgp_configuration.node_mesh_password is None and s, what="the references to go")
        assert ds.named() == [] and snap.secrets == {} and snap.secret_errors == {}
    api.close()
