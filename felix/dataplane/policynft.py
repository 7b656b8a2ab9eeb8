"""felix's NetworkPolicy table in libnftables' JSON: :func:`desired_table` turns a node's
:class:`felix.policycalc.NodePolicy` into Calyx's own table, :func:`create_commands` into the
commands that build it in one transaction. Pure code: commands are plain JSON-shaped data.

The table (nothing else is ever named)::

    table ip calyx-policy {
        set pods-<hash>  { type ipv4_addr; }                              # a rule's pod peers
        set ports-<hash> { type ipv4_addr . inet_proto . inet_service; }  # named ports, per pod
        map to-endpoint   { type ifname : verdict; }   # cali device -> its ingress chain
        map from-endpoint { type ifname : verdict; }   # cali device -> its egress chain
        chain forward {
            type filter hook forward priority filter; policy accept;
            ct state established,related accept        # replies of allowed connections
            iifname vmap @from-endpoint                # leaving a pod: its egress rules
            oifname vmap @to-endpoint                  # entering a pod: its ingress rules
        }
        chain from-cali1234 { ... return ; counter drop }   # allowed -> on to ingress
        chain to-cali5678   { ... accept ; counter drop }
    }

A pod no policy selects in a direction has no map entry there, so its traffic passes. The
node's own traffic to its pods (kubelet's probes) leaves through the output hook, which this
table does not touch. A pod joining or leaving a selector changes elements of one set; only
a pod's own rules changing rewrites its chains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from calyx import networkpolicy as np
from felix.policycalc import AllowRule, NodePolicy, PortRange

FAMILY = "ip"
TABLE = "calyx-policy"
FORWARD = "forward"
TO_ENDPOINT = "to-endpoint"
FROM_ENDPOINT = "from-endpoint"
FILTER_PRIORITY = 0
ADDRESS_TYPE = "ipv4_addr"
NAMED_PORT_TYPE = ("ipv4_addr", "inet_proto", "inet_service")

Command = dict[str, Any]
Expr = dict[str, Any]


@dataclass(frozen=True)
class PolicyTable:
    """Everything in the table: sets (name -> (type, elements)), the per-endpoint chains
    (name -> rules, each a tuple of expressions) and the two dispatch maps (device -> chain)."""

    sets: Mapping[str, tuple[str | tuple[str, ...], frozenset]]
    chains: Mapping[str, tuple[tuple[Expr, ...], ...]]
    to_endpoint: Mapping[str, str]
    from_endpoint: Mapping[str, str]


def chain_name(direction: str, device: str) -> str:
    return f"{'to' if direction == np.INGRESS else 'from'}-{device}"


def _ip(field_name: str) -> dict:
    return {"payload": {"protocol": "ip", "field": field_name}}


def _match(left: Any, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix(network) -> dict:
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _port_exprs(port: PortRange) -> tuple[Expr, ...]:
    out = [_match({"meta": {"key": "l4proto"}}, port.protocol.lower())]
    if port.first is not None:
        last = port.last if port.last is not None else port.first
        right = port.first if last == port.first else {"range": [port.first, last]}
        out.append(_match({"payload": {"protocol": "th", "field": "dport"}}, right))
    return tuple(out)


def _rule_exprs(rule: AllowRule, direction: str) -> list[tuple[Expr, ...]]:
    """The matches of one allow rule: one nftables rule per port entry (or one for any port)."""
    peer_field = "saddr" if direction == np.INGRESS else "daddr"
    if rule.named_port_set is not None:
        left = {"concat": [_ip("daddr"), {"meta": {"key": "l4proto"}},
                           {"payload": {"protocol": "th", "field": "dport"}}]}
        return [(_match(left, f"@{rule.named_port_set}"),)]
    peer: list[Expr] = []
    if rule.peer_set is not None:
        peer.append(_match(_ip(peer_field), f"@{rule.peer_set}"))
    if rule.block is not None:
        peer.append(_match(_ip(peer_field), _prefix(rule.block.cidr)))
        if rule.block.excepted:
            peer.append(_match(_ip(peer_field), {"set": [_prefix(n) for n in rule.block.excepted]}, "!="))
    if rule.ports is None:
        return [tuple(peer)]
    return [tuple(peer) + _port_exprs(p) for p in rule.ports]


def desired_table(policy: NodePolicy, device_of: Mapping[str, str]) -> PolicyTable:
    """The table for ``policy``; ``device_of`` maps an endpoint ("namespace/name") to its cali
    device (endpoints without one yet are left out: their sandbox is still being made)."""
    chains: dict[str, tuple[tuple[Expr, ...], ...]] = {}
    to_endpoint: dict[str, str] = {}
    from_endpoint: dict[str, str] = {}
    for key, endpoint in sorted(policy.endpoints.items()):
        device = device_of.get(key)
        if device is None:
            continue
        for direction, rules, dispatch, verdict in (
                (np.INGRESS, endpoint.ingress, to_endpoint, {"accept": None}),
                (np.EGRESS, endpoint.egress, from_endpoint, {"return": None})):
            if rules is None:
                continue
            name = chain_name(direction, device)
            body = [exprs + (verdict,) for rule in rules for exprs in _rule_exprs(rule, direction)]
            body.append(({"counter": None}, {"drop": None}))
            chains[name] = tuple(body)
            dispatch[device] = name
    used_address = {r.peer_set for e in policy.endpoints.values() if e.pod.ip
                    for rules in (e.ingress or (), e.egress or ()) for r in rules if r.peer_set}
    used_ports = {r.named_port_set for e in policy.endpoints.values()
                  for r in (e.egress or ()) if r.named_port_set}
    sets: dict[str, tuple[str | tuple[str, ...], frozenset]] = {}
    for name in sorted(used_address):
        sets[name] = (ADDRESS_TYPE, frozenset(str(a) for a in policy.address_sets[name].members))
    for name in sorted(used_ports):
        sets[name] = (NAMED_PORT_TYPE, frozenset((str(a), proto.lower(), port) for a, proto, port
                                                 in policy.named_port_sets[name].members))
    return PolicyTable(sets, chains, to_endpoint, from_endpoint)


def _element(value: Any) -> Any:
    return {"concat": list(value)} if isinstance(value, tuple) else value


def _where(**extra: Any) -> dict:
    return {"family": FAMILY, "table": TABLE, **extra}


FORWARD_RULES: tuple[tuple[Expr, ...], ...] = (
    (_match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}),
    ({"vmap": {"key": {"meta": {"key": "iifname"}}, "data": f"@{FROM_ENDPOINT}"}},),
    ({"vmap": {"key": {"meta": {"key": "oifname"}}, "data": f"@{TO_ENDPOINT}"}},),
)


def create_commands(table: PolicyTable) -> list[Command]:
    """Commands that build ``table`` from nothing (one transaction)."""
    out: list[Command] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name, (kind, elements) in table.sets.items():
        out.append({"add": {"set": _where(name=name, type=list(kind) if isinstance(kind, tuple) else kind)}})
        if elements:
            out.append({"add": {"element": _where(name=name, elem=[_element(e) for e in sorted(elements)])}})
    for name in (TO_ENDPOINT, FROM_ENDPOINT):
        out.append({"add": {"map": _where(name=name, type="ifname", map="verdict")}})
    for name, rules in table.chains.items():
        out.append({"add": {"chain": _where(name=name)}})
        out += [{"add": {"rule": _where(chain=name, expr=list(rule))}} for rule in rules]
    for name, entries in ((TO_ENDPOINT, table.to_endpoint), (FROM_ENDPOINT, table.from_endpoint)):
        if entries:
            out.append({"add": {"element": _where(name=name, elem=[
                [device, {"jump": {"target": chain}}] for device, chain in sorted(entries.items())])}})
    out.append({"add": {"chain": _where(name=FORWARD, type="filter", hook="forward",
                                         prio=FILTER_PRIORITY, policy="accept")}})
    out += [{"add": {"rule": _where(chain=FORWARD, expr=list(rule))}} for rule in FORWARD_RULES]
    return out
