"""NetworkPolicy for the pods of one node: policies, pods and namespaces -> what each local
endpoint lets in and out (pure).

The result is shaped for an nftables dataplane that keeps rules apart from membership:

- every pod peer of a rule (a pod selector, a namespace selector, or both, as seen from the
  policy's namespace) becomes an :class:`AddressSet` of pod IPs, named after what it selects,
  so the same peer in two policies is one set, and a pod that starts or stops matching changes
  that set's elements and nothing else;
- an egress rule to a named port becomes a :class:`NamedPortSet` of (pod IP, protocol, port)
  elements, because the name means a different number on each destination pod; an ingress
  rule's named port is resolved on the local pod itself;
- an endpoint no policy selects in a direction is unrestricted in it (``None``); one that some
  policy selects gets the union of those policies' rules (an empty tuple: deny all).

Pods without an address, hostNetwork pods and pods being deleted are not peers (they have no
pod IP of their own), and only pods of ``node`` are endpoints.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Iterable, Mapping, Protocol, Sequence

from calyx import model, naming
from calyx import networkpolicy as np
from calyx.selector import kubernetes_text


@dataclass(frozen=True)
class ContainerPort:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True)
class PolicyPod:
    """A pod as policy sees it."""

    namespace: str
    name: str
    node: str | None
    ip: IPv4Address | None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)
    ports: tuple[ContainerPort, ...] = ()

    def port_named(self, name: str, protocol: str) -> int | None:
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


def policy_pod(pod: model.PodInfo) -> PolicyPod:
    """A Pod as policy sees it: no address when it has none of its own (hostNetwork, being
    deleted, not started)."""
    own_ip = pod.ips[0] if pod.ips and not pod.host_network and not pod.deleting else None
    return PolicyPod(pod.namespace, pod.name, pod.node, own_ip, pod.label_map,
                     tuple(ContainerPort(*p) for p in pod.container_ports))


@dataclass(frozen=True)
class PortRange:
    protocol: str
    first: int | None = None       # None: every port of the protocol
    last: int | None = None


@dataclass(frozen=True)
class AllowRule:
    """Traffic allowed in one direction: from/to ``peer_set`` (an :class:`AddressSet` name) or
    ``block``, or anyone when both are None; on ``ports`` (None: any) or, instead, to the
    (address, protocol, port) elements of ``named_port_set``."""

    peer_set: str | None = None
    block: np.IPBlock | None = None
    ports: tuple[PortRange, ...] | None = None
    named_port_set: str | None = None


@dataclass(frozen=True)
class EndpointPolicy:
    """What one local pod allows: None in a direction no policy selects it for."""

    pod: PolicyPod
    policies: tuple[tuple[str, str], ...]
    ingress: tuple[AllowRule, ...] | None
    egress: tuple[AllowRule, ...] | None


@dataclass(frozen=True)
class AddressSet:
    name: str
    description: str
    members: frozenset[IPv4Address]


@dataclass(frozen=True)
class NamedPortSet:
    name: str
    description: str
    members: frozenset[tuple[IPv4Address, str, int]]


@dataclass(frozen=True)
class NodePolicy:
    endpoints: Mapping[str, EndpointPolicy]          # by "namespace/name"
    address_sets: Mapping[str, AddressSet]
    named_port_sets: Mapping[str, NamedPortSet]


def set_name(kind: str, description: str) -> str:
    """A short stable set name (nftables limits names; the description says what it holds)."""
    return f"{kind}-{hashlib.sha256(description.encode()).hexdigest()[:12]}"


def describe_peer(policy_namespace: str, peer: np.PodPeer) -> str:
    """What a pod peer selects, in words: also what its set is named after."""
    pods = kubernetes_text(peer.pods)
    if peer.namespaces is None:
        return f"pods {pods} in namespace {policy_namespace}"
    return f"pods {pods} in namespaces {kubernetes_text(peer.namespaces)}"


def describe_named_port(policy_namespace: str, peer: np.PodPeer | None, port: np.PortMatch) -> str:
    """What a named-port set holds, in words (``peer`` None: the port on every pod)."""
    scope = describe_peer(policy_namespace, peer) if peer else "every pod"
    return f"{port.protocol} port {port.port!r} of {scope}"


class SetNamer(Protocol):
    """Where rules get the names of the sets they refer to; whoever names a set also answers
    for its members."""

    def address_set(self, policy_namespace: str, peer: np.PodPeer) -> str: ...

    def named_port_set(self, policy_namespace: str, peer: np.PodPeer | None, port: np.PortMatch) -> str: ...


class _Calc:
    """The sets of one calculation from scratch, each filled by a scan of the pods when a rule
    first names it."""

    def __init__(self, pods: Iterable[PolicyPod], namespaces: Mapping[str, Mapping[str, str]]):
        self.peers = [p for p in pods if p.ip is not None]
        self.by_namespace: dict[str, list[PolicyPod]] = {}
        for pod in self.peers:
            self.by_namespace.setdefault(pod.namespace, []).append(pod)
        self.namespaces = namespaces
        self.address_sets: dict[str, AddressSet] = {}
        self.named_port_sets: dict[str, NamedPortSet] = {}

    def _members(self, policy_namespace: str, peer: np.PodPeer) -> list[PolicyPod]:
        if peer.namespaces is None:
            chosen = [policy_namespace]
        else:
            chosen = [ns for ns, labels in self.namespaces.items() if peer.namespaces.matches(labels)]
        return [p for ns in chosen for p in self.by_namespace.get(ns, ()) if peer.pods.matches(p.labels)]

    def address_set(self, policy_namespace: str, peer: np.PodPeer) -> str:
        description = describe_peer(policy_namespace, peer)
        name = set_name("pods", description)
        if name not in self.address_sets:
            members = frozenset(p.ip for p in self._members(policy_namespace, peer))
            self.address_sets[name] = AddressSet(name, description, members)
        return name

    def named_port_set(self, policy_namespace: str, peer: np.PodPeer | None,
                       port: np.PortMatch) -> str:
        description = describe_named_port(policy_namespace, peer, port)
        name = set_name("ports", description)
        if name not in self.named_port_sets:
            pods = self._members(policy_namespace, peer) if peer else self.peers
            members = frozenset((p.ip, port.protocol, n) for p in pods
                                if (n := p.port_named(str(port.port), port.protocol)) is not None)
            self.named_port_sets[name] = NamedPortSet(name, description, members)
        return name


def _rules(policy: np.NetworkPolicy, rule: np.Rule, local: PolicyPod, direction: str,
           sets: SetNamer) -> list[AllowRule]:
    numeric, named = _split_ports(rule.ports)
    ports: tuple[PortRange, ...] | None = None
    if rule.ports is not None:
        resolved = list(numeric)
        if direction == np.INGRESS:        # a named port means the local pod's own port
            for p in named:
                if (n := local.port_named(str(p.port), p.protocol)) is not None:
                    resolved.append(PortRange(p.protocol, n, n))
            named = []
        if not resolved and not named:
            return []                      # no port of this rule exists here: it allows nothing
        ports = tuple(resolved)
    peers: list[np.Peer | None] = list(rule.peers) if rule.peers is not None else [None]
    out: list[AllowRule] = []
    for peer in peers:
        pod_peer = peer if isinstance(peer, np.PodPeer) else None
        set_ref = sets.address_set(policy.namespace, pod_peer) if pod_peer else None
        block = peer if isinstance(peer, np.IPBlock) else None
        if ports is None or ports:
            out.append(AllowRule(set_ref, block, ports))
        for p in named:                    # egress to a named port: per destination pod
            if block is None:
                out.append(AllowRule(named_port_set=sets.named_port_set(policy.namespace, pod_peer, p)))
    return out


def _split_ports(ports: tuple[np.PortMatch, ...] | None) -> tuple[list[PortRange], list[np.PortMatch]]:
    numeric: list[PortRange] = []
    named: list[np.PortMatch] = []
    for p in ports or ():
        if isinstance(p.port, str):
            named.append(p)
        else:
            numeric.append(PortRange(p.protocol, p.port, p.end_port or p.port)
                           if p.port is not None else PortRange(p.protocol))
    return numeric, named


def endpoint_key(pod: PolicyPod) -> str:
    return f"{pod.namespace}/{pod.name}"


def is_endpoint(pod: PolicyPod, node: str) -> bool:
    """Whether ``pod`` is one of ``node``'s endpoints: there, with an address of its own."""
    return pod.node == node and pod.ip is not None


