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

Every rule carries the digest of its chain's wanted content as its comment, which is how
:func:`plan` tells a chain that is as wanted from one to rewrite (libnftables lists rules in
a normalised form, not as they were sent). :func:`plan` turns what the kernel holds
(:func:`parse_table`) into what is wanted in one transaction: set and map elements added and
deleted, changed chains flushed and refilled, the table created when the first endpoint is
selected and deleted when the last one is no more, rebuilt when it holds anything foreign.

A pod no policy selects in a direction has no map entry there, so its traffic passes. The
node's own traffic to its pods (kubelet's probes) leaves through the output hook, which this
table does not touch. A pod joining or leaving a selector changes elements of one set; only
a pod's own rules changing rewrites its chains.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
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


NO_POLICY = PolicyTable({}, {}, {}, {})


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


def digest(rules: tuple[tuple[Expr, ...], ...]) -> str:
    """The comment every rule of a chain with these ``rules`` carries."""
    text = json.dumps([list(r) for r in rules], sort_keys=True)
    return f"calyx {hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _type(kind: str | tuple[str, ...]) -> str | list[str]:
    return list(kind) if isinstance(kind, tuple) else kind


def _elements(name: str, elements) -> Command:
    return _where(name=name, elem=[_element(e) for e in sorted(elements)])


def _rules(chain: str, rules: tuple[tuple[Expr, ...], ...]) -> list[Command]:
    comment = digest(rules)
    return [{"add": {"rule": _where(chain=chain, expr=list(rule), comment=comment)}} for rule in rules]


def _map_elements(entries: Mapping[str, str]) -> list:
    return [[device, {"jump": {"target": chain}}] for device, chain in sorted(entries.items())]


def create_commands(table: PolicyTable) -> list[Command]:
    """Commands that build ``table`` from nothing (one transaction)."""
    out: list[Command] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name, (kind, elements) in table.sets.items():
        out.append({"add": {"set": _where(name=name, type=_type(kind))}})
        if elements:
            out.append({"add": {"element": _elements(name, elements)}})
    for name in (TO_ENDPOINT, FROM_ENDPOINT):
        out.append({"add": {"map": _where(name=name, type="ifname", map="verdict")}})
    for name, rules in table.chains.items():
        out.append({"add": {"chain": _where(name=name)}})
        out += _rules(name, rules)
    for name, entries in ((TO_ENDPOINT, table.to_endpoint), (FROM_ENDPOINT, table.from_endpoint)):
        if entries:
            out.append({"add": {"element": _where(name=name, elem=_map_elements(entries))}})
    out.append({"add": {"chain": _where(name=FORWARD, type="filter", hook="forward",
                                         prio=FILTER_PRIORITY, policy="accept")}})
    out += _rules(FORWARD, FORWARD_RULES)
    return out


# --- what the kernel holds, and the way from there to what is wanted -------------------------

@dataclass(frozen=True)
class ObservedTable:
    """The listed table in :class:`PolicyTable`'s terms; chains by their rules' digest (None:
    rules without one, or with different ones), anything unexpected in ``foreign``."""

    sets: Mapping[str, tuple[str | tuple[str, ...], frozenset]] = field(default_factory=dict)
    maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    chains: Mapping[str, str | None] = field(default_factory=dict)
    foreign: tuple[str, ...] = ()


def _listed_element(value: Any) -> Any:
    if isinstance(value, dict) and "concat" in value:
        return tuple(value["concat"])
    if isinstance(value, dict) and "elem" in value:        # an element with a counter/comment
        return _listed_element(value["elem"].get("val"))
    return value


def parse_table(listing: list[dict]) -> ObservedTable:
    """libnftables' listing of the table (without metainfo) as :class:`ObservedTable`."""
    sets: dict = {}
    maps: dict = {}
    chains: dict[str, str | None] = {}
    digests: dict[str, set] = {}
    foreign: list[str] = []
    for item in listing:
        if "set" in item:
            s = item["set"]
            kind = tuple(s["type"]) if isinstance(s["type"], list) else s["type"]
            sets[s["name"]] = (kind, frozenset(_listed_element(e) for e in s.get("elem", [])))
        elif "map" in item:
            m = item["map"]
            if m["name"] not in (TO_ENDPOINT, FROM_ENDPOINT) or m.get("map") != "verdict":
                foreign.append(f"map {m['name']}")
                continue
            maps[m["name"]] = {key: (verdict.get("jump") or {}).get("target", "")
                               for key, verdict in m.get("elem", [])}
        elif "chain" in item:
            chains[item["chain"]["name"]] = None
            digests.setdefault(item["chain"]["name"], set())
        elif "rule" in item:
            digests.setdefault(item["rule"]["chain"], set()).add(item["rule"].get("comment"))
        elif "table" not in item:
            foreign.append(next(iter(item)))
    for name, comments in digests.items():
        chains[name] = next(iter(comments)) if len(comments) == 1 else None
    return ObservedTable(sets, maps, chains, tuple(foreign))


