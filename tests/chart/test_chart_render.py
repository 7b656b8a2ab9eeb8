"""The chart renders, lints clean and produces manifests the Kubernetes API and the Calyx CRDs
accept, for the default values and each documented example values file."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from calyx import crds
from chart_support import CRD_DIR, NAMESPACE, SCENARIOS, Helm, Rendered

# Oldest and newest Kubernetes minor the chart is checked against (kubernetes-validate ships both).
KUBERNETES_VERSIONS = ("1.30", "1.35")
CALYX_GROUP = "calyx.dev/v1"


def test_lint_strict(helm: Helm, scenario: tuple[str, tuple[Path, ...]]) -> None:
    name, values = scenario
    proc = helm.lint(values)
    assert proc.returncode == 0, f"{name}: helm lint --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_api_schemas(rendered_scenarios: dict[str, Rendered], version: str) -> None:
    checked = 0
    for name, rendered in rendered_scenarios.items():
        for doc in rendered.documents:
            if doc["apiVersion"] == CALYX_GROUP:
                continue
            what = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(p) for p in err.path)
                pytest.fail(f"{what} invalid for Kubernetes {version}: {path}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError as err:
                pytest.fail(f"{what}: {err.message}")
            checked += 1
    # 4 CRDs, 2 ServiceAccounts (felix and bgpd's, the CNI plugin's) and the latter's token
    # Secret, 2 ClusterRoles and their bindings, the DaemonSet; and where the values name a
    # password Secret (external-peers), the Role granting it and its binding.
    assert checked == len(rendered_scenarios) * 12 + 2


def test_custom_resources_match_crd_schemas(rendered_scenarios: dict[str, Rendered]) -> None:
    loaded = crds.load_crds(CRD_DIR)
    assert set(loaded) == {"IPPool", "BGPConfiguration", "BGPPeer", "IPAMBlock"}
    checked = 0
    for name, rendered in rendered_scenarios.items():
        for doc in rendered.documents:
            if doc["apiVersion"] != CALYX_GROUP:
                continue
            assert doc["kind"] in loaded, f"{name}: {doc['kind']} has no CRD in {CRD_DIR}"
            crd = loaded[doc["kind"]]
            assert crd.scope == "Cluster" and "namespace" not in doc["metadata"], doc["metadata"]
            errors = sorted(jsonschema.Draft4Validator(crd.schema).iter_errors(doc), key=str)
            assert not errors, f"{name}: {doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
                f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
            checked += 1
    assert checked >= len(rendered_scenarios) * 2   # at least the IPPool and BGPConfiguration


def test_rendered_crds_are_the_chart_crds(helm: Helm) -> None:
    rendered = helm.template(include_crds=True)
    names = {d["metadata"]["name"] for d in rendered.of_kind("CustomResourceDefinition")}
    assert names == {f"{c.plural}.calyx.dev" for c in crds.load_crds(CRD_DIR).values()}


def test_defaults_follow_calico_manifest(rendered_scenarios: dict[str, Rendered]) -> None:
    rendered = rendered_scenarios["defaults"]
    pool = rendered.one("IPPool")["spec"]
    assert pool["ipipMode"] == "Always" and pool["blockSize"] == 26
    # Calico's manifest masquerades by default; Calyx's chart leaves it off (ipPool.natOutgoing)
    # because nodes whose kernel lacks nftables NAT (the lab's user-mode Linux) cannot honour it.
    assert pool["natOutgoing"] is False
    network = ipaddress.IPv4Network(pool["cidr"])    # strict: host bits are zero
    assert network.is_private and network.prefixlen <= pool["blockSize"]
    config = rendered.one("BGPConfiguration", "default")["spec"]
    assert config["asNumber"] == 64512 and config["nodeToNodeMeshEnabled"] is True
    assert rendered.of_kind("BGPPeer") == []


def test_bgp_only_renders_unencapsulated_pool(rendered_scenarios: dict[str, Rendered]) -> None:
    rendered = rendered_scenarios["bgp-only"]
    pool = rendered.one("IPPool")["spec"]
    assert (pool["ipipMode"], pool["cidr"], pool["blockSize"]) == ("Never", "10.48.0.0/16", 24)
    assert rendered.one("BGPConfiguration")["spec"]["serviceClusterIPs"] == [{"cidr": "10.96.0.0/12"}]


def test_route_reflector_peering(rendered_scenarios: dict[str, Rendered]) -> None:
    rendered = rendered_scenarios["route-reflectors"]
    assert rendered.one("BGPConfiguration")["spec"]["nodeToNodeMeshEnabled"] is False
    peer = rendered.one("BGPPeer", "peer-with-route-reflectors")["spec"]
    assert peer == {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}


def test_external_peers(rendered_scenarios: dict[str, Rendered]) -> None:
    rendered = rendered_scenarios["external-peers"]
    peers = {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("BGPPeer")}
    assert set(peers) == {"tor-rack-a", "tor-rack-b", "edge-router"}
    assert peers["tor-rack-a"] == {
        "peerIP": "10.0.1.1", "asNumber": 65001, "nodeSelector": "rack == 'a'",
        "password": {"secretKeyRef": {"name": "bgp-passwords", "key": "tor-a"}},
        "holdTime": "9s", "maxRestartTime": "120s"}
    assert peers["tor-rack-b"]["peerIP"] == "10.0.2.1:1179"      # the CRD's form of a port
    assert peers["edge-router"] == {"peerIP": "192.0.2.1", "asNumber": 65100, "node": "node-edge-1",
                                    "keepOriginalNextHop": True}
    config = rendered.one("BGPConfiguration")["spec"]
    assert config["serviceLoadBalancerIPs"] == [{"cidr": "198.51.100.0/24"}]
    assert config["nodeMeshMaxRestartTime"] == "120s"


def test_resources_can_be_left_to_the_operator(helm: Helm) -> None:
    rendered = helm.template(sets=["ipPool.create=false", "bgp.createConfiguration=false"])
    assert rendered.of_kind("IPPool") == [] and rendered.of_kind("BGPConfiguration") == []
    assert rendered.one("DaemonSet")


def test_release_name_and_namespace_flow_into_names(helm: Helm) -> None:
    rendered = helm.template(values=SCENARIOS["external-peers"], release="net", namespace="networking")
    ds = rendered.one("DaemonSet", "net-calyx")
    assert ds["metadata"]["namespace"] == "networking"
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "net-calyx"
    binding = rendered.one("ClusterRoleBinding", "net-calyx")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "net-calyx", "namespace": "networking"}]
    assert rendered.one("Role", "net-calyx-secrets")["metadata"]["namespace"] == "networking"
    secrets_binding = rendered.one("RoleBinding", "net-calyx-secrets")
    assert secrets_binding["metadata"]["namespace"] == "networking"
    assert secrets_binding["subjects"] == [{"kind": "ServiceAccount", "name": "net-calyx", "namespace": "networking"}]
    cni = rendered.one("ClusterRoleBinding", "net-calyx-cni-plugin")
    assert cni["roleRef"]["name"] == "net-calyx-cni-plugin"
    assert cni["subjects"] == [{"kind": "ServiceAccount", "name": "net-calyx-cni-plugin", "namespace": "networking"}]
    token = rendered.one("Secret", "net-calyx-cni-plugin-token")
    assert token["metadata"]["namespace"] == "networking"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "net-calyx-cni-plugin"
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cni-plugin-token"]["secret"]["secretName"] == "net-calyx-cni-plugin-token"


def test_notes_tell_how_to_check_peering_and_routes(helm: Helm) -> None:
    notes = helm.notes(namespace=NAMESPACE)
    assert f"kubectl -n {NAMESPACE} exec ds/calyx -c bgpd -- bgpd status" in notes
    assert "ip route show proto bgp" in notes
    rr_notes = helm.notes(values=SCENARIOS["route-reflectors"])
    assert "kubectl annotate node <node> calyx.dev/route-reflector-cluster-id=224.0.0.1" in rr_notes
    assert "kubectl label node <node> route-reflector=true" in rr_notes
    peer_notes = helm.notes(values=SCENARIOS["external-peers"])
    assert f"kubectl -n {NAMESPACE} create secret generic bgp-passwords --from-literal=tor-a=" in peer_notes
    # Which Secrets felix and bgpd may read, and what another BGPPeer's Secret needs.
    assert f"may read these Secrets of {NAMESPACE} from the API, no other: bgp-passwords." in peer_notes
    assert "may read no Secret from the API." in notes
    for text in (notes, peer_notes):
        assert f"granting get, list and watch on that Secret by name to ServiceAccount {NAMESPACE}/calyx" \
            in " ".join(text.split())
