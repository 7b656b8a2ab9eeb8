"""calyxctl's pure parts: tables, the rows of ``get``, the IPAM analysis behind ``ipam show``
and ``ipam check``, and the ``node status`` text."""
from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from calyx import crds, model
from calyxctl import ipamview, resourceview, statusview
from calyxctl.cli import build_parser
from calyxctl.tables import boxed_table, percent, plain_table

SCHEMAS = crds.spec_schemas()


def _obj(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "calyx.dev/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


# --- tables ----------------------------------------------------------------------------------

def test_plain_table_aligns_columns_and_trims_trailing_space():
    text = plain_table(("NAME", "CIDR", "SELECTOR"), [("default", "10.244.0.0/16", "all()"), ("b", "10.9.0.0/24", "")])
    assert text.splitlines() == ["NAME      CIDR            SELECTOR",
                                 "default   10.244.0.0/16   all()",
                                 "b         10.9.0.0/24"]


def test_boxed_table_frames_centres_the_header_and_right_aligns_numbers():
    text = boxed_table(("GROUPING", "IPS TOTAL"), [("IP Pool", "256"), ("Block", "16")], right_aligned=(1,))
    assert text.splitlines() == ["+----------+-----------+",
                                 "| GROUPING | IPS TOTAL |",
                                 "+----------+-----------+",
                                 "| IP Pool  |       256 |",
                                 "| Block    |        16 |",
                                 "+----------+-----------+"]


def test_percent_rounds_down_and_survives_an_empty_whole():
    assert percent(5, 256) == "5 (1%)"
    assert percent(251, 256) == "251 (98%)"
    assert percent(0, 0) == "0 (0%)"


# --- get -------------------------------------------------------------------------------------

def test_kind_names_accept_calicoctl_spellings_and_refuse_others():
    assert resourceview.kind_named("ippools") is resourceview.IPPOOL
    assert resourceview.kind_named("BGPPeer") is resourceview.BGPPEER
    assert resourceview.kind_named("bgpconfiguration") is resourceview.BGPCONFIG
    with pytest.raises(ValueError, match="unknown resource type 'felixconfig'"):
        resourceview.kind_named("felixconfig")


def test_ippool_rows_show_defaults_from_the_crd_and_wide_columns():
    pools = [_obj("IPPool", "zz", {"cidr": "10.9.0.0/24", "ipipMode": "Always", "natOutgoing": True,
                                   "nodeSelector": "rack == 'a'"}),
             _obj("IPPool", "default", {"cidr": "10.244.0.0/16"})]
    rows = resourceview.rows(resourceview.IPPOOL, pools, SCHEMAS)
    assert [r.cells for r in rows] == [("default", "10.244.0.0/16", "all()"), ("zz", "10.9.0.0/24", "rack == 'a'")]
    wide = resourceview.rows(resourceview.IPPOOL, pools, SCHEMAS, wide=True)
    assert resourceview.columns(resourceview.IPPOOL, True) == (
        "NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "BLOCKSIZE", "SELECTOR")
    assert wide[0].cells == ("default", "10.244.0.0/16", "false", "Never", "Never", "false", "false", "26", "all()")
    assert wide[1].cells == ("zz", "10.9.0.0/24", "true", "Always", "Never", "false", "false", "26", "rack == 'a'")
    assert all(r.error is None for r in wide)


def test_an_invalid_pool_is_listed_with_its_validation_error():
    bad = _obj("IPPool", "bad", {"cidr": "10.9.0.1/24"})
    both = _obj("IPPool", "both", {"cidr": "10.8.0.0/24", "ipipMode": "Always", "vxlanMode": "Always"})
    rows = resourceview.rows(resourceview.IPPOOL, [bad, both], SCHEMAS, wide=True)
    assert rows[0].cells[:2] == ("bad", "10.9.0.1/24")
    assert rows[0].error == "IPPool 'bad': spec.cidr: '10.9.0.1/24': host bits are set; the network is 10.9.0.0/24"
    assert rows[1].cells[3:5] == ("Always", "Always")
    assert "ipipMode and vxlanMode cannot both be enabled" in rows[1].error
    missing = resourceview.rows(resourceview.IPPOOL, [_obj("IPPool", "nocidr", {})], SCHEMAS)
    assert missing[0].cells == ("nocidr", resourceview.INVALID, "all()") and "spec.cidr" in missing[0].error


def test_bgppeer_rows_name_the_node_or_global_and_show_the_password_reference_only():
    peers = [_obj("BGPPeer", "tor", {"peerIP": "10.0.0.254", "asNumber": 65001, "node": "node1",
                                     "password": {"secretKeyRef": {"name": "bgp-secrets", "key": "tor"}},
                                     "keepOriginalNextHop": True, "holdTime": "9s"}),
             _obj("BGPPeer", "all-rr", {"peerSelector": "has(rr)", "nodeSelector": "!has(rr)"}),
             _obj("BGPPeer", "global", {"peerIP": "10.0.0.253:1790", "asNumber": 65002})]
    rows = {r.name: r for r in resourceview.rows(resourceview.BGPPEER, peers, SCHEMAS)}
    assert rows["tor"].cells == ("tor", "10.0.0.254", "node1", "65001")
    assert rows["all-rr"].cells == ("all-rr", "", "!has(rr)", "(node's)")
    assert rows["global"].cells == ("global", "10.0.0.253:1790", "(global)", "65002")
    wide = {r.name: r for r in resourceview.rows(resourceview.BGPPEER, peers, SCHEMAS, wide=True)}
    assert wide["tor"].cells == ("tor", "10.0.0.254", "node1", "65001", "", "true", "UseNodeIP", "9s", "",
                                 "secret bgp-secrets key tor")
    assert wide["all-rr"].cells[4] == "has(rr)"


def test_an_invalid_bgppeer_keeps_its_raw_values_and_error():
    peer = _obj("BGPPeer", "noas", {"peerIP": "10.0.0.9", "node": "node1",
                                    "password": {"secretKeyRef": {"name": "s", "key": "k"}}})
    (row,) = resourceview.rows(resourceview.BGPPEER, [peer], SCHEMAS, wide=True)
    assert row.error == "BGPPeer 'noas': spec.asNumber: None: required with peerIP"
    assert row.cells[:4] == ("noas", "10.0.0.9", "node1", "") and row.cells[-1] == "secret s key k"


def test_bgpconfiguration_rows():
    config = _obj("BGPConfiguration", "default", {"asNumber": 64600, "nodeToNodeMeshEnabled": False,
                                                  "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
                                                  "logSeverityScreen": "Info"})
    (row,) = resourceview.rows(resourceview.BGPCONFIG, [config], SCHEMAS)
    assert row.cells == ("default", "Info", "false", "64600")
    (wide,) = resourceview.rows(resourceview.BGPCONFIG, [config], SCHEMAS, wide=True)
    assert wide.cells[4:6] == ("179", "10.96.0.0/12")


def test_output_objects_lose_server_bookkeeping():
    obj = _obj("IPPool", "p", {"cidr": "10.0.0.0/24"})
    obj["metadata"].update(managedFields=[{"manager": "kubectl"}], resourceVersion="7",
                           annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "net"})
    shown = resourceview.without_server_fields(obj)
    assert shown["metadata"] == {"name": "p", "resourceVersion": "7", "annotations": {"team": "net"}}
    assert "managedFields" in obj["metadata"]                   # the input is left alone


# --- ipam ------------------------------------------------------------------------------------

POOL = model.IPPool(name="pool", cidr=IPv4Network("10.96.0.0/24"), block_size=28)


def _block(cidr: str, node: str | None) -> model.IPAMBlock:
    return model.IPAMBlock(name=model.block_name(cidr), cidr=IPv4Network(cidr), node=node, pool="pool")


def _pod(ns: str, name: str, node: str, *ips: str) -> model.PodInfo:
    return model.PodInfo(namespace=ns, name=name, node=node, ips=tuple(IPv4Address(i) for i in ips), phase="Running")


def _assign(node: str, address: str, ns: str, pod: str) -> ipamview.Assignment:
    return ipamview.Assignment(node=node, address=IPv4Address(address), namespace=ns, pod=pod,
                               container_id=f"c-{pod}", ifname="eth0")


def _snapshot(**overrides) -> ipamview.IpamSnapshot:
    pods = [_pod("default", "a", "node1", "10.96.0.1"), _pod("default", "b", "node1", "10.96.0.2"),
            _pod("other", "c", "node2", "10.96.0.17")]
    base = dict(
        pools={"pool": POOL},
        blocks={b.name: b for b in (_block("10.96.0.0/28", "node1"), _block("10.96.0.16/28", "node2"))},
        nodes={n: model.NodeInfo(name=n) for n in ("node1", "node2")},
        pods={p.key: p for p in pods},
        assignments={"node1": (_assign("node1", "10.96.0.1", "default", "a"),
                               _assign("node1", "10.96.0.2", "default", "b")),
                     "node2": (_assign("node2", "10.96.0.17", "other", "c"),)},
    )
    base.update(overrides)
    return ipamview.IpamSnapshot(**base)


def test_usage_counts_assignments_pods_and_each_blocks_node_address():
    snapshot = _snapshot()
    (pool,) = ipamview.pool_usage(snapshot)
    assert (pool.total, pool.in_use, pool.free) == (256, 5, 251)      # 3 pods + 2 block addresses
    blocks = ipamview.block_usage(snapshot)
    assert [(str(b.cidr), b.node, b.in_use, b.free) for b in blocks] == [
        ("10.96.0.0/28", "node1", 3, 13), ("10.96.0.16/28", "node2", 2, 14)]


def test_a_consistent_snapshot_has_no_problem():
    report = ipamview.check(_snapshot())
    assert report.problems == 0 and report.complete
    assert report.assignments_per_node == {"node1": 2, "node2": 1}


def test_leaked_assignments_unrecorded_pods_orphan_blocks_and_duplicates_are_found():
    snapshot = _snapshot()
    pods = dict(snapshot.pods)
    del pods[("default", "a")]                                        # deleted without CNI DEL
    pods[("default", "d")] = _pod("default", "d", "node2", "10.96.0.18")   # no record on node2
    pods[("default", "e")] = _pod("default", "e", "node1", "10.96.0.2")    # same address as b
    pods[("default", "host")] = model.PodInfo("default", "host", "node1", (IPv4Address("10.0.0.1"),),
                                              host_network=True)
    blocks = dict(snapshot.blocks)
    gone = _block("10.96.0.32/28", "node3")
    blocks[gone.name] = gone
    report = ipamview.check(_snapshot(pods=pods, blocks=blocks))
    assert [(str(l.assignment.address), l.reason) for l in report.leaks] == [
        ("10.96.0.1", "pod default/a no longer exists")]
    assert [(u.pod.name, str(u.address)) for u in report.unrecorded] == [("d", "10.96.0.18"), ("e", "10.96.0.2")]
    assert [o.block.cidr for o in report.orphans] == [IPv4Network("10.96.0.32/28")]
    assert [(str(d.address), d.holders) for d in report.duplicates] == [
        ("10.96.0.2", ("pod default/b", "pod default/e"))]
    assert report.problems == 5
    assert ipamview.leaked(_snapshot(pods=pods)) == report.leaks


def test_an_assignment_for_a_pod_now_elsewhere_or_with_another_address_is_a_leak():
    snapshot = _snapshot()
    pods = dict(snapshot.pods)
    pods[("default", "a")] = _pod("default", "a", "node2", "10.96.0.20")
    pods[("default", "b")] = _pod("default", "b", "node1", "10.96.0.5")
    reasons = [l.reason for l in ipamview.check(_snapshot(pods=pods)).leaks]
    assert reasons == ["pod default/a now runs on node node2", "pod default/b holds 10.96.0.5 instead"]


def test_nodes_whose_records_were_not_read_are_not_judged_but_make_the_check_incomplete():
    snapshot = _snapshot(assignments={"node1": _snapshot().assignments["node1"]},
                         unread={"node2": "connection refused"})
    report = ipamview.check(snapshot)
    assert report.problems == 0 and not report.complete
    assert report.unchecked_nodes == {"node2": "connection refused"}
    (pool,) = ipamview.pool_usage(snapshot)
    assert pool.in_use == 5                                           # node2's pod still counts, from the API


def test_address_report_names_pool_block_assignment_and_pod():
    snapshot = _snapshot()
    held = ipamview.address_report(snapshot, IPv4Address("10.96.0.2"))
    assert held.assigned and held.pool is POOL and held.block.node == "node1"
    assert [a.handle for a in held.assignments] == ["c-b/eth0"] and held.pod.name == "b"
    free = ipamview.address_report(snapshot, IPv4Address("10.96.0.9"))
    assert not free.assigned and free.block.node == "node1" and free.pod is None
    node_address = ipamview.address_report(snapshot, IPv4Address("10.96.0.16"))
    assert node_address.assigned and node_address.node_address_of == "node2"
    outside = ipamview.address_report(snapshot, IPv4Address("192.168.1.1"))
    assert outside.pool is None and outside.block is None and not outside.assigned


# --- node status -----------------------------------------------------------------------------

STATUS = {"node": "node1", "router_id": "10.0.0.1", "as_number": 64512, "cluster_id": None, "error": None,
          "exabgp_pid": 42, "exabgp_restarts": 0,
          "peers": [{"peer_address": "10.0.0.2", "peer_type": "node-to-node mesh", "state": "Established",
                     "since": 1_700_000_000.0, "info": "", "peer_as": 64512},
                    {"peer_address": "10.0.0.254", "peer_type": "global", "state": "Idle",
                     "since": 1_700_000_000.0, "info": "Connect: connection refused", "peer_as": 65001}]}


def test_node_status_text_has_the_header_and_calicoctl_peer_table():
    text = statusview.format_status(STATUS, now=1_700_000_060.0, local_time=False)
    assert text.splitlines() == [
        "Calyx bgpd is running on node node1 (router ID 10.0.0.1, AS 64512).",
        "",
        "IPv4 BGP status",
        "+--------------+-------------------+-------------+----------+-----------------------------+",
        "| PEER ADDRESS |     PEER TYPE     |    STATE    |  SINCE   |             INFO            |",
        "+--------------+-------------------+-------------+----------+-----------------------------+",
        "| 10.0.0.2     | node-to-node mesh | Established | 22:13:20 | Established                 |",
        "| 10.0.0.254   | global            | Idle        | 22:13:20 | Connect: connection refused |",
        "+--------------+-------------------+-------------+----------+-----------------------------+",
        "",
        "IPv6 BGP status",
        "No IPv6 peers found."]


def test_node_status_without_peers_and_with_an_error_and_old_sessions():
    status = dict(STATUS, peers=[], error="BGPConfiguration 'default': bad", cluster_id="224.0.0.1")
    text = statusview.format_status(status, now=time.time())
    assert "route reflector, cluster ID 224.0.0.1" in text.splitlines()[0]
    assert "Configuration error: BGPConfiguration 'default': bad" in text
    assert "No IPv4 peers found." in text
    assert statusview.since(1_700_000_000.0, 1_700_000_000.0 + 3 * 86400, local=False) == "2023-11-14"
    assert statusview.since(None, 0.0) == "-"


# --- command line ----------------------------------------------------------------------------

def test_every_command_parses_and_names_its_run_function():
    parser = build_parser()
    for argv in (["node", "status"], ["node", "status", "node2", "-o", "json", "--bgpd-port", "9"],
                 ["ipam", "show"], ["ipam", "show", "--show-blocks"], ["ipam", "show", "--ip", "10.0.0.1"],
                 ["ipam", "check", "--records", "node1=/run/x"], ["get", "ippool", "-o", "wide"],
                 ["get", "bgppeers", "tor", "-o", "yaml"]):
        args = parser.parse_args(argv)
        assert callable(args.run)
    with pytest.raises(SystemExit):
        parser.parse_args(["ipam", "show", "--show-blocks", "--ip", "10.0.0.1"])
