"""The chart's life on a real Kubernetes control plane (etcd, kube-apiserver with RBAC and
admission, kube-controller-manager, kube-scheduler), driven by the real helm and kubectl:

* ``helm install`` into a fresh cluster installs the CRDs itself and creates every object the
  chart renders, served back as rendered (plus only what the API server adds);
* the custom resources of the defaults and of every documented example are accepted, come back
  with the CRD defaults, and parse into the model the daemons use;
* ``helm upgrade`` applies changed values and removes what is no longer rendered;
* ``helm uninstall`` leaves nothing of the release behind but the CRDs (Helm never deletes
  those), and leaves alone what is not the release's.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from calyx import crds, model
from chart_support import NAMESPACE, SCENARIOS, ChartCluster, Helm, Kubectl, Rendered, wait_for

SCHEMAS = crds.spec_schemas()
PARSERS = {kind: parse for kind, parse in model.parsers(SCHEMAS).items()
           if kind in ("IPPool", "BGPConfiguration", "BGPPeer")}
PLURALS = {"IPPool": "ippools", "BGPConfiguration": "bgpconfigurations", "BGPPeer": "bgppeers"}
CRDS = ("bgpconfigurations.calyx.dev", "bgppeers.calyx.dev", "ipamblocks.calyx.dev", "ippools.calyx.dev")
INSTANCE = "app.kubernetes.io/instance=calyx"
NODE = "node-a"


@pytest.fixture(scope="module")
def api(chart_cluster: ChartCluster) -> ChartCluster:
    """The module's cluster, with no Calyx CRD yet and one Node for the DaemonSet to run on."""
    served = chart_cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert not [c for c in served if c.endswith(".calyx.dev")], served
    chart_cluster.register_node(NODE)
    return chart_cluster


def _kind_arg(doc: dict[str, Any]) -> str:
    """``kind.group`` as kubectl takes it (unambiguous whatever else the server serves)."""
    group = doc["apiVersion"].rpartition("/")[0] if "/" in doc["apiVersion"] else ""
    return f"{doc['kind']}.{group}" if group else doc["kind"]


def _served(kubectl: Kubectl, doc: dict[str, Any]) -> dict[str, Any]:
    return kubectl.get(_kind_arg(doc), doc["metadata"]["name"], doc["metadata"].get("namespace"))


def assert_served_as_rendered(rendered: Any, served: Any, path: str) -> None:
    """Every field the chart rendered comes back from the API server with the same value (lists
    element by element); the server may only add fields (defaults, status, metadata)."""
    if isinstance(rendered, dict):
        assert isinstance(served, dict), f"{path}: rendered a map, served {served!r}"
        for key, value in rendered.items():
            assert key in served, f"{path}.{key}: rendered but not served"
            assert_served_as_rendered(value, served[key], f"{path}.{key}")
    elif isinstance(rendered, list):
        assert isinstance(served, list) and len(served) == len(rendered), \
            f"{path}: rendered {len(rendered)} items, served {served!r}"
        for index, (want, got) in enumerate(zip(rendered, served)):
            assert_served_as_rendered(want, got, f"{path}[{index}]")
    else:
        assert served == rendered, f"{path}: rendered {rendered!r}, served {served!r}"


