"""natOutgoing as pure data: which CIDRs are masqueraded and which destinations are exempt
(felix.nat), and the nftables JSON that programs it, reads it back and plans the one transaction
from the kernel's table to the wanted one (felix.dataplane.nftjson)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from calyx import model
from felix.dataplane import nftjson
from felix.nat import NO_NAT, NatState, desired_nat

N = IPv4Network


def pool(name: str, cidr: str, nat: bool = False, disabled: bool = False) -> model.IPPool:
    return model.IPPool(name, N(cidr), nat_outgoing=nat, disabled=disabled)


def snap(*pools: model.IPPool, nodes: tuple[model.NodeInfo, ...] = ()) -> model.Snapshot:
    return model.Snapshot(ippools={p.name: p for p in pools}, nodes={n.name: n for n in nodes})


NODES = (model.NodeInfo("n1", bgp_address=IPv4Interface("192.168.1.11/24"), internal_ip=IPv4Address("192.168.1.11")),
         model.NodeInfo("n2", bgp_address=IPv4Interface("10.1.0.2/32"), internal_ip=IPv4Address("192.168.1.12")),
         model.NodeInfo("n3"))


# --- felix.nat -------------------------------------------------------------------------------

def test_no_pool_with_nat_outgoing_wants_nothing() -> None:
    assert desired_nat(snap(pool("a", "10.244.0.0/16"), nodes=NODES)) == NO_NAT
    assert not NO_NAT.wanted and desired_nat(model.Snapshot()) == NO_NAT


def test_sources_are_the_nat_pools_and_exemptions_every_pool_and_node_address() -> None:
    state = desired_nat(snap(pool("a", "10.244.0.0/16", nat=True), pool("b", "10.50.0.0/16"),
                             pool("c", "172.16.0.0/24", nat=True), nodes=NODES))
    assert state.wanted
    assert state.masquerade_sources == (N("10.244.0.0/16"), N("172.16.0.0/24"))
    assert state.pool_cidrs == (N("10.50.0.0/16"), N("10.244.0.0/16"), N("172.16.0.0/24"))
    assert state.node_addresses == tuple(IPv4Address(a) for a in ("10.1.0.2", "192.168.1.11", "192.168.1.12"))
    assert "a, c" in state.reason


def test_disabled_pools_still_count_both_as_source_and_as_exemption() -> None:
    """disabled only stops allocation: the pods of a disabled pool keep their NAT, and a
    disabled pool's addresses are still pods, never masqueraded towards."""
    state = desired_nat(snap(pool("old", "10.10.0.0/16", nat=True, disabled=True),
                             pool("new", "10.20.0.0/16", disabled=True)))
    assert state.masquerade_sources == (N("10.10.0.0/16"),)
    assert state.pool_cidrs == (N("10.10.0.0/16"), N("10.20.0.0/16"))


def test_nested_and_adjacent_pools_collapse_so_interval_elements_never_overlap() -> None:
    state = desired_nat(snap(pool("a", "10.0.0.0/24", nat=True), pool("b", "10.0.1.0/24", nat=True),
                             pool("c", "10.0.0.0/16"), pool("d", "10.0.4.0/24", nat=True)))
    assert state.masquerade_sources == (N("10.0.0.0/23"), N("10.0.4.0/24"))
    assert state.pool_cidrs == (N("10.0.0.0/16"),)


# --- elements ------------------------------------------------------------------------------

def test_elements_round_trip_as_libnftables_lists_them() -> None:
    for cidr in (N("10.0.0.0/8"), N("10.1.2.3/32"), N("0.0.0.0/0")):
        assert nftjson.parse_element(nftjson.element(cidr)) == (cidr,)
    assert nftjson.element(N("10.1.2.3/32")) == "10.1.2.3"
    assert nftjson.parse_element({"range": ["10.0.0.0", "10.0.2.255"]}) == (N("10.0.0.0/23"), N("10.0.2.0/24"))
    assert nftjson.parse_element({"elem": {"val": "10.0.0.1", "comment": "x"}}) == (N("10.0.0.1/32"),)
    assert nftjson.parse_element({"set": ["?"]}) == () and nftjson.parse_element("not-an-ip") == ()


# --- the table, read back -------------------------------------------------------------------

def listing_of(state: NatState) -> list[dict]:
    """What libnftables lists after build_commands(state) ran (handles and metainfo aside)."""
    out: list[dict] = [{"table": {"family": "ip", "name": nftjson.TABLE, "handle": 1}}]
    for command in nftjson.build_commands(state)[1:]:
        (kind, spec), = command["add"].items()
        out.append({kind: {**spec, "handle": 2}})
    return out


