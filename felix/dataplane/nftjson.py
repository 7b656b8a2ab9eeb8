"""felix's NAT table in libnftables' JSON: the commands that build it from a
:class:`felix.nat.NatState`, the reading of a listed table back into the same terms, and the
plan (one transaction) that turns what the kernel holds into what is wanted.

The table belongs to Calyx alone; nothing here ever names another table::

    table ip calyx-nat {
        set masq-sources   { type ipv4_addr; flags interval; }   # pools with natOutgoing
        set all-pools      { type ipv4_addr; flags interval; }   # every pool
        set node-addresses { type ipv4_addr; }                   # every node's address
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr @masq-sources ip daddr != @all-pools ip daddr != @node-addresses masquerade
        }
    }

A pool or node change is a set-element change; a table that differs in anything else (a set
of another type, a chain or rule edited by hand) is rebuilt, in the same transaction.

Pure code: commands and listings are plain JSON-shaped data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, summarize_address_range
from typing import Any, Iterable, Mapping, Sequence

from felix.nat import NatState

FAMILY = "ip"
TABLE = "calyx-nat"
CHAIN = "postrouting"
MASQ_SOURCES = "masq-sources"
ALL_POOLS = "all-pools"
NODE_ADDRESSES = "node-addresses"
SRCNAT_PRIORITY = 100
RULE_COMMENT = "calyx natOutgoing"

Command = dict[str, Any]


class NftError(Exception):
    """libnftables refused a command batch (nothing of it was applied) or a listing."""

# name -> (type, flags) of each set; the interval sets hold CIDRs, the other single addresses
SETS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    MASQ_SOURCES: ("ipv4_addr", ("interval",)),
    ALL_POOLS: ("ipv4_addr", ("interval",)),
    NODE_ADDRESSES: ("ipv4_addr", ()),
}
CHAINS: Mapping[str, tuple[str, str, int, str]] = {CHAIN: ("nat", "postrouting", SRCNAT_PRIORITY, "accept")}


def _match(field_name: str, op: str, set_name: str) -> dict:
    return {"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field_name}},
                      "right": f"@{set_name}"}}


RULE_EXPR: tuple[dict, ...] = (
    _match("saddr", "==", MASQ_SOURCES),
    _match("daddr", "!=", ALL_POOLS),
    _match("daddr", "!=", NODE_ADDRESSES),
    {"masquerade": None},
)


# --- elements ------------------------------------------------------------------------------

def element(cidr: IPv4Network) -> str | dict:
    """One set element as libnftables writes and lists it: a single address, or a prefix."""
    if cidr.prefixlen == 32:
        return str(cidr.network_address)
    return {"prefix": {"addr": str(cidr.network_address), "len": cidr.prefixlen}}


def parse_element(raw: Any) -> tuple[IPv4Network, ...]:
    """CIDRs of one listed element: an address, a prefix or a range; () when not understood."""
    try:
        if isinstance(raw, str):
            return (IPv4Network(raw),)
        if isinstance(raw, dict) and "elem" in raw:            # an element with options
            return parse_element(raw["elem"].get("val"))
        if isinstance(raw, dict) and "prefix" in raw:
            return (IPv4Network((raw["prefix"]["addr"], int(raw["prefix"]["len"]))),)
        if isinstance(raw, dict) and "range" in raw:
            low, high = (IPv4Address(x) for x in raw["range"])
            return tuple(summarize_address_range(low, high))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return ()


def wanted_elements(state: NatState) -> dict[str, frozenset[IPv4Network]]:
    return {
        MASQ_SOURCES: frozenset(state.masquerade_sources),
        ALL_POOLS: frozenset(state.pool_cidrs),
        NODE_ADDRESSES: frozenset(IPv4Network((a, 32)) for a in state.node_addresses),
    }


def _sorted_elements(cidrs: Iterable[IPv4Network]) -> list[str | dict]:
    return [element(c) for c in sorted(cidrs)]


# --- what the kernel holds -------------------------------------------------------------------

@dataclass(frozen=True)
class ObservedTable:
    """Calyx's NAT table as listed: whether its sets, chain and rule are Calyx's (``intact``),
    and each set's elements."""

    intact: bool
    elements: Mapping[str, frozenset[IPv4Network]] = field(default_factory=dict)
    differences: tuple[str, ...] = ()    # why it is not intact


