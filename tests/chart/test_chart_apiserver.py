"""The chart's CRDs and rendered resources, applied with kubectl to the lab's API emulator, are
accepted, served back with the CRD defaults, and parse into the model the daemons use."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from calyx import model
from calyxlab.apiserver import EmbeddedAPIServer
from calyxlab.tools import ToolNotFound, find_tool
from chart_support import NAMESPACE, SCENARIOS, Helm, Rendered

PARSERS = {"IPPool": model.parse_ippool, "BGPConfiguration": model.parse_bgp_configuration,
           "BGPPeer": model.parse_bgp_peer}
PLURALS = {"IPPool": "ippools", "BGPConfiguration": "bgpconfigurations", "BGPPeer": "bgppeers"}


def find_kubectl() -> str:
    try:
        return find_tool("kubectl")
    except ToolNotFound as exc:
        pytest.fail(str(exc), pytrace=False)


class Kubectl:
    def __init__(self, binary: str, kubeconfig: Path):
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))


@pytest.fixture
def kubectl(tmp_path: Path) -> Iterator[Kubectl]:
    # No CRDs preloaded: installing them is part of what is tested.
    with EmbeddedAPIServer(crds=[]) as server:
        yield Kubectl(find_kubectl(), server.write_kubeconfig(tmp_path / "kubeconfig"))


def _install(kubectl: Kubectl, rendered: Rendered) -> list[dict[str, Any]]:
    """What `helm install` does with these kinds: CRDs first, then the custom resources."""
    kubectl.apply(rendered.of_kind("CustomResourceDefinition"))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    resources = [d for d in rendered.documents if d["apiVersion"] == "calyx.dev/v1"]
    kubectl.apply(resources)
    return resources


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rendered_resources_apply_and_parse(helm: Helm, kubectl: Kubectl, name: str) -> None:
    rendered = helm.template(SCENARIOS[name], include_crds=True)
    applied = _install(kubectl, rendered)
    for kind, plural in PLURALS.items():
        served = json.loads(kubectl("get", plural, "-o", "json").stdout)["items"]
        expected = {d["metadata"]["name"]: d for d in applied if d["kind"] == kind}
        assert {o["metadata"]["name"] for o in served} == set(expected), kind
        for obj in served:
            source = expected[obj["metadata"]["name"]]["spec"]
            # Everything the chart set comes back unchanged; the API adds only CRD defaults.
            assert {k: obj["spec"][k] for k in source} == source
            parsed = PARSERS[kind](obj)
            assert parsed.name == obj["metadata"]["name"]
    pools = json.loads(kubectl("get", "ippools", "-o", "json").stdout)["items"]
    for raw in pools:
        assert raw["spec"]["vxlanMode"] == "Never" and raw["spec"]["disabled"] is False   # CRD defaults


def test_default_install_gives_the_daemons_calico_defaults(helm: Helm, kubectl: Kubectl) -> None:
    _install(kubectl, helm.template(include_crds=True))
    pool = model.parse_ippool(json.loads(kubectl("get", "ippool", "default-ipv4-ippool", "-o", "json").stdout))
    assert pool.ipip_mode is model.EncapMode.ALWAYS and pool.block_size == 26
    config = model.parse_bgp_configuration(
        json.loads(kubectl("get", "bgpconfiguration", "default", "-o", "json").stdout))
    assert config.as_number == 64512 and config.node_to_node_mesh_enabled is True


def test_external_peer_password_refs_resolve_in_release_namespace(helm: Helm, kubectl: Kubectl) -> None:
    _install(kubectl, helm.template(SCENARIOS["external-peers"], include_crds=True))
    kubectl.apply([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp-passwords", "namespace": NAMESPACE},
         "stringData": {"tor-a": "alpha", "tor-b": "bravo"}},
    ])
    peer = model.parse_bgp_peer(json.loads(kubectl("get", "bgppeer", "tor-rack-b", "-o", "json").stdout))
    assert peer.password == model.SecretKeyRef(name="bgp-passwords", key="tor-b")
    assert str(peer.peer_ip) == "10.0.2.1" and peer.peer_port == 1179
    secret = json.loads(kubectl("-n", NAMESPACE, "get", "secret", "bgp-passwords", "-o", "json").stdout)
    _, data = model.parse_secret(secret)
    assert data["tor-b"] == "bravo"


def test_upgrade_reapplies_changed_values(helm: Helm, kubectl: Kubectl) -> None:
    _install(kubectl, helm.template(SCENARIOS["route-reflectors"], include_crds=True))
    upgraded = helm.template(SCENARIOS["route-reflectors"], sets=["bgp.nodeToNodeMesh=true", "bgp.asNumber=64600"])
    kubectl.apply([d for d in upgraded.documents if d["apiVersion"] == "calyx.dev/v1"])
    config = model.parse_bgp_configuration(
        json.loads(kubectl("get", "bgpconfiguration", "default", "-o", "json").stdout))
    assert config.as_number == 64600 and config.node_to_node_mesh_enabled is True
