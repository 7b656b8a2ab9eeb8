"""Kubernetes NetworkPolicy (``networking.k8s.io/v1``) as typed, validated data.

Pure calculation: :func:`parse_network_policy` turns the raw object into a frozen
:class:`NetworkPolicy`, or raises :class:`calyx.model.ValidationError` naming the policy, the
field and the value. The semantics kept here are the API's own:

- ``policyTypes`` absent means Ingress, plus Egress when the policy has egress rules;
- a rule with no ``from``/``to`` admits every peer, one with no ``ports`` every port;
- a peer is an ``ipBlock`` (a CIDR with exceptions inside it), or a ``podSelector`` and/or a
  ``namespaceSelector``: a pod selector alone means pods of the policy's namespace, a
  namespace selector alone means every pod of the matching namespaces, both together the
  matching pods of the matching namespaces, and an empty selector (``{}``) matches all;
- a port is a number or a container port's name, with a protocol (TCP by default) and an
  ``endPort`` that makes a numeric port a range.

Label selectors (``matchLabels`` / ``matchExpressions``) become :mod:`calyx.selector`
expressions. IPv6 ``ipBlock`` CIDRs are kept aside (Calyx is IPv4 only) rather than refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, ip_network
from typing import Any, Mapping

from calyx import selector as sel
from calyx.model import ValidationError, Where, namespaced_metadata

KIND = "NetworkPolicy"
PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS = "Ingress"
EGRESS = "Egress"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class IPBlock:
    """``cidr`` minus the ``excepted`` CIDRs inside it."""

    cidr: IPv4Network
    excepted: tuple[IPv4Network, ...] = ()


@dataclass(frozen=True)
class PodPeer:
    """Pods matching ``pods`` in the namespaces matching ``namespaces``; ``namespaces`` None
    means the policy's own namespace only."""

    pods: sel.Expr
    namespaces: sel.Expr | None


Peer = IPBlock | PodPeer


