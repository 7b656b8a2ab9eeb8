"""The rules across IPPools (calyx.ippools): which pool of an overlapping pair is refused, the
Service CIDR and node networks, and the messages naming pool, field, value and what it overlaps."""
from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network

from calyx import ippools
from calyx.model import BGPConfiguration, IPAMBlock, IPPool, NodeInfo, Snapshot, ValidationError

OLD, NEW = "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"
NODES = {"node1": NodeInfo("node1", bgp_address=IPv4Interface("10.0.0.1/24")),
         "node2": NodeInfo("node2", bgp_address=IPv4Interface("10.0.0.2/24")),
         "bare": NodeInfo("bare")}
SERVICES = BGPConfiguration(service_cluster_ips=(IPv4Network("10.96.0.0/12"),))


def pools(*items: IPPool) -> dict[str, IPPool]:
    return {p.name: p for p in items}


def pool(name: str, cidr: str, created: str = OLD, **kw) -> IPPool:
    return IPPool(name, IPv4Network(cidr), created=created, **kw)


def test_disjoint_pools_are_all_accepted_disabled_ones_included():
    given = pools(pool("a", "10.244.0.0/16"), pool("b", "10.245.0.0/16", NEW, disabled=True))
    assert ippools.refusals(given, NODES, SERVICES) == {}
    assert ippools.accepted(given, NODES, SERVICES) == given


def test_of_two_overlapping_pools_the_later_one_is_refused_whatever_the_names():
    for first, second in (("a", "z"), ("z", "a")):
        given = pools(pool(second, "10.244.0.0/24", NEW), pool(first, "10.244.0.0/16", OLD))
        refused = ippools.refusals(given, NODES, SERVICES)
        assert list(refused) == [second]
        err = refused[second]
        assert isinstance(err, ValidationError)
        assert (err.kind, err.name, err.field_path, err.value) == ("IPPool", second, "spec.cidr", "10.244.0.0/24")
        assert str(err) == (f"IPPool {second!r}: spec.cidr: '10.244.0.0/24': overlaps IPPool {first!r} "
                            "(10.244.0.0/16), which was created earlier; the pool is not used for "
                            "allocation or routing")
        assert list(ippools.accepted(given, NODES, SERVICES)) == [first]


def test_same_creation_time_the_name_decides_and_a_disabled_pool_still_counts():
    given = pools(pool("b", "10.244.0.0/16", disabled=True), pool("a", "10.244.128.0/17"))
    assert list(ippools.refusals(given, NODES, SERVICES)) == ["b"]
    given = pools(pool("a", "10.244.0.0/16", disabled=True), pool("b", "10.244.128.0/17"))
    assert list(ippools.refusals(given, NODES, SERVICES)) == ["b"]      # the old disabled pool stays


def test_a_pool_refused_for_another_reason_does_not_refuse_a_later_one():
    given = pools(pool("svc", "10.96.0.0/16", OLD), pool("inner", "10.96.0.0/24", NEW))
    # both overlap the Service CIDR: each is refused for that, not "inner" for overlapping "svc"
    assert {n: "Service CIDR" in str(e) for n, e in ippools.refusals(given, NODES, SERVICES).items()} == \
        {"svc": True, "inner": True}
    given = pools(pool("lan", "10.0.0.0/16", OLD), pool("pods", "10.0.128.0/17", NEW))
    refused = ippools.refusals(given, NODES, SERVICES)
    assert list(refused) == ["lan"]          # "pods" does not overlap a node network, and "lan" is not kept


def test_a_pool_overlapping_the_service_cidr_is_refused_naming_it():
    given = pools(pool("p", "10.100.0.0/16"))
    err = ippools.refusals(given, NODES, SERVICES)["p"]
    assert str(err) == ("IPPool 'p': spec.cidr: '10.100.0.0/16': overlaps the Service CIDR 10.96.0.0/12 "
                        "(BGPConfiguration 'default' spec.serviceClusterIPs); the pool is not used for "
                        "allocation or routing")
    assert ippools.refusals(given, NODES, BGPConfiguration()) == {}


def test_a_pool_overlapping_a_node_network_is_refused_naming_the_first_node():
    err = ippools.refusals(pools(pool("p", "10.0.0.0/8")), NODES, BGPConfiguration())["p"]
    assert str(err) == ("IPPool 'p': spec.cidr: '10.0.0.0/8': overlaps the network 10.0.0.0/24 of Node "
                        "'node1'; the pool is not used for allocation or routing")
    # the same message whatever order the nodes come in: the lowest network, its first node by name
    more = {"zz": NodeInfo("zz", bgp_address=IPv4Interface("10.0.0.9/24")),
            "b": NodeInfo("b", bgp_address=IPv4Interface("10.9.0.1/16")), **NODES}
    for order in (list(more.values()), list(reversed(more.values()))):
        assert str(ippools.refusals(pools(pool("p", "10.0.0.0/8")), order, BGPConfiguration())["p"]) == str(err)
    # a node known by its InternalIP only (a /32): the pool holding that address
    lone = {"n": NodeInfo("n", bgp_address=IPv4Interface("192.168.7.9/32"))}
    assert list(ippools.refusals(pools(pool("p", "192.168.0.0/16")), lone, SERVICES)) == ["p"]
    assert ippools.refusals(pools(pool("p", "192.168.8.0/24")), lone, SERVICES) == {}


def test_the_snapshot_loses_the_refused_pools_only():
    snapshot = Snapshot(nodes=NODES, bgp_configuration=SERVICES,
                        ippools=pools(pool("a", "10.244.0.0/16"), pool("b", "10.244.0.0/16", NEW),
                                      pool("c", "10.250.0.0/16", NEW)))
    kept, found = ippools.without_refused_pools(snapshot)
    assert sorted(kept.ippools) == ["a", "c"] and list(found) == ["b"] and found["b"].refused
    assert kept.nodes == snapshot.nodes
    clean = Snapshot(ippools=pools(pool("a", "10.244.0.0/16")))
    assert ippools.without_refused_pools(clean) == (clean, {})


def test_a_pool_in_use_is_kept_when_a_node_network_or_service_cidr_comes_to_overlap_it():
    """A node joining on a network inside a pool whose blocks hold pods: the pool keeps routing
    them (refusing it would cut them off); the overlap is reported all the same."""
    joined = {**NODES, "late": NodeInfo("late", bgp_address=IPv4Interface("10.244.99.1/24"))}
    block = IPAMBlock("10-244-1-0-26", IPv4Network("10.244.1.0/26"), "node1", pool="a")
    snapshot = Snapshot(nodes=joined, ippools=pools(pool("a", "10.244.0.0/16"), pool("b", "10.250.0.0/16")),
                        blocks={block.name: block},
                        bgp_configuration=BGPConfiguration(service_cluster_ips=(IPv4Network("10.250.0.0/24"),)))
    kept, found = ippools.without_refused_pools(snapshot)
    assert sorted(kept.ippools) == ["a"]                       # "b" holds no block: refused
    assert not found["a"].refused and found["b"].refused
    assert str(found["a"].error) == ("IPPool 'a': spec.cidr: '10.244.0.0/16': overlaps the network "
                                     "10.244.99.0/24 of Node 'late'; the pool is in use and stays in use: "
                                     "migrate its pods to another pool")
    # in use does not protect a pool from a kept pool created earlier
    later = pools(pool("old", "10.244.0.0/16"), pool("new", "10.244.1.0/24", NEW))
    assert list(ippools.refusals(later, NODES, SERVICES, in_use=frozenset({"new"}))) == ["new"]