STATE = desired_nat(snap(pool("a", "10.244.0.0/16", nat=True), pool("b", "10.50.0.0/16"), nodes=NODES))


def test_the_built_table_reads_back_intact_with_its_elements() -> None:
    observed = nftjson.parse_table(listing_of(STATE))
    assert observed.intact, observed.differences
    assert observed.elements == nftjson.wanted_elements(STATE)
    assert observed == nftjson.applied(STATE)


def test_a_hand_edited_table_is_not_intact() -> None:
    extra_rule = listing_of(STATE) + [{"rule": {"family": "ip", "table": nftjson.TABLE, "chain": "postrouting",
                                                "expr": [{"accept": None}], "handle": 9}}]
    other_chain = [dict(item) for item in listing_of(STATE)]
    for item in other_chain:
        if "chain" in item:
            item["chain"] = {**item["chain"], "prio": 0}
    no_set = [item for item in listing_of(STATE) if item.get("set", {}).get("name") != nftjson.NODE_ADDRESSES]
    for listing in (extra_rule, other_chain, no_set):
        observed = nftjson.parse_table(listing)
        assert not observed.intact and observed.differences


# --- the plan --------------------------------------------------------------------------------

def test_plan_creates_the_whole_table_in_one_batch() -> None:
    plan = nftjson.plan(STATE, None)
    assert plan.action == "create"
    kinds = [next(iter(c["add"])) for c in plan.commands]
    assert kinds == ["table", "set", "set", "set", "chain", "rule"]
    chain = plan.commands[4]["add"]["chain"]
    assert (chain["type"], chain["hook"], chain["prio"], chain["policy"]) == ("nat", "postrouting", 100, "accept")
    masq = plan.commands[1]["add"]["set"]
    assert masq["name"] == "masq-sources" and masq["flags"] == ["interval"]
    assert masq["elem"] == [{"prefix": {"addr": "10.244.0.0", "len": 16}}]
    for command in plan.commands:          # nothing but Calyx's table is ever named
        (spec,) = command["add"].values()
        assert (spec["family"], spec.get("table", spec.get("name"))) == ("ip", nftjson.TABLE)


def test_plan_with_the_table_as_wanted_is_empty() -> None:
    assert nftjson.plan(STATE, nftjson.parse_table(listing_of(STATE))).commands == ()


def test_a_pool_change_is_element_changes_only_deletes_first() -> None:
    changed = desired_nat(snap(pool("a", "10.244.0.0/15", nat=True), pool("b", "10.50.0.0/16"),
                               pool("c", "10.60.0.0/16", nat=True), nodes=NODES))
    plan = nftjson.plan(changed, nftjson.parse_table(listing_of(STATE)))
    assert plan.action == "update"
    verbs = [(next(iter(c)), c[next(iter(c))]["element"]["name"]) for c in plan.commands]
    assert verbs == [("delete", "masq-sources"), ("delete", "all-pools"), ("add", "masq-sources"), ("add", "all-pools")]
    assert plan.commands[0]["delete"]["element"]["elem"] == [{"prefix": {"addr": "10.244.0.0", "len": 16}}]
    assert plan.added["masq-sources"] == {N("10.244.0.0/15"), N("10.60.0.0/16")}
    assert plan.removed["all-pools"] == {N("10.244.0.0/16")}


def test_a_node_change_touches_the_node_address_set_only() -> None:
    more = desired_nat(snap(pool("a", "10.244.0.0/16", nat=True), pool("b", "10.50.0.0/16"),
                            nodes=NODES + (model.NodeInfo("n4", internal_ip=IPv4Address("192.168.1.14")),)))
    plan = nftjson.plan(more, nftjson.parse_table(listing_of(STATE)))
    assert plan.commands == ({"add": {"element": {"family": "ip", "table": nftjson.TABLE, "name": "node-addresses",
                                                  "elem": ["192.168.1.14"]}}},)


def test_no_nat_wanted_removes_the_table_and_nothing_else() -> None:
    plan = nftjson.plan(NO_NAT, nftjson.parse_table(listing_of(STATE)))
    assert plan.action == "remove"
    assert plan.commands == ({"delete": {"table": {"family": "ip", "name": nftjson.TABLE}}},)
    assert nftjson.plan(NO_NAT, None).commands == ()


def test_a_damaged_table_is_rebuilt_in_the_same_transaction() -> None:
    damaged = nftjson.parse_table([item for item in listing_of(STATE) if "rule" not in item])
    plan = nftjson.plan(STATE, damaged)
    assert plan.action == "rebuild" and "rule" in plan.why
    assert plan.commands[0] == {"delete": {"table": {"family": "ip", "name": nftjson.TABLE}}}
    assert list(plan.commands[1:]) == nftjson.build_commands(STATE)
