"""What the real API server refuses, and in what words: objects that break the chart's CRDs'
CEL rules (``x-kubernetes-validations``) or their OpenAPI schema, applied with the real kubectl
to a real kube-apiserver, fail with exactly the message a user sees.

Every bad object is a valid one with one thing changed (the valid ones are accepted), so each
message is owed to that change alone. Where the server reports several errors their order
varies from run to run: the first line must match, and the ``*`` lines as a set.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from calyxlab.controlplane.pytest_plugin import KubeAccess
from chart_support import CRD_DIR, Kubectl, find_kubectl


def _crd_spec(plural: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRD_DIR / f"calyx.dev_{plural}.yaml").read_text())
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


# The patterns as the server quotes them in its messages.
CIDR = _crd_spec("ippools")["properties"]["cidr"]["pattern"]
PEER_IP = _crd_spec("bgppeers")["properties"]["peerIP"]["pattern"]
DURATION = _crd_spec("bgppeers")["properties"]["holdTime"]["pattern"]
NOT_CHECKED = ("<nil>: Invalid value: null: some validation rules were not checked because the object was "
               "invalid; correct the existing errors to complete validation")
BLOCK_NAME = "the name must be derived from spec.cidr (10.244.1.0/26 -> 10-244-1-0-26)"


def _object(kind: str, name: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "calyx.dev/v1", "kind": kind, "metadata": {"name": name}}
    if spec is not None:
        obj["spec"] = spec
    return obj


VALID_POOL = {"cidr": "10.20.0.0/16", "blockSize": 26, "ipipMode": "Always", "natOutgoing": False,
              "nodeSelector": "all()"}
VALID_PEER = {"peerIP": "10.0.0.1", "asNumber": 65001}
VALID_CONFIG = {"asNumber": 64512, "nodeToNodeMeshEnabled": True}
VALID_BLOCK = {"cidr": "10.244.1.0/26", "affinity": "host:node-a", "pool": "pool"}


def pool(drop: tuple[str, ...] = (), **change: Any) -> dict[str, Any]:
    return _object("IPPool", "pool", {**{k: v for k, v in VALID_POOL.items() if k not in drop}, **change})


def peer(drop: tuple[str, ...] = (), **change: Any) -> dict[str, Any]:
    return _object("BGPPeer", "peer", {**{k: v for k, v in VALID_PEER.items() if k not in drop}, **change})


def config(**change: Any) -> dict[str, Any]:
    return _object("BGPConfiguration", "default", {**VALID_CONFIG, **change})


def block(name: str = "10-244-1-0-26", drop: tuple[str, ...] = (), **change: Any) -> dict[str, Any]:
    return _object("IPAMBlock", name, {**{k: v for k, v in VALID_BLOCK.items() if k not in drop}, **change})


@dataclass(frozen=True)
class Rejected:
    obj: dict[str, Any]
    message: str


REJECTED = {
    # --- CEL rules (x-kubernetes-validations) ------------------------------------------------
    "ippool-block-larger-than-pool": Rejected(
        pool(cidr="10.20.0.0/24", blockSize=22),
        'The IPPool "pool" is invalid: spec: Invalid value: blockSize must be at least the pool\'s prefix '
        'length (a block cannot be larger than its pool)'),
    "ippool-ipv6": Rejected(   # the IPv4 pattern refuses it too: the rule says why
        pool(cidr="fd00::/16"),
        'The IPPool "pool" is invalid: \n'
        f'* spec.cidr: Invalid value: "fd00::/16": spec.cidr in body should match \'{CIDR}\'\n'
        '* spec.cidr: Invalid value: "fd00::/16": IPv6 pools are not supported yet'),
    "ippool-ipip-and-vxlan": Rejected(
        pool(vxlanMode="Always"),
        'The IPPool "pool" is invalid: spec: Invalid value: ipipMode and vxlanMode cannot both be enabled: '
        'set one of them to Never'),
    "ippool-ipip-and-vxlan-cross-subnet": Rejected(
        pool(ipipMode="CrossSubnet", vxlanMode="CrossSubnet"),
        'The IPPool "pool" is invalid: spec: Invalid value: ipipMode and vxlanMode cannot both be enabled: '
        'set one of them to Never'),
    "bgppeer-node-and-node-selector": Rejected(
        peer(node="node-a", nodeSelector="rack == 'a'"),
        'The BGPPeer "peer" is invalid: spec: Invalid value: node and nodeSelector are mutually exclusive '
        '(set neither for a global peer)'),
    "bgppeer-peer-ip-and-peer-selector": Rejected(
        peer(peerSelector="route-reflector == 'true'"),
        'The BGPPeer "peer" is invalid: spec: Invalid value: exactly one of peerIP and peerSelector must be set'),
    "bgppeer-neither-peer-ip-nor-peer-selector": Rejected(
        peer(drop=("peerIP", "asNumber")),
        'The BGPPeer "peer" is invalid: spec: Invalid value: exactly one of peerIP and peerSelector must be set'),
    "bgppeer-peer-ip-without-as-number": Rejected(
        peer(drop=("asNumber",)),
        'The BGPPeer "peer" is invalid: spec: Invalid value: asNumber is required with peerIP'),
    "bgppeer-as-number-with-peer-selector": Rejected(
        peer(drop=("peerIP",), peerSelector="route-reflector == 'true'"),
        'The BGPPeer "peer" is invalid: spec: Invalid value: asNumber is set only with peerIP: with peerSelector '
        "each selected node's own AS number is used"),
    "ipamblock-name-not-from-cidr": Rejected(
        block(name="10-244-2-0-26"),
        f'The IPAMBlock "10-244-2-0-26" is invalid: <nil>: Invalid value: {BLOCK_NAME}'),
    # --- OpenAPI schema ------------------------------------------------------------------------
    "ippool-cidr-not-ipv4": Rejected(
        pool(cidr="10.300.0.0/16"),
        f'The IPPool "pool" is invalid: spec.cidr: Invalid value: "10.300.0.0/16": spec.cidr in body should '
        f'match \'{CIDR}\''),
    "ippool-block-size-below-20": Rejected(
        pool(blockSize=19),
        'The IPPool "pool" is invalid: spec.blockSize: Invalid value: 19: spec.blockSize in body should be '
        'greater than or equal to 20'),
    "ippool-block-size-above-32": Rejected(
        pool(blockSize=33),
        'The IPPool "pool" is invalid: spec.blockSize: Invalid value: 33: spec.blockSize in body should be '
        'less than or equal to 32'),
    "ippool-block-size-string": Rejected(
        pool(blockSize="26"),
        'The IPPool "pool" is invalid: \n'
        '* spec.blockSize: Invalid value: "string": spec.blockSize in body must be of type integer: "string"\n'
        f'* {NOT_CHECKED}'),
    "ippool-ipip-mode": Rejected(
        pool(ipipMode="Sometimes"),
        'The IPPool "pool" is invalid: \n'
        '* spec.ipipMode: Unsupported value: "Sometimes": supported values: "Always", "CrossSubnet", "Never"\n'
        f'* {NOT_CHECKED}'),
    "ippool-without-cidr": Rejected(
        pool(drop=("cidr",)),
        f'The IPPool "pool" is invalid: \n* spec.cidr: Required value\n* {NOT_CHECKED}'),
    "ippool-without-spec": Rejected(
        _object("IPPool", "pool", None),
        f'The IPPool "pool" is invalid: \n* spec: Required value\n* {NOT_CHECKED}'),
    "ippool-unknown-field": Rejected(    # kubectl asks for strict field validation
        pool(drop=("ipipMode",), ipipmode="Always"),
        'Error from server (BadRequest): error when creating "STDIN": IPPool in version "v1" cannot be '
        'handled as a IPPool: strict decoding error: unknown field "spec.ipipmode"'),
    "bgppeer-peer-port-out-of-range": Rejected(
        peer(peerIP="10.0.0.1:70000"),
        f'The BGPPeer "peer" is invalid: spec.peerIP: Invalid value: "10.0.0.1:70000": spec.peerIP in body '
        f'should match \'{PEER_IP}\''),
    "bgppeer-as-number-zero": Rejected(
        peer(asNumber=0),
        'The BGPPeer "peer" is invalid: spec.asNumber: Invalid value: 0: spec.asNumber in body should be '
        'greater than or equal to 1'),
    "bgppeer-as-number-above-32-bit": Rejected(
        peer(asNumber=4294967296),
        'The BGPPeer "peer" is invalid: spec.asNumber: Invalid value: 4294967296: spec.asNumber in body should '
        'be less than or equal to 4294967295'),
    "bgppeer-hold-time-not-a-duration": Rejected(
        peer(holdTime="90 seconds"),
        f'The BGPPeer "peer" is invalid: spec.holdTime: Invalid value: "90 seconds": spec.holdTime in body '
        f'should match \'{DURATION}\''),
    "bgppeer-password-without-key": Rejected(
        peer(password={"secretKeyRef": {"name": "bgp-passwords"}}),
        f'The BGPPeer "peer" is invalid: \n* spec.password.secretKeyRef.key: Required value\n* {NOT_CHECKED}'),
    "bgppeer-source-address": Rejected(
        peer(sourceAddress="Loopback"),
        'The BGPPeer "peer" is invalid: \n'
        '* spec.sourceAddress: Unsupported value: "Loopback": supported values: "UseNodeIP", "None"\n'
        f'* {NOT_CHECKED}'),
    "bgppeer-empty-node": Rejected(
        peer(node=""),
        'The BGPPeer "peer" is invalid: spec.node: Invalid value: "": spec.node in body should be at least '
        '1 chars long'),
    "bgppeer-without-spec": Rejected(
        _object("BGPPeer", "peer", None),
        f'The BGPPeer "peer" is invalid: \n* spec: Required value\n* {NOT_CHECKED}'),
    "bgpconfiguration-as-number-above-32-bit": Rejected(
        config(asNumber=4294967296),
        'The BGPConfiguration "default" is invalid: spec.asNumber: Invalid value: 4294967296: spec.asNumber '
        'in body should be less than or equal to 4294967295'),
    "bgpconfiguration-log-severity": Rejected(
        config(logSeverityScreen="Verbose"),
        'The BGPConfiguration "default" is invalid: \n'
        '* spec.logSeverityScreen: Unsupported value: "Verbose": supported values: "Debug", "Info", "Warning", '
        '"Error", "Fatal"\n'
        f'* {NOT_CHECKED}'),
    "bgpconfiguration-service-cidr-without-prefix": Rejected(
        config(serviceClusterIPs=[{"cidr": "10.96.0.0"}]),
        f'The BGPConfiguration "default" is invalid: spec.serviceClusterIPs[0].cidr: Invalid value: '
        f'"10.96.0.0": spec.serviceClusterIPs[0].cidr in body should match \'{CIDR}\''),
    "bgpconfiguration-restart-time-not-a-duration": Rejected(
        config(nodeMeshMaxRestartTime="2 minutes"),
        f'The BGPConfiguration "default" is invalid: spec.nodeMeshMaxRestartTime: Invalid value: "2 minutes": '
        f'spec.nodeMeshMaxRestartTime in body should match \'{DURATION}\''),
    "bgppeer-failure-detection-mode": Rejected(
        peer(failureDetectionMode="BFD"),
        'The BGPPeer "peer" is invalid: \n'
        '* spec.failureDetectionMode: Unsupported value: "BFD": supported values: "None", "BFDIfDirectlyConnected"\n'
        f'* {NOT_CHECKED}'),
    "bgpconfiguration-bfd-interval-too-short": Rejected(
        config(bfdMinimumRecvInterval="5ms"),
        'The BGPConfiguration "default" is invalid: spec.bfdMinimumRecvInterval: Invalid value: "5ms": must be '
        'between 10ms and 60s'),
    "bgpconfiguration-bfd-send-interval-too-long": Rejected(
        config(bfdMinimumSendInterval="2m"),
        'The BGPConfiguration "default" is invalid: spec.bfdMinimumSendInterval: Invalid value: "2m": must be '
        'between 10ms and 60s'),
    "bgpconfiguration-bfd-multiplier-zero": Rejected(
        config(bfdMultiplier=0),
        'The BGPConfiguration "default" is invalid: spec.bfdMultiplier: Invalid value: 0: spec.bfdMultiplier '
        'in body should be greater than or equal to 1'),
    "ipamblock-affinity-not-host": Rejected(
        block(affinity="node-a"),
        'The IPAMBlock "10-244-1-0-26" is invalid: spec.affinity: Invalid value: "node-a": spec.affinity in '
        "body should match '^host:.+$'"),
}

# An update, not a create: the block exists with VALID_BLOCK's CIDR. Its name is derived from
# the CIDR, so the name rule objects as well as the immutability rule.
CIDR_CHANGE = Rejected(
    block(cidr="10.244.2.0/26"),
    'The IPAMBlock "10-244-1-0-26" is invalid: \n'
    f'* <nil>: Invalid value: {BLOCK_NAME}\n'
    '* spec.cidr: Invalid value: "10.244.2.0/26": cidr is immutable')

ACCEPTED = {
    "ippool": pool(),
    "ippool-block-as-large-as-pool": pool(cidr="10.20.0.0/24", blockSize=24),
    "ippool-vxlan-never": pool(vxlanMode="Never"),
    "ippool-vxlan-always": pool(ipipMode="Never", vxlanMode="Always"),
    "ippool-vxlan-cross-subnet": pool(drop=("ipipMode",), vxlanMode="CrossSubnet"),
    "bgppeer": peer(),
    "bgppeer-with-port-and-password": peer(peerIP="10.0.0.1:1179", node="node-a", holdTime="90s",
                                           password={"secretKeyRef": {"name": "bgp-passwords", "key": "a"}}),
    "bgppeer-peer-selector": peer(drop=("peerIP", "asNumber"), nodeSelector="all()",
                                  peerSelector="route-reflector == 'true'"),
    "bgpconfiguration": config(serviceClusterIPs=[{"cidr": "10.96.0.0/12"}], nodeMeshMaxRestartTime="120s"),
    "ipamblock": block(),
}


def _shape(message: str) -> tuple[str, frozenset[str]]:
    """(first line, the set of "* " lines): the server lists several errors in no fixed order."""
    lines = [line.rstrip() for line in message.strip().splitlines()]
    return lines[0], frozenset(lines[1:])


@pytest.fixture
def kubectl(kube: KubeAccess) -> Kubectl:
    """kubectl as admin on the session's control plane (the chart's CRDs installed; every Calyx
    object a test made is deleted after it)."""
    return Kubectl(find_kubectl(), kube.kubeconfig)


def _cel_rules(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        return [*node.get("x-kubernetes-validations", []), *(r for v in node.values() for r in _cel_rules(v))]
    if isinstance(node, list):
        return [r for v in node for r in _cel_rules(v)]
    return []


def test_every_cel_rule_has_a_rejected_object() -> None:
    messages = "\n".join(r.message for r in (*REJECTED.values(), CIDR_CHANGE))
    rules = [r for path in sorted(CRD_DIR.glob("*.yaml")) for r in _cel_rules(yaml.safe_load(path.read_text()))]
    assert len(rules) == 11, rules     # BGPPeer 4, IPAMBlock 2, IPPool 3, BGPConfiguration 2
    missing = [r["rule"] for r in rules if r["message"] not in messages]
    assert missing == [], f"CEL rules no test breaks: {missing}"


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_valid_objects_are_accepted(kubectl: Kubectl, name: str) -> None:
    obj = ACCEPTED[name]
    proc = kubectl.apply([obj], check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{obj['kind'].lower()}.calyx.dev/{obj['metadata']['name']} created"


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_invalid_objects_are_rejected_with_the_message_the_user_sees(kubectl: Kubectl, name: str) -> None:
    case = REJECTED[name]
    proc = kubectl.apply([copy.deepcopy(case.obj)], check=False)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert _shape(proc.stderr) == _shape(case.message), f"kubectl apply said:\n{proc.stderr}"
    kind = f"{case.obj['kind'].lower()}.calyx.dev"
    assert not kubectl.exists(kind, case.obj["metadata"]["name"])


def test_block_cidr_cannot_change(kubectl: Kubectl) -> None:
    kubectl.apply([block()])
    proc = kubectl.apply([CIDR_CHANGE.obj], check=False)
    assert proc.returncode == 1, proc.stdout
    assert _shape(proc.stderr) == _shape(CIDR_CHANGE.message), f"kubectl apply said:\n{proc.stderr}"
    assert kubectl.get("ipamblock.calyx.dev", "10-244-1-0-26")["spec"]["cidr"] == "10.244.1.0/26"