def test_install_creates_every_rendered_object(helm: Helm, api: ChartCluster) -> None:
    api.release.use()
    rendered = helm.template(include_crds=True)
    kinds = {d["kind"] for d in rendered.documents}
    # No password Secret named by the defaults: no Role granting one (the external-peers
    # example's is installed and uninstalled below).
    assert kinds == {"CustomResourceDefinition", "ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding",
                     "DaemonSet", "IPPool", "BGPConfiguration"}
    for doc in rendered.documents:
        assert_served_as_rendered(doc, _served(api.kubectl, doc), f"{doc['kind']}/{doc['metadata']['name']}")
    # helm installed the CRDs (the cluster had none), and the API server serves them.
    for crd in CRDS:
        conditions = api.kubectl.get("crd", crd)["status"]["conditions"]
        assert {"type": "Established", "status": "True"}.items() <= \
            next(c for c in conditions if c["type"] == "Established").items(), crd
    # The CNI plugin's token Secret is filled in by the token controller, for its account only.
    secret = api.cni_plugin_token()
    assert {"token", "ca.crt", "namespace"} <= set(secret["data"])
    account = api.kubectl.get("serviceaccount", "calyx-cni-plugin", NAMESPACE)
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] == account["metadata"]["uid"]
    # The DaemonSet controller made the pod for the node, running as felix and bgpd's account.
    pods = wait_for("the DaemonSet's pod", lambda: api.kubectl.get("pods", namespace=NAMESPACE)["items"], 90.0)
    assert [p["spec"]["serviceAccountName"] for p in pods] == ["calyx"]
    assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    assert pods[0]["spec"]["priorityClassName"] == "system-node-critical"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_custom_resources_are_served_with_crd_defaults_and_parse(helm: Helm, api: ChartCluster,
                                                                 name: str) -> None:
    api.release.use(SCENARIOS[name])
    rendered = helm.template(SCENARIOS[name])
    for kind, plural in PLURALS.items():
        served = api.kubectl.get(f"{plural}.calyx.dev")["items"]
        expected = {d["metadata"]["name"]: d for d in rendered.of_kind(kind)}
        # exactly the rendered ones: an upgrade from another example removed the rest
        assert {o["metadata"]["name"] for o in served} == set(expected), kind
        for obj in served:
            source = expected[obj["metadata"]["name"]]["spec"]
            # Everything the chart set comes back unchanged; the API adds only CRD defaults.
            assert {k: obj["spec"][k] for k in source} == source
            parsed = PARSERS[kind](obj)
            assert parsed.name == obj["metadata"]["name"]
    for raw in api.kubectl.get("ippools.calyx.dev")["items"]:
        assert raw["spec"]["vxlanMode"] == "Never" and raw["spec"]["disabled"] is False   # CRD defaults
        assert raw["spec"]["disableBGPExport"] is False
    for raw in api.kubectl.get("bgppeers.calyx.dev")["items"]:
        assert raw["spec"]["sourceAddress"] == "UseNodeIP"                                   # CRD default


def test_default_install_gives_the_daemons_calico_defaults(api: ChartCluster) -> None:
    api.release.use()
    pool = model.parse_ippool(api.kubectl.get("ippool.calyx.dev", "default-ipv4-ippool"), SCHEMAS)
    assert pool.ipip_mode is model.EncapMode.ALWAYS and pool.block_size == 26
    assert str(pool.cidr) == "10.244.0.0/16" and pool.nat_outgoing is False
    config = model.parse_bgp_configuration(api.kubectl.get("bgpconfiguration.calyx.dev", "default"), SCHEMAS)
    assert config.as_number == 64512 and config.node_to_node_mesh_enabled is True
    assert config.listen_port == 179


def test_external_peer_password_refs_resolve_in_release_namespace(api: ChartCluster) -> None:
    api.release.use(SCENARIOS["external-peers"])
    api.kubectl.apply([{"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "bgp-passwords", "namespace": NAMESPACE},
                        "stringData": {"tor-a": "alpha", "tor-b": "bravo"}}])
    try:
        peer = model.parse_bgp_peer(api.kubectl.get("bgppeer.calyx.dev", "tor-rack-b"), SCHEMAS)
        assert peer.password == model.SecretKeyRef(name="bgp-passwords", key="tor-b")
        assert str(peer.peer_ip) == "10.0.2.1" and peer.peer_port == 1179
        _, data = model.parse_secret(api.kubectl.get("secret", "bgp-passwords", NAMESPACE))
        assert data["tor-b"] == "bravo"
    finally:
        api.kubectl("delete", "secret", "bgp-passwords", "-n", NAMESPACE)


