"""NetworkPolicy for the pods of one node, kept current change by change (pure).

:class:`PolicyIndex` holds what :func:`felix.policycalc.node_policy` would return for the last
:class:`calyx.model.Snapshot` it was given, and the indexes that let it follow the next one
without starting over. :meth:`PolicyIndex.update` compares the new snapshot's pods, namespaces
and NetworkPolicies with the previous ones (unchanged objects are the same objects, or equal)
and touches only what changed:

- a pod added, removed or changed is tested against each set in use (O(sets)): it enters or
  leaves those sets, and if it is local its own endpoint is recalculated;
- a namespace whose labels change, appear or go is tested against the sets with a namespace
  selector: where the verdict for that namespace flips, its pods enter or leave the set;
- a policy added, changed or deleted recalculates the local endpoints of its namespace that
  it selects or selected.

Sets are reference-counted by the endpoints whose rules name them: a set is filled (from the
pods of the namespaces it can hold) when the first rule names it and dropped when the last one
no longer does. The result is equal to :func:`~felix.policycalc.node_policy` of the same
inputs, the reference the tests compare it with. A new index fed its first snapshot
calculates everything, as felix does at start.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Hashable, Iterable, Mapping, TypeVar, Union

from calyx import model
from calyx import networkpolicy as np
from calyx.selector import Expr
from felix.policycalc import (AddressSet, EndpointPolicy, NamedPortSet, NodePolicy, PolicyPod,
                              describe_named_port, describe_peer, endpoint_policy,
                              is_endpoint, policy_pod, set_name)

PodKey = tuple[str, str]                           # (namespace, name), as in the snapshot
NamedPortElement = tuple[IPv4Address, str, int]    # (pod IP, protocol, port number)
Element = Union[IPv4Address, NamedPortElement]
Labels = Mapping[str, str]

K = TypeVar("K", bound=Hashable)
_ABSENT = object()


def _endpoint_name(key: PodKey) -> str:
    """A local endpoint's key in the result: "namespace/name"."""
    return f"{key[0]}/{key[1]}"


def _in_scope(policy_namespace: str, peer: np.PodPeer, pod: PolicyPod,
              namespaces: Mapping[str, Labels]) -> bool:
    """Whether ``peer``, as written in a policy of ``policy_namespace``, selects ``pod``."""
    if peer.namespaces is None:
        if pod.namespace != policy_namespace:
            return False
    else:
        labels = namespaces.get(pod.namespace)
        if labels is None or not peer.namespaces.matches(labels):
            return False
    return peer.pods.matches(pod.labels)


@dataclass(frozen=True)
class PeerSetDefinition:
    """An address set: the IPs of the pods a rule's pod peer selects."""

    name: str
    description: str
    policy_namespace: str
    peer: np.PodPeer

    @property
    def namespace_selector(self) -> Expr | None:
        return self.peer.namespaces

    @property
    def namespace(self) -> str | None:
        """The one namespace the set's pods can be in, if it is limited to one."""
        return self.policy_namespace if self.peer.namespaces is None else None

    def element(self, pod: PolicyPod, namespaces: Mapping[str, Labels]) -> IPv4Address | None:
        return pod.ip if _in_scope(self.policy_namespace, self.peer, pod, namespaces) else None


@dataclass(frozen=True)
class NamedPortSetDefinition:
    """A named-port set: (IP, protocol, number) of every selected pod that has a container
    port of that name (``peer`` None: every pod)."""

    name: str
    description: str
    policy_namespace: str
    peer: np.PodPeer | None
    port: np.PortMatch

    @property
    def namespace_selector(self) -> Expr | None:
        return self.peer.namespaces if self.peer is not None else None

    @property
    def namespace(self) -> str | None:
        if self.peer is None or self.peer.namespaces is not None:
            return None
        return self.policy_namespace

    def element(self, pod: PolicyPod, namespaces: Mapping[str, Labels]) -> NamedPortElement | None:
        if self.peer is not None and not _in_scope(self.policy_namespace, self.peer, pod, namespaces):
            return None
        number = pod.port_named(str(self.port.port), self.port.protocol)
        return (pod.ip, self.port.protocol, number) if number is not None and pod.ip is not None else None


SetDefinition = Union[PeerSetDefinition, NamedPortSetDefinition]


class _References:
    """A :class:`felix.policycalc.SetNamer` that notes which sets one endpoint's rules name."""

    def __init__(self) -> None:
        self.named: dict[str, SetDefinition] = {}

    def address_set(self, policy_namespace: str, peer: np.PodPeer) -> str:
        description = describe_peer(policy_namespace, peer)
        name = set_name("pods", description)
        self.named.setdefault(name, PeerSetDefinition(name, description, policy_namespace, peer))
        return name

    def named_port_set(self, policy_namespace: str, peer: np.PodPeer | None, port: np.PortMatch) -> str:
        description = describe_named_port(policy_namespace, peer, port)
        name = set_name("ports", description)
        self.named.setdefault(name, NamedPortSetDefinition(name, description, policy_namespace, peer, port))
        return name