@dataclass(frozen=True)
class PortMatch:
    """A protocol and a port: a number (a range up to ``end_port``), a container port's name,
    or None for every port of the protocol."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """One ingress or egress rule: traffic with any of ``peers`` (None: every peer, including
    outside the cluster) on any of ``ports`` (None: every port and protocol)."""

    peers: tuple[Peer, ...] | None
    ports: tuple[PortMatch, ...] | None


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: sel.Expr
    types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        return namespace == self.namespace and self.pod_selector.matches(labels)


def label_selector(where: Where, path: str, value: Any) -> sel.Expr:
    """A ``metav1.LabelSelector`` as a selector expression; ``{}`` matches everything."""
    if value is None:
        return sel.All()
    if not isinstance(value, Mapping):
        raise where.error(path, value, "not a label selector (expected matchLabels/matchExpressions)")
    terms: list[sel.Expr] = []
    labels = value.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise where.error(f"{path}.matchLabels", labels, "expected a map of label to value")
    for key, val in sorted(labels.items()):
        if not isinstance(val, str):
            raise where.error(f"{path}.matchLabels.{key}", val, "label values are strings")
        terms.append(sel.Equals(str(key), val))
    expressions = value.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise where.error(f"{path}.matchExpressions", expressions, "expected a list")
    for i, expr in enumerate(expressions):
        terms.append(_requirement(where, f"{path}.matchExpressions[{i}]", expr))
    if not terms:
        return sel.All()
    return terms[0] if len(terms) == 1 else sel.And(tuple(terms))


def _requirement(where: Where, path: str, expr: Any) -> sel.Expr:
    if not isinstance(expr, Mapping) or not isinstance(expr.get("key"), str) or not expr.get("key"):
        raise where.error(path, expr, "a requirement needs a key and an operator")
    key, operator, values = expr["key"], expr.get("operator"), expr.get("values") or []
    if operator not in OPERATORS:
        raise where.error(f"{path}.operator", operator, f"must be one of {', '.join(OPERATORS)}")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise where.error(f"{path}.values", values, "expected a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise where.error(f"{path}.values", values, f"{operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise where.error(f"{path}.values", values, f"{operator} takes no values")
    if operator == "In":
        return sel.In(key, frozenset(values))
    if operator == "NotIn":
        return sel.NotIn(key, frozenset(values))
    return sel.Has(key) if operator == "Exists" else sel.Not(sel.Has(key))


def _ip_block(where: Where, path: str, raw: Any) -> IPBlock | None:
    """The block, or None for an IPv6 one (not Calyx's)."""
    if not isinstance(raw, Mapping):
        raise where.error(path, raw, "expected an object with cidr and except")
    try:
        cidr = ip_network(raw.get("cidr"), strict=False)
    except (TypeError, ValueError):
        raise where.error(f"{path}.cidr", raw.get("cidr"), "not a valid CIDR") from None
    if cidr.version == 6:
        return None
    excepted = []
    for i, text in enumerate(raw.get("except") or []):
        try:
            net = ip_network(text, strict=False)
        except (TypeError, ValueError):
            raise where.error(f"{path}.except[{i}]", text, "not a valid CIDR") from None
        if net.version != 4 or not net.subnet_of(cidr):
            raise where.error(f"{path}.except[{i}]", text, f"must be inside cidr {cidr}")
        excepted.append(net)
    return IPBlock(cidr, tuple(excepted))


def _peers(where: Where, path: str, raw: Any) -> tuple[Peer, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise where.error(path, raw, "expected a list of peers")
    if not raw:
        return None          # an empty list, like an absent one, admits every peer
    peers: list[Peer] = []
    for i, item in enumerate(raw):
        here = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise where.error(here, item, "expected a peer object")
        if "ipBlock" in item:
            if "podSelector" in item or "namespaceSelector" in item:
                raise where.error(here, item, "ipBlock cannot be combined with a selector")
            block = _ip_block(where, f"{here}.ipBlock", item["ipBlock"])
            if block is not None:
                peers.append(block)
            continue
        if "podSelector" not in item and "namespaceSelector" not in item:
            raise where.error(here, item, "a peer needs podSelector, namespaceSelector or ipBlock")
        pods = label_selector(where, f"{here}.podSelector", item.get("podSelector"))
        namespaces = (label_selector(where, f"{here}.namespaceSelector", item["namespaceSelector"])
                      if "namespaceSelector" in item else None)
        peers.append(PodPeer(pods, namespaces))
    return tuple(peers)


def _ports(where: Where, path: str, raw: Any) -> tuple[PortMatch, ...] | None:
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise where.error(path, raw, "expected a list of ports")
    ports = []
    for i, item in enumerate(raw):
        here = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise where.error(here, item, "expected a port object")
        protocol = item.get("protocol") or "TCP"
        if protocol not in PROTOCOLS:
            raise where.error(f"{here}.protocol", protocol, f"must be one of {', '.join(PROTOCOLS)}")
        port, end_port = item.get("port"), item.get("endPort")
        if isinstance(port, bool) or not (port is None or isinstance(port, (int, str))):
            raise where.error(f"{here}.port", port, "a port is a number or a container port's name")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise where.error(f"{here}.port", port, "must be within 1-65535")
        if isinstance(port, str) and not port:
            raise where.error(f"{here}.port", port, "an empty port name")
        if end_port is not None:
            if not isinstance(port, int):
                raise where.error(f"{here}.endPort", end_port, "needs a numeric port")
            if isinstance(end_port, bool) or not isinstance(end_port, int) or not port <= end_port <= 65535:
                raise where.error(f"{here}.endPort", end_port, f"must be within {port}-65535")
        ports.append(PortMatch(protocol, port, end_port))
    return tuple(ports)


def _rules(where: Where, spec: Mapping[str, Any], key: str, peers_key: str) -> tuple[Rule, ...]:
    raw = spec.get(key) or []
    if not isinstance(raw, list):
        raise where.error(f"spec.{key}", raw, "expected a list of rules")
    rules = []
    for i, item in enumerate(raw):
        here = f"spec.{key}[{i}]"
        if not isinstance(item, Mapping):
            raise where.error(here, item, "expected a rule object")
        rules.append(Rule(_peers(where, f"{here}.{peers_key}", item.get(peers_key)),
                          _ports(where, f"{here}.ports", item.get("ports"))))
    return tuple(rules)


def parse_namespace(obj: Mapping[str, Any]) -> Mapping[str, str]:
    """A Namespace's labels (what a namespaceSelector matches)."""
    meta = (obj.get("metadata") or {}) if isinstance(obj, Mapping) else {}
    labels = meta.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ValidationError("Namespace", str(meta.get("name")), "metadata.labels", labels, "expected a map")
    return {str(k): str(v) for k, v in labels.items()}


def parse_network_policy(obj: Mapping[str, Any]) -> NetworkPolicy:
    """A NetworkPolicy object as :class:`NetworkPolicy`; :class:`ValidationError` otherwise."""
    where, namespace, name, _ = namespaced_metadata(KIND, obj)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise where.error("spec", spec, "required")
    pod_selector = label_selector(where, "spec.podSelector", spec.get("podSelector") or {})
    ingress = _rules(where, spec, "ingress", "from")
    egress = _rules(where, spec, "egress", "to")
    raw_types = spec.get("policyTypes")
    if raw_types is None:
        types = frozenset({INGRESS} | ({EGRESS} if egress else set()))
    else:
        if not isinstance(raw_types, list) or any(t not in (INGRESS, EGRESS) for t in raw_types):
            raise where.error("spec.policyTypes", raw_types, "a list of Ingress and/or Egress")
        types = frozenset(raw_types)
    return NetworkPolicy(namespace, name, pod_selector, types,
                         ingress if INGRESS in types else (), egress if EGRESS in types else ())