def test_upgrade_applies_changed_values(helm: Helm, api: ChartCluster) -> None:
    api.release.use(SCENARIOS["external-peers"])
    assert len(api.kubectl.get("bgppeers.calyx.dev")["items"]) == 3
    before = api.release.status()["version"]
    ds_before = api.kubectl.get("daemonset", "calyx", NAMESPACE)
    sets = ("bgp.nodeToNodeMesh=true", "bgp.asNumber=64600", "ipPool.ipipMode=CrossSubnet",
            "felix.healthPort=19099")
    api.release.upgrade(SCENARIOS["route-reflectors"], sets)
    assert api.release.status()["version"] == before + 1
    config = model.parse_bgp_configuration(api.kubectl.get("bgpconfiguration.calyx.dev", "default"), SCHEMAS)
    assert config.as_number == 64600 and config.node_to_node_mesh_enabled is True
    pool = model.parse_ippool(api.kubectl.get("ippool.calyx.dev", "default-ipv4-ippool"), SCHEMAS)
    assert pool.ipip_mode is model.EncapMode.CROSS_SUBNET
    # The external peers are gone, the route reflector peering is there.
    assert [p["metadata"]["name"] for p in api.kubectl.get("bgppeers.calyx.dev")["items"]] == \
        ["peer-with-route-reflectors"]
    # The DaemonSet has the new settings, and a new config checksum rolls its pods.
    ds = api.kubectl.get("daemonset", "calyx", NAMESPACE)
    rendered = helm.template(SCENARIOS["route-reflectors"], sets)
    assert_served_as_rendered(rendered.one("DaemonSet"), ds, "DaemonSet/calyx")
    felix = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "felix")
    assert {"name": "CALYX_HEALTH_PORT", "value": "19099"} in felix["env"]
    checksum = "checksum/config"
    assert ds["spec"]["template"]["metadata"]["annotations"][checksum] != \
        ds_before["spec"]["template"]["metadata"]["annotations"][checksum]
    assert ds["metadata"]["generation"] > ds_before["metadata"]["generation"]


def _release_leftovers(kubectl: Kubectl) -> list[str]:
    """Every object of any kind, in any namespace, carrying the release's instance label."""
    kinds = kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    return kubectl("get", ",".join(kinds), "-A", "-l", INSTANCE, "-o", "name").stdout.split()


def test_uninstall_leaves_only_the_crds(helm: Helm, api: ChartCluster) -> None:
    api.release.use(SCENARIOS["external-peers"])
    rendered: Rendered = helm.template(SCENARIOS["external-peers"], include_crds=True)
    # Not the release's: a block the CNI plugin claimed and a password Secret the user made.
    block = {"apiVersion": "calyx.dev/v1", "kind": "IPAMBlock", "metadata": {"name": "10-244-1-0-26"},
             "spec": {"cidr": "10.244.1.0/26", "affinity": f"host:{NODE}", "pool": "default-ipv4-ippool"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp-passwords", "namespace": NAMESPACE},
              "stringData": {"tor-a": "alpha"}}
    api.kubectl.apply([block, secret])
    wait_for("the DaemonSet's pod", lambda: api.kubectl.get("pods", namespace=NAMESPACE)["items"], 90.0)
    leftovers = _release_leftovers(api.kubectl)      # what the check below finds while installed
    assert any(n.startswith("pod/") for n in leftovers), leftovers
    assert len(leftovers) > len(rendered.documents) - len(CRDS), leftovers

    out = api.release.uninstall()
    assert "release \"calyx\" uninstalled" in out

    for doc in rendered.documents:
        kind, name, namespace = _kind_arg(doc), doc["metadata"]["name"], doc["metadata"].get("namespace")
        if doc["kind"] == "CustomResourceDefinition":
            assert api.kubectl.exists(kind, name), f"helm uninstall deleted the CRD {name}"
        else:
            assert not api.kubectl.exists(kind, name, namespace), f"{kind}/{name} left behind"
    # Nothing else carries the release's label: the DaemonSet's pods went with it (garbage
    # collector), and Helm's own record of the release is gone.
    wait_for("the release's objects to be deleted", lambda: not _release_leftovers(api.kubectl), 90.0)
    helm_records = api.kubectl("get", "secrets", "-n", NAMESPACE, "-l", "owner=helm,name=calyx", "-o", "name")
    assert helm_records.stdout.strip() == ""
    listed = json.loads(api.release.helm.run("list", "-n", NAMESPACE, "-o", "json",
                                             "--kubeconfig", str(api.kubectl.kubeconfig)).stdout)
    assert listed == []
    # Left behind on purpose: the CRDs (Established, still serving), what was not the release's,
    # and the namespace --create-namespace made.
    for crd in CRDS:
        assert api.kubectl.exists("crd", crd)
    assert api.kubectl.exists("ipamblock.calyx.dev", "10-244-1-0-26")
    assert api.kubectl.exists("secret", "bgp-passwords", NAMESPACE)
    assert api.kubectl.exists("namespace", NAMESPACE)
    assert api.kubectl.get("ippools.calyx.dev")["items"] == []
    assert api.kubectl.get("bgppeers.calyx.dev")["items"] == []
    assert api.kubectl.get("bgpconfigurations.calyx.dev")["items"] == []
