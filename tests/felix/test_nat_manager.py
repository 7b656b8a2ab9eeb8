"""felix's NAT manager against an in-memory nftables ruleset: it adopts a table already as
wanted with no write, a pool change is one transaction of element changes, the table goes
when no pool wants NAT, a table deleted by hand comes back at the next re-read, other tables
are never touched, failures are counted and leave the manager able to retry, and a machine
without libnftables gets a clear error while everything else goes on."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from prometheus_client import CollectorRegistry

from calyx import model
from felix.dataplane import nftjson
from felix.dataplane.memnft import MemoryNftables
from felix.dataplane.nat import NatManager
from felix.dataplane.nfttable import NftablesUnavailable
from felix.metrics import FelixMetrics
from felix.nat import NO_NAT, desired_nat

NODES = {"n1": model.NodeInfo("n1", internal_ip=IPv4Address("192.168.1.11")),
         "n2": model.NodeInfo("n2", bgp_address=IPv4Interface("192.168.1.12/24"))}
KEY = ("ip", nftjson.TABLE)


def state(*pools: tuple[str, str, bool]):
    return desired_nat(model.Snapshot(nodes=NODES, ippools={
        name: model.IPPool(name, IPv4Network(cidr), nat_outgoing=nat) for name, cidr, nat in pools}))


NAT = state(("a", "10.244.0.0/16", True), ("b", "10.50.0.0/16", False))


def manager(nft: MemoryNftables) -> tuple[NatManager, CollectorRegistry]:
    registry = CollectorRegistry()
    return NatManager(lambda: nft, FelixMetrics.create(registry)), registry


def elements(nft: MemoryNftables) -> dict[str, set[IPv4Network]]:
    return {name: set(c) for name, c in nftjson.parse_table(nft.list_table(*KEY)).elements.items()}


def test_first_pass_creates_the_table_in_one_transaction() -> None:
    nft = MemoryNftables()
    nat, metrics = manager(nft)
    plan = nat.reconcile(NAT, reread=True)
    assert plan is not None and plan.action == "create" and nft.transactions == 1
    assert nftjson.parse_table(nft.list_table(*KEY)).intact
    assert elements(nft) == {"masq-sources": {IPv4Network("10.244.0.0/16")},
                             "all-pools": {IPv4Network("10.50.0.0/16"), IPv4Network("10.244.0.0/16")},
                             "node-addresses": {IPv4Network("192.168.1.11/32"), IPv4Network("192.168.1.12/32")}}
    assert metrics.get_sample_value("felix_netlink_writes_total", {"object": "nat"}) == 1
    assert metrics.get_sample_value("felix_nat_available") == 1


def test_a_restarted_manager_adopts_the_table_with_no_write() -> None:
    nft = MemoryNftables()
    manager(nft)[0].reconcile(NAT, reread=True)
    before = nft.transactions
    restarted, metrics = manager(nft)
    plan = restarted.reconcile(NAT, reread=True)
    assert plan is not None and plan.commands == () and nft.transactions == before
    assert metrics.get_sample_value("felix_netlink_writes_total", {"object": "nat"}) is None


def test_passes_without_a_change_make_no_nftables_call() -> None:
    nft = MemoryNftables()
    nat, _ = manager(nft)
    nat.reconcile(NAT, reread=True)
    calls = []
    nft.list_table = lambda *a: calls.append(a)          # type: ignore[method-assign]
    for _ in range(3):
        nat.reconcile(NAT)
    assert calls == [] and nft.transactions == 1


def test_a_pool_change_is_one_transaction_of_element_changes() -> None:
    nft = MemoryNftables()
    nat, _ = manager(nft)
    nat.reconcile(NAT, reread=True)
    handles = {item["set"]["name"]: item["set"]["handle"] for item in nft.list_table(*KEY) if "set" in item}
    plan = nat.reconcile(state(("a", "10.244.0.0/16", True), ("b", "10.50.0.0/16", True)))
    assert plan is not None and plan.action == "update" and nft.transactions == 2
    assert elements(nft)["masq-sources"] == {IPv4Network("10.50.0.0/16"), IPv4Network("10.244.0.0/16")}
    # the sets were changed, not recreated
    assert {item["set"]["name"]: item["set"]["handle"] for item in nft.list_table(*KEY) if "set" in item} == handles
    # a pool replaced by an overlapping one: the old element leaves before the new one enters
    plan = nat.reconcile(state(("a", "10.244.0.0/15", True), ("b", "10.50.0.0/16", True)))
    assert plan is not None and nft.transactions == 3
    assert elements(nft)["masq-sources"] == {IPv4Network("10.50.0.0/16"), IPv4Network("10.244.0.0/15")}


def test_no_pool_wanting_nat_removes_the_table_and_leaves_other_tables() -> None:
    nft = MemoryNftables()
    nft.run([{"add": {"table": {"family": "ip", "name": "filter"}}},
             {"add": {"table": {"family": "inet", "name": nftjson.TABLE}}}])
    nat, _ = manager(nft)
    nat.reconcile(NAT, reread=True)
    plan = nat.reconcile(state(("a", "10.244.0.0/16", False)))
    assert plan is not None and plan.action == "remove"
    assert set(nft.tables) == {("ip", "filter"), ("inet", nftjson.TABLE)}
    assert nat.reconcile(NO_NAT, reread=True).commands == ()       # nothing left to remove: no write
    assert nft.transactions == 3


def test_a_table_deleted_by_hand_comes_back_at_the_next_reread() -> None:
    nft = MemoryNftables()
    nat, _ = manager(nft)
    nat.reconcile(NAT, reread=True)
    nft.run([{"delete": {"table": {"family": "ip", "name": nftjson.TABLE}}}])
    assert nat.reconcile(NAT).commands == ()                        # trusted until re-read
    plan = nat.reconcile(NAT, reread=True)
    assert plan is not None and plan.action == "create" and nftjson.parse_table(nft.list_table(*KEY)).intact


def test_a_hand_edited_table_is_rebuilt_atomically() -> None:
    nft = MemoryNftables()
    nat, _ = manager(nft)
    nat.reconcile(NAT, reread=True)
    nft.run([{"add": {"rule": {"family": "ip", "table": nftjson.TABLE, "chain": "postrouting",
                                "expr": [{"accept": None}]}}}])
    plan = nat.reconcile(NAT, reread=True)
    assert plan is not None and plan.action == "rebuild"
    observed = nftjson.parse_table(nft.list_table(*KEY))
    assert observed.intact and observed.elements == nftjson.wanted_elements(NAT)


def test_a_refused_transaction_changes_nothing_is_counted_and_retried() -> None:
    nft = MemoryNftables()
    nat, metrics = manager(nft)
    nat.reconcile(NAT, reread=True)
    nft.refuse = "Error: Could not process rule: Operation not supported"
    changed = state(("a", "10.244.0.0/16", True), ("b", "10.50.0.0/16", True))
    assert nat.reconcile(changed) is None and nat.reconcile(changed) is None
    assert metrics.get_sample_value("felix_errors_total", {"kind": "nat"}) == 2
    assert elements(nft)["masq-sources"] == {IPv4Network("10.244.0.0/16")}    # as it was
    nft.refuse = None
    plan = nat.reconcile(changed)          # the failed pass made the manager read the table again
    assert plan is not None and plan.action == "update"
    assert elements(nft)["masq-sources"] == {IPv4Network("10.50.0.0/16"), IPv4Network("10.244.0.0/16")}


def test_memory_ruleset_transactions_are_all_or_nothing() -> None:
    nft = MemoryNftables()
    with pytest.raises(nftjson.NftError):
        nft.run([{"add": {"table": {"family": "ip", "name": "t"}}},
                 {"delete": {"element": {"family": "ip", "table": "t", "name": "s", "elem": ["10.0.0.1"]}}}])
    assert nft.tables == {} and nft.transactions == 0


def test_without_libnftables_nat_is_reported_once_and_nothing_fails(caplog: pytest.LogCaptureFixture) -> None:
    attempts = []

    def missing():
        attempts.append(1)
        raise NftablesUnavailable("libnftables.so.1 cannot be loaded (libnftables.so.1: cannot open shared object file)")

    registry = CollectorRegistry()
    nat = NatManager(missing, FelixMetrics.create(registry))
    with caplog.at_level("ERROR"):
        assert nat.reconcile(NAT, reread=True) is None
        assert nat.reconcile(NAT, reread=True) is None
    assert attempts == [1]
    assert registry.get_sample_value("felix_nat_available") == 0
    errors = [r for r in caplog.records if "NAT unavailable" in r.getMessage()]
    assert len(errors) == 1 and "libnftables.so.1" in getattr(errors[0], "calyx_fields")["error"]


def test_a_kernel_without_nftables_nat_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    """The lab's user-mode Linux kernel has nf_tables but no ip family: the refusal is logged
    once with what the kernel lacks, and counted on every attempt."""
    nft = MemoryNftables()
    nft.refuse = "Error: Could not process rule: Operation not supported"
    nat, metrics = manager(nft)
    with caplog.at_level("ERROR"):
        assert nat.reconcile(NAT, reread=True) is None
        assert nat.reconcile(NAT) is None
    failures = [r for r in caplog.records if r.getMessage() == "NAT table create failed"]
    assert len(failures) == 1
    assert "CONFIG_NF_TABLES_IPV4" in getattr(failures[0], "calyx_fields")["hint"]
    assert metrics.get_sample_value("felix_errors_total", {"kind": "nat"}) == 2
    assert metrics.get_sample_value("felix_nat_available") == 1 and nft.tables == {}