def endpoint_policy(pod: PolicyPod, selecting: Sequence[np.NetworkPolicy], sets: SetNamer) -> EndpointPolicy:
    """What local ``pod`` allows, given the policies selecting it (in key order); the sets its
    rules refer to are named by ``sets``."""
    ingress: list[AllowRule] | None = None
    egress: list[AllowRule] | None = None
    for policy in selecting:
        if np.INGRESS in policy.types:
            ingress = (ingress or []) + [r for rule in policy.ingress
                                         for r in _rules(policy, rule, pod, np.INGRESS, sets)]
        if np.EGRESS in policy.types:
            egress = (egress or []) + [r for rule in policy.egress
                                       for r in _rules(policy, rule, pod, np.EGRESS, sets)]
    return EndpointPolicy(pod, tuple(p.key for p in selecting),
                          _unique(ingress) if ingress is not None else None,
                          _unique(egress) if egress is not None else None)


def node_policy(node: str, policies: Iterable[np.NetworkPolicy], pods: Iterable[PolicyPod],
                namespaces: Mapping[str, Mapping[str, str]]) -> NodePolicy:
    """What every pod of ``node`` allows, and the sets its rules refer to, calculated from
    scratch (every selector against every pod): the reference :class:`felix.policyindex.PolicyIndex`
    keeps current change by change."""
    pods = list(pods)
    policies = sorted(policies, key=lambda p: p.key)
    calc = _Calc(pods, namespaces)
    endpoints: dict[str, EndpointPolicy] = {}
    for pod in pods:
        if not is_endpoint(pod, node):
            continue
        selecting = [p for p in policies if p.selects(pod.namespace, pod.labels)]
        endpoints[endpoint_key(pod)] = endpoint_policy(pod, selecting, calc)
    return NodePolicy(endpoints, calc.address_sets, calc.named_port_sets)