@dataclass
class _IndexedSet:
    """A set in use: its definition, how many endpoints name it, its element per member pod."""

    definition: SetDefinition
    references: int = 0
    elements: dict[PodKey, Element] = field(default_factory=dict)


@dataclass(frozen=True)
class _Endpoint:
    policy: EndpointPolicy
    sets: frozenset[str]          # the sets its rules name (references held)


@dataclass(frozen=True)
class PolicyDelta:
    """What one :meth:`PolicyIndex.update` changed in the result: local endpoints added,
    removed or with other rules; sets added, removed or with other members (by name); and
    how many times a pod was tested against a set's selectors to find out."""

    endpoints: frozenset[str] = frozenset()
    sets: frozenset[str] = frozenset()
    evaluations: int = 0


def _changed_keys(old: Mapping[K, object], new: Mapping[K, object]) -> list[K]:
    """Keys added, removed or whose value changed; cheap when the values are the same objects."""
    if old is new:
        return []
    changed = [k for k, v in new.items() if (o := old.get(k, _ABSENT)) is not v and o != v]
    changed.extend(k for k in old if k not in new)
    return changed


class PolicyIndex:
    """The NetworkPolicy of ``node``'s pods, following snapshot after snapshot."""

    def __init__(self, node: str):
        self.node = node
        self._snapshot = model.Snapshot()                         # what the next one is compared with
        self._pods: dict[str, dict[PodKey, PolicyPod]] = {}       # pods with an IP, by namespace
        self._local: dict[str, set[PodKey]] = {}                  # the node's endpoints, by namespace
        self._namespaces: dict[str, Labels] = {}
        self._policies: dict[str, dict[tuple[str, str], np.NetworkPolicy]] = {}   # by namespace
        self._sets: dict[str, _IndexedSet] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._address_sets: dict[str, AddressSet] = {}
        self._named_port_sets: dict[str, NamedPortSet] = {}
        self._result = NodePolicy({}, {}, {})
        # what the update under way touched
        self._dirty_endpoints: set[PodKey] = set()
        self._touched_sets: set[str] = set()
        self._evaluations = 0

    @property
    def policy(self) -> NodePolicy:
        """The result for the last snapshot (a value of its own: later updates leave it be)."""
        return self._result

    def update(self, snapshot: model.Snapshot) -> PolicyDelta:
        """Follow ``snapshot``: apply what changed since the previous one."""
        previous, self._snapshot = self._snapshot, snapshot
        self._dirty_endpoints, self._touched_sets, self._evaluations = set(), set(), 0
        for name in _changed_keys(previous.namespaces, snapshot.namespaces):
            self._namespace_changed(name, snapshot.namespaces.get(name))
        for key in _changed_keys(previous.pods, snapshot.pods):
            pod = snapshot.pods.get(key)
            self._pod_changed(key, policy_pod(pod) if pod is not None else None)
        for key in _changed_keys(previous.network_policies, snapshot.network_policies):
            self._policy_changed(previous.network_policies.get(key), snapshot.network_policies.get(key))
        changed_endpoints = {_endpoint_name(key) for key in self._dirty_endpoints
                             if self._recalculate_endpoint(key)}
        changed_sets = self._publish_sets()
        if changed_endpoints or changed_sets:
            self._result = NodePolicy({k: e.policy for k, e in self._endpoints.items()},
                                      dict(self._address_sets), dict(self._named_port_sets))
        return PolicyDelta(frozenset(changed_endpoints), frozenset(changed_sets), self._evaluations)

    # --- inputs ---------------------------------------------------------------------------

    def _namespace_changed(self, name: str, labels: Labels | None) -> None:
        before = self._namespaces.get(name)
        if labels is None:
            self._namespaces.pop(name, None)
        else:
            self._namespaces[name] = labels
        pods = self._pods.get(name, {})
        if not pods:
            return
        for indexed in self._sets.values():
            selector = indexed.definition.namespace_selector
            if selector is None:
                continue
            was = before is not None and selector.matches(before)
            now = labels is not None and selector.matches(labels)
            if was != now:
                for key, pod in pods.items():
                    self._place(indexed, key, pod)

    def _pod_changed(self, key: PodKey, pod: PolicyPod | None) -> None:
        namespace = key[0]
        if pod is not None and pod.ip is None:
            pod = None                                  # no address of its own: neither peer nor endpoint
        in_namespace = self._pods.setdefault(namespace, {})
        before = in_namespace.get(key)
        if before == pod:
            return
        local = self._local.setdefault(namespace, set())
        if (before is not None and is_endpoint(before, self.node)) or (pod is not None and is_endpoint(pod, self.node)):
            self._dirty_endpoints.add(key)
        if pod is None:
            del in_namespace[key]
            local.discard(key)
        else:
            in_namespace[key] = pod
            if is_endpoint(pod, self.node):
                local.add(key)
            else:
                local.discard(key)
        for indexed in self._sets.values():
            self._place(indexed, key, pod)

    def _policy_changed(self, before: np.NetworkPolicy | None, after: np.NetworkPolicy | None) -> None:
        policy = after or before
        assert policy is not None
        in_namespace = self._policies.setdefault(policy.namespace, {})
        if after is None:
            del in_namespace[policy.key]
        else:
            in_namespace[policy.key] = after
        pods = self._pods.get(policy.namespace, {})
        for key in self._local.get(policy.namespace, ()):
            labels = pods[key].labels
            if any(p is not None and p.pod_selector.matches(labels) for p in (before, after)):
                self._dirty_endpoints.add(key)

    # --- sets -----------------------------------------------------------------------------

    def _place(self, indexed: _IndexedSet, key: PodKey, pod: PolicyPod | None) -> None:
        """Make ``pod`` (None: gone) a member of ``indexed`` or not, as it now qualifies."""
        element = None
        if pod is not None:
            self._evaluations += 1
            element = indexed.definition.element(pod, self._namespaces)
        if indexed.elements.get(key) == element:
            return
        if element is None:
            del indexed.elements[key]
        else:
            indexed.elements[key] = element
        self._touched_sets.add(indexed.definition.name)

    def _candidates(self, definition: SetDefinition) -> Iterable[tuple[PodKey, PolicyPod]]:
        """The pods that can be members of ``definition``: those of the namespaces it reaches."""
        if definition.namespace is not None:
            namespaces: Iterable[str] = (definition.namespace,)
        elif (selector := definition.namespace_selector) is not None:
            namespaces = [ns for ns, labels in self._namespaces.items() if selector.matches(labels)]
        else:
            namespaces = list(self._pods)
        for ns in namespaces:
            yield from self._pods.get(ns, {}).items()

    def _acquire(self, definition: SetDefinition) -> None:
        indexed = self._sets.get(definition.name)
        if indexed is None:
            candidates = list(self._candidates(definition))
            self._evaluations += len(candidates)
            elements = {key: element for key, pod in candidates
                        if (element := definition.element(pod, self._namespaces)) is not None}
            indexed = self._sets[definition.name] = _IndexedSet(definition, elements=elements)
            self._touched_sets.add(definition.name)
        indexed.references += 1

    def _release(self, name: str) -> None:
        indexed = self._sets[name]
        indexed.references -= 1
        if indexed.references == 0:
            del self._sets[name]
            self._touched_sets.add(name)

    def _publish_sets(self) -> set[str]:
        """Bring the result's sets up to date with the touched ones; the names of those that
        differ."""
        changed = set()
        for name in self._touched_sets:
            indexed = self._sets.get(name)
            if indexed is None:
                if (self._address_sets.pop(name, None) or self._named_port_sets.pop(name, None)) is not None:
                    changed.add(name)
                continue
            definition = indexed.definition
            if isinstance(definition, PeerSetDefinition):
                addresses = frozenset(indexed.elements.values())
                if name not in self._address_sets or self._address_sets[name].members != addresses:
                    self._address_sets[name] = AddressSet(name, definition.description, addresses)
                    changed.add(name)
            else:
                ports = frozenset(indexed.elements.values())
                if name not in self._named_port_sets or self._named_port_sets[name].members != ports:
                    self._named_port_sets[name] = NamedPortSet(name, definition.description, ports)
                    changed.add(name)
        return changed

    # --- endpoints ------------------------------------------------------------------------

    def _recalculate_endpoint(self, key: PodKey) -> bool:
        """Recalculate one local endpoint (or forget it); whether its policy changed."""
        pod = self._pods.get(key[0], {}).get(key)
        before = self._endpoints.pop(_endpoint_name(key), None)
        after: _Endpoint | None = None
        if pod is not None and is_endpoint(pod, self.node):
            selecting = sorted((p for p in self._policies.get(pod.namespace, {}).values()
                                if p.pod_selector.matches(pod.labels)), key=lambda p: p.key)
            references = _References()
            policy = endpoint_policy(pod, selecting, references)
            for definition in references.named.values():      # before releasing: a kept set stays
                self._acquire(definition)
            after = self._endpoints[_endpoint_name(key)] = _Endpoint(policy, frozenset(references.named))
        for name in before.sets if before is not None else ():
            self._release(name)
        return (before.policy if before else None) != (after.policy if after else None)