@dataclass(frozen=True)
class PolicyPlan:
    """The transaction, and what it does in words (for the log)."""

    commands: tuple[Command, ...]
    action: str                       # "none", "create", "update", "rebuild", "remove"
    why: str = ""


def plan(desired: PolicyTable, observed: ObservedTable | None) -> PolicyPlan:
    """One transaction from ``observed`` (None: no table) to ``desired`` (no table at all when
    it selects no endpoint)."""
    wanted = bool(desired.chains)
    table = {"table": {"family": FAMILY, "name": TABLE}}
    if observed is None:
        return PolicyPlan(tuple(create_commands(desired)), "create", "a pod is selected by a policy") \
            if wanted else PolicyPlan((), "none")
    if not wanted:
        return PolicyPlan(({"delete": table},), "remove", "no pod of this node is selected by a policy")
    problem = _structure_problem(desired, observed)
    if problem:
        return PolicyPlan(({"delete": table}, *create_commands(desired)), "rebuild", problem)
    out: list[Command] = []
    for name, (kind, elements) in desired.sets.items():         # sets first: rules use them
        if name not in observed.sets:
            out.append({"add": {"set": _where(name=name, type=_type(kind))}})
            have = frozenset()
        else:
            have = observed.sets[name][1]
        if elements - have:
            out.append({"add": {"element": _elements(name, elements - have)}})
        if have - elements:
            out.append({"delete": {"element": _elements(name, have - elements)}})
    for name, rules in desired.chains.items():
        if name not in observed.chains:
            out.append({"add": {"chain": _where(name=name)}})
            out += _rules(name, rules)
        elif observed.chains[name] != digest(rules):
            out.append({"flush": {"chain": _where(name=name)}})
            out += _rules(name, rules)
    if observed.chains.get(FORWARD) != digest(FORWARD_RULES):
        out.append({"flush": {"chain": _where(name=FORWARD)}})
        out += _rules(FORWARD, FORWARD_RULES)
    for name, entries in ((TO_ENDPOINT, desired.to_endpoint), (FROM_ENDPOINT, desired.from_endpoint)):
        have = observed.maps.get(name, {})
        stale = {d: c for d, c in have.items() if entries.get(d) != c}
        new = {d: c for d, c in entries.items() if have.get(d) != c}
        if stale:
            out.append({"delete": {"element": _where(name=name, elem=_map_elements(stale))}})
        if new:
            out.append({"add": {"element": _where(name=name, elem=_map_elements(new))}})
    for name in observed.chains:                                # nothing jumps there any more
        if name != FORWARD and name not in desired.chains:
            out += [{"flush": {"chain": _where(name=name)}}, {"delete": {"chain": _where(name=name)}}]
    for name in observed.sets:                                  # no rule refers to it any more
        if name not in desired.sets:
            out.append({"delete": {"set": _where(name=name)}})
    return PolicyPlan(tuple(out), "update" if out else "none")


def _structure_problem(desired: PolicyTable, observed: ObservedTable) -> str:
    if observed.foreign:
        return f"the table holds objects Calyx did not make: {', '.join(observed.foreign)}"
    for name in (TO_ENDPOINT, FROM_ENDPOINT):
        if name not in observed.maps:
            return f"map {name} is missing"
    if FORWARD not in observed.chains:
        return "chain forward is missing"
    for name, (kind, _) in desired.sets.items():
        if name in observed.sets and observed.sets[name][0] != kind:
            return f"set {name} has type {observed.sets[name][0]}, not {kind}"
    return ""


def applied(desired: PolicyTable) -> ObservedTable | None:
    """The table as it is once a plan for ``desired`` was committed."""
    if not desired.chains:
        return None
    chains = {name: digest(rules) for name, rules in desired.chains.items()}
    chains[FORWARD] = digest(FORWARD_RULES)
    return ObservedTable(dict(desired.sets), {TO_ENDPOINT: dict(desired.to_endpoint),
                                              FROM_ENDPOINT: dict(desired.from_endpoint)}, chains)


def drop_counts(listing: list[dict]) -> dict[str, int]:
    """Per endpoint chain of a listed table, the packets its final counter-and-drop rule saw."""
    counts: dict[str, int] = {}
    for item in listing:
        rule = item.get("rule")
        if not rule or rule.get("chain") == FORWARD:
            continue
        exprs = rule.get("expr", [])
        if len(exprs) == 2 and "counter" in exprs[0] and "drop" in exprs[1]:
            counts[rule["chain"]] = int(exprs[0]["counter"].get("packets", 0))
    return counts


def endpoint_of_chain(chain: str) -> tuple[str, str]:
    """(cali device, "ingress" or "egress") of an endpoint chain's name."""
    direction, _, device = chain.partition("-")
    return device, "ingress" if direction == "to" else "egress"