def _unique(rules: list[AllowRule]) -> tuple[AllowRule, ...]:
    return tuple(dict.fromkeys(rules))


def _port_ok(ranges: tuple[PortRange, ...] | None, protocol: str, port: int) -> bool:
    return ranges is None or any(
        r.protocol == protocol and (r.first is None or r.first <= port <= (r.last or r.first))
        for r in ranges)


def _rule_allows(policy: NodePolicy, rule: AllowRule, peer: IPv4Address, protocol: str,
                 port: int, local: IPv4Address, direction: str) -> bool:
    if rule.named_port_set is not None:
        target = peer if direction == np.EGRESS else local
        return (target, protocol, port) in policy.named_port_sets[rule.named_port_set].members
    if rule.peer_set is not None and peer not in policy.address_sets[rule.peer_set].members:
        return False
    if rule.block is not None and (peer not in rule.block.cidr
                                   or any(peer in e for e in rule.block.excepted)):
        return False
    return _port_ok(rule.ports, protocol, port)


def allows(policy: NodePolicy, endpoint: str, direction: str, peer: IPv4Address, protocol: str,
           port: int) -> bool:
    """Whether local ``endpoint`` ("namespace/name") lets a new connection in (``Ingress``,
    from ``peer`` to its ``port``) or out (``Egress``, to ``peer``'s ``port``): the verdict
    the dataplane must reach, for tests and for explaining a drop."""
    ep = policy.endpoints[endpoint]
    rules = ep.ingress if direction == np.INGRESS else ep.egress
    if rules is None:
        return True
    local = ep.pod.ip
    return any(_rule_allows(policy, r, peer, protocol, port, local, direction) for r in rules)


def endpoint_devices(policy: NodePolicy) -> dict[str, str]:
    """Each local endpoint's cali device, by "namespace/name"."""
    return {key: naming.cali_interface_name(ep.pod.namespace, ep.pod.name)
            for key, ep in policy.endpoints.items()}