def parse_table(listing: Sequence[Mapping[str, Any]]) -> ObservedTable:
    """Read the objects of ``list table ip calyx-nat`` (the ``nftables`` array of its JSON)."""
    sets: dict[str, tuple[str, tuple[str, ...]]] = {}
    elements: dict[str, frozenset[IPv4Network]] = {}
    chains: dict[str, tuple[Any, ...]] = {}
    rules: list[tuple[str, tuple, Any]] = []
    differences: list[str] = []
    for item in listing:
        if "set" in item:
            s = item["set"]
            sets[s.get("name")] = (s.get("type"), tuple(sorted(s.get("flags", ()))))
            found: set[IPv4Network] = set()
            for raw in s.get("elem", ()):
                parsed = parse_element(raw)
                if not parsed:
                    differences.append(f"set {s.get('name')}: element {raw!r} not understood")
                found.update(parsed)
            elements[s.get("name")] = frozenset(found)
        elif "chain" in item:
            c = item["chain"]
            chains[c.get("name")] = (c.get("type"), c.get("hook"), c.get("prio"), c.get("policy"))
        elif "rule" in item:
            r = item["rule"]
            rules.append((r.get("chain"), tuple(r.get("expr", ())), r.get("comment")))
        elif "map" in item or "flowtable" in item or "counter" in item or "quota" in item:
            differences.append(f"unexpected object {next(iter(item))}")
    if sets != dict(SETS):
        differences.append(f"sets {sorted(sets.items())} are not {sorted(SETS.items())}")
    if chains != dict(CHAINS):
        differences.append(f"chains {sorted(chains.items())} are not {sorted(CHAINS.items())}")
    if rules != [(CHAIN, RULE_EXPR, RULE_COMMENT)]:
        differences.append(f"{len(rules)} rule(s), not the one masquerade rule")
    return ObservedTable(intact=not differences, elements=elements, differences=tuple(differences))


# --- commands --------------------------------------------------------------------------------

def _table_ref() -> dict:
    return {"family": FAMILY, "name": TABLE}


def build_commands(state: NatState) -> list[Command]:
    """Commands creating the whole table for ``state`` (the table must not exist)."""
    commands: list[Command] = [{"add": {"table": _table_ref()}}]
    wanted = wanted_elements(state)
    for name, (kind, flags) in SETS.items():
        spec: dict[str, Any] = {"family": FAMILY, "table": TABLE, "name": name, "type": kind}
        if flags:
            spec["flags"] = list(flags)
        if wanted[name]:
            spec["elem"] = _sorted_elements(wanted[name])
        commands.append({"add": {"set": spec}})
    for name, (kind, hook, prio, policy) in CHAINS.items():
        commands.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name, "type": kind,
                                           "hook": hook, "prio": prio, "policy": policy}}})
    commands.append({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": CHAIN,
                                      "expr": [dict(e) for e in RULE_EXPR], "comment": RULE_COMMENT}}})
    return commands


def delete_table_command() -> Command:
    return {"delete": {"table": _table_ref()}}


def list_table_command() -> Command:
    return {"list": {"table": _table_ref()}}


def _element_command(verb: str, name: str, cidrs: Iterable[IPv4Network]) -> Command:
    return {verb: {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": _sorted_elements(cidrs)}}}


@dataclass(frozen=True)
class NatPlan:
    """One transaction that brings the kernel's table to the wanted state; no commands: equal."""

    commands: tuple[Command, ...] = ()
    action: str = "none"                 # none | create | update | rebuild | remove
    added: Mapping[str, frozenset[IPv4Network]] = field(default_factory=dict)
    removed: Mapping[str, frozenset[IPv4Network]] = field(default_factory=dict)
    why: str = ""


def plan(state: NatState, observed: ObservedTable | None) -> NatPlan:
    """The commands from ``observed`` (None: no table) to ``state`` (no NAT wanted: no table)."""
    if not state.wanted:
        if observed is None:
            return NatPlan()
        return NatPlan((delete_table_command(),), "remove", why=state.reason)
    if observed is None:
        return NatPlan(tuple(build_commands(state)), "create", added=wanted_elements(state), why=state.reason)
    if not observed.intact:
        return NatPlan((delete_table_command(), *build_commands(state)), "rebuild", added=wanted_elements(state),
                       why="table differs from Calyx's: " + "; ".join(observed.differences))
    wanted = wanted_elements(state)
    deletes: list[Command] = []
    adds: list[Command] = []
    added: dict[str, frozenset[IPv4Network]] = {}
    removed: dict[str, frozenset[IPv4Network]] = {}
    for name in SETS:
        have = observed.elements.get(name, frozenset())
        gone, new = have - wanted[name], wanted[name] - have
        if gone:
            removed[name] = frozenset(gone)
            deletes.append(_element_command("delete", name, gone))
        if new:
            added[name] = frozenset(new)
            adds.append(_element_command("add", name, new))
    if not deletes and not adds:
        return NatPlan()
    # deletes first: a CIDR replaced by an overlapping one must leave the interval set before
    return NatPlan(tuple(deletes + adds), "update", added=added, removed=removed, why=state.reason)


def applied(state: NatState) -> ObservedTable | None:
    """The table as it is once a plan for ``state`` was committed."""
    if not state.wanted:
        return None
    return ObservedTable(intact=True, elements=wanted_elements(state))
