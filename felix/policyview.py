"""felix's read-only view of NetworkPolicy on its node, served as JSON on its health port (for
``calyxctl`` and operators): ``/v1/policy?pod=NS/NAME`` says which policies select that local
pod and what each direction allows; adding ``direction=Ingress|Egress``, ``peer=IP``,
``protocol=TCP|UDP|SCTP`` and ``port=N`` also gives the verdict for such a new connection, the
one the node's nftables table reaches. Dropped packets per endpoint are in ``/metrics``
(``felix_policy_dropped_packets``).

The main loop publishes each newly calculated :class:`felix.policycalc.NodePolicy`; requests
(served on other threads) read the last one.
"""
from __future__ import annotations

import threading
from ipaddress import AddressValueError, IPv4Address
from typing import Any, Mapping

from calyx import networkpolicy as np
from calyx.observability import JsonHandler
from felix.policycalc import AllowRule, NodePolicy, PortRange, allows

POLICY_PATH = "/v1/policy"


def _ports_text(ports: tuple[PortRange, ...] | None) -> str:
    if ports is None:
        return "any port"
    return ", ".join(p.protocol if p.first is None else
                     f"{p.protocol} {p.first}" + (f"-{p.last}" if p.last not in (None, p.first) else "")
                     for p in ports)


def rule_text(policy: NodePolicy, rule: AllowRule, direction: str) -> str:
    """One allow rule in words (pure)."""
    side = "from" if direction == np.INGRESS else "to"
    if rule.named_port_set is not None:
        return f"{side} {policy.named_port_sets[rule.named_port_set].description}"
    if rule.peer_set is not None:
        peer = policy.address_sets[rule.peer_set].description
    elif rule.block is not None:
        peer = str(rule.block.cidr) + (f" except {', '.join(map(str, rule.block.excepted))}"
                                       if rule.block.excepted else "")
    else:
        peer = "anywhere"
    return f"{side} {peer}, {_ports_text(rule.ports)}"


def describe(policy: NodePolicy, endpoint: str) -> dict[str, Any] | None:
    """What ``endpoint`` ("namespace/name") allows, in words (pure); None if not local."""
    ep = policy.endpoints.get(endpoint)
    if ep is None:
        return None
    out: dict[str, Any] = {"pod": endpoint, "ip": str(ep.pod.ip),
                           "selected_by": [f"{ns}/{name}" for ns, name in ep.policies]}
    for direction, rules in ((np.INGRESS, ep.ingress), (np.EGRESS, ep.egress)):
        out[direction.lower()] = ("not isolated: everything allowed" if rules is None else
                                  [rule_text(policy, r, direction) for r in rules] or ["nothing allowed"])
    return out


class PolicyView:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._policy: NodePolicy | None = None

    def publish(self, policy: NodePolicy) -> None:
        with self._lock:
            self._policy = policy

    def handlers(self) -> dict[str, JsonHandler]:
        return {POLICY_PATH: self.query}

    def query(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        with self._lock:
            policy = self._policy
        if policy is None:
            return 503, {"error": "felix has not calculated its policy yet"}
        pod = (query.get("pod") or [""])[0]
        found = describe(policy, pod)
        if found is None:
            return 404, {"error": f"pod {pod!r} is not a pod with an address on this node"}
        if "peer" not in query:
            return 200, found
        direction = (query.get("direction") or [np.INGRESS])[0]
        protocol = (query.get("protocol") or ["TCP"])[0].upper()
        try:
            peer = IPv4Address(query["peer"][0])
            port = int((query.get("port") or ["0"])[0])
        except (AddressValueError, ValueError) as exc:
            return 400, {"error": f"bad peer or port: {exc}"}
        if direction not in (np.INGRESS, np.EGRESS):
            return 400, {"error": f"direction {direction!r}: Ingress or Egress"}
        found["verdict"] = {"direction": direction, "peer": str(peer), "protocol": protocol, "port": port,
                            "allowed": allows(policy, pod, direction, peer, protocol, port)}
        return 200, found
