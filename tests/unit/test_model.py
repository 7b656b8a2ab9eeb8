"""The resource model: every parse rule, every error message shape, CRD defaults, derived facts."""
from __future__ import annotations

import base64
import re
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calyx import crds, model, naming
from calyx.model import (BGPConfiguration, BGPPeer, EncapMode, IPAMBlock, IPPool, NodeInfo,
                         SecretKeyRef, ValidationError, block_name, effective_bgp_configuration,
                         node_pod_cidrs, node_tunnel_address, parse_bgp_configuration, parse_bgp_peer,
                         parse_duration, parse_ipam_block, parse_ippool, parse_node, parse_pod,
                         parse_secret, allocating_pools_for_node, routing_pool_containing,
                         routing_pools_for_node)
from calyx.selector import Selector


def obj(name: str, spec=None, **extra):
    doc = {"metadata": {"name": name}, **extra}
    if spec is not None:
        doc["spec"] = spec
    return doc


SCHEMAS = crds.spec_schemas()


def error_of(parse, raw) -> ValidationError:
    """The error a parser raises; a parser of a custom resource gets the CRD schemas."""
    with pytest.raises(ValidationError) as info:
        if parse in (parse_ippool, parse_bgp_configuration, parse_bgp_peer, parse_ipam_block):
            parse(raw, SCHEMAS)
        else:
            parse(raw)
    return info.value


def test_error_message_shape():
    err = error_of(parse_ippool, obj("pool-a", {"cidr": "10.0.0.0/33"}))
    assert str(err) == "IPPool 'pool-a': spec.cidr: '10.0.0.0/33': not a valid IPv4 CIDR"
    assert (err.kind, err.name, err.field_path, err.value) == ("IPPool", "pool-a", "spec.cidr", "10.0.0.0/33")
    assert isinstance(err, ValueError)


# --- IPPool --------------------------------------------------------------------------------------

def test_ippool_defaults_come_from_the_crd():
    pool = parse_ippool(obj("p", {"cidr": "10.244.0.0/16"}), SCHEMAS)
    assert pool == IPPool(name="p", cidr=IPv4Network("10.244.0.0/16"), block_size=26,
                          ipip_mode=EncapMode.NEVER, vxlan_mode=EncapMode.NEVER, nat_outgoing=False,
                          disabled=False, node_selector=Selector("all()"), disable_bgp_export=False)


def test_ippool_all_fields():
    pool = parse_ippool(obj("p", {"cidr": "192.168.0.0/16", "blockSize": 24, "ipipMode": "CrossSubnet",
                                  "vxlanMode": "Never", "natOutgoing": True, "disabled": True,
                                  "nodeSelector": "zone == 'a'", "disableBGPExport": True}), SCHEMAS)
    assert pool.block_size == 24 and pool.ipip_mode is EncapMode.CROSS_SUBNET
    assert pool.nat_outgoing and pool.disabled and pool.disable_bgp_export
    assert pool.selects(NodeInfo("n", labels={"zone": "a"}))
    assert not pool.selects(NodeInfo("n", labels={"zone": "b"}))


def test_ippool_null_fields_take_defaults():
    pool = parse_ippool(obj("p", {"cidr": "10.0.0.0/8", "blockSize": None, "nodeSelector": None}), SCHEMAS)
    assert pool.block_size == 26 and pool.node_selector == Selector.all()


@pytest.mark.parametrize("spec, field_path, value, problem", [
    ({}, "spec.cidr", None, "required"),
    ({"cidr": 10}, "spec.cidr", 10, "must be a string (an IPv4 CIDR)"),
    ({"cidr": "10.0.0.0/33"}, "spec.cidr", "10.0.0.0/33", "not a valid IPv4 CIDR"),
    ({"cidr": "10.0.0.0"}, "spec.cidr", "10.0.0.0", "not a valid IPv4 CIDR (expected address/prefix-length)"),
    ({"cidr": "10.0.0.0/255.0.0.0"}, "spec.cidr", "10.0.0.0/255.0.0.0",
     "not a valid IPv4 CIDR (expected address/prefix-length)"),
    ({"cidr": "10.0.0.300/24"}, "spec.cidr", "10.0.0.300/24", "not a valid IPv4 CIDR"),
    ({"cidr": "fd00:10::/64"}, "spec.cidr", "fd00:10::/64", "IPv6 pools are not supported yet"),
    ({"cidr": "10.0.0.1/16"}, "spec.cidr", "10.0.0.1/16", "host bits are set; the network is 10.0.0.0/16"),
    ({"cidr": "10.0.0.0/24", "blockSize": 22}, "spec.blockSize", 22,
     "must be at least the pool's prefix length /24"),
    ({"cidr": "10.0.0.0/16", "blockSize": 19}, "spec.blockSize", 19, "must be between 20 and 32"),
    ({"cidr": "10.0.0.0/16", "blockSize": 33}, "spec.blockSize", 33, "must be between 20 and 32"),
    ({"cidr": "10.0.0.0/16", "blockSize": "26"}, "spec.blockSize", "26", "must be of type integer"),
    ({"cidr": "10.0.0.0/16", "ipipMode": "Sometimes"}, "spec.ipipMode", "Sometimes",
     "must be one of Always, CrossSubnet, Never"),
    ({"cidr": "10.0.0.0/16", "vxlanMode": "Always", "ipipMode": "CrossSubnet"}, "spec.vxlanMode", "Always",
     "ipipMode and vxlanMode cannot both be enabled (ipipMode is 'CrossSubnet'): set one of them to Never"),
    ({"cidr": "10.0.0.0/16", "vxlanMode": "CrossSubnet", "ipipMode": "Always"}, "spec.vxlanMode", "CrossSubnet",
     "ipipMode and vxlanMode cannot both be enabled (ipipMode is 'Always'): set one of them to Never"),
    ({"cidr": "10.0.0.0/16", "vxlanMode": "Sometimes"}, "spec.vxlanMode", "Sometimes",
     "must be one of Always, CrossSubnet, Never"),
    ({"cidr": "10.0.0.0/16", "natOutgoing": "yes"}, "spec.natOutgoing", "yes", "must be of type boolean"),
    ({"cidr": "10.0.0.0/16", "nodeSelector": "zone == 'a' &&"}, "spec.nodeSelector", "zone == 'a' &&",
     "invalid selector at position 14: expected a label expression (all(), has(k), k == 'v', ...), "
     "found end of input"),
])
def test_ippool_errors(spec, field_path, value, problem):
    err = error_of(parse_ippool, obj("pool-a", spec))
    assert (err.kind, err.name, err.field_path, err.value, err.problem) == ("IPPool", "pool-a", field_path, value, problem)


def test_ippool_without_name_or_spec_object():
    assert error_of(parse_ippool, {"metadata": {}, "spec": {"cidr": "10.0.0.0/8"}}).field_path == "metadata.name"
    err = error_of(parse_ippool, obj("p", "10.0.0.0/8"))
    assert (err.field_path, err.problem) == ("spec", "must be an object")
    assert error_of(parse_ippool, ["not", "a", "dict"]).problem.startswith("not a Kubernetes object")


# --- BGPConfiguration ----------------------------------------------------------------------------

def test_bgp_configuration_defaults_match_dataclass_defaults():
    # but logSeverityScreen: an object says Info by default; no object at all leaves the daemon's level
    assert BGPConfiguration().log_severity_screen is None
    assert parse_bgp_configuration(obj("default"), SCHEMAS) == BGPConfiguration(log_severity_screen="Info")
    assert parse_bgp_configuration(obj("default", {}), SCHEMAS) == BGPConfiguration(log_severity_screen="Info")


def test_bgp_configuration_all_fields():
    config = parse_bgp_configuration(obj("default", {
        "asNumber": 4200000000, "nodeToNodeMeshEnabled": False,
        "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}], "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}],
        "serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}, {"cidr": "203.0.113.0/24"}],
        "listenPort": 1179, "logSeverityScreen": "Debug",
        "nodeMeshPassword": {"secretKeyRef": {"name": "bgp", "key": "mesh"}},
        "nodeMeshMaxRestartTime": "2m"}), SCHEMAS)
    assert config.as_number == 4200000000 and not config.node_to_node_mesh_enabled
    assert config.service_cluster_ips == (IPv4Network("10.96.0.0/12"),)
    assert config.service_external_ips == (IPv4Network("192.0.2.0/24"),)
    assert config.service_load_balancer_ips == (IPv4Network("198.51.100.0/24"), IPv4Network("203.0.113.0/24"))
    assert config.listen_port == 1179 and config.log_severity_screen == "Debug"
    assert config.node_mesh_password == SecretKeyRef("bgp", "mesh")
    assert config.node_mesh_max_restart_time == 120.0


@pytest.mark.parametrize("spec, field_path, value, problem", [
    ({"asNumber": 0}, "spec.asNumber", 0, "must be between 1 and 4294967295"),
    ({"asNumber": 4294967296}, "spec.asNumber", 4294967296, "must be between 1 and 4294967295"),
    ({"asNumber": "64512"}, "spec.asNumber", "64512", "must be of type integer"),
    ({"listenPort": 0}, "spec.listenPort", 0, "must be between 1 and 65535"),
    ({"logSeverityScreen": "Verbose"}, "spec.logSeverityScreen", "Verbose",
     "must be one of Debug, Info, Warning, Error, Fatal"),
    ({"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]}, "spec.serviceClusterIPs[0].cidr", "10.96.0.1/12",
     "host bits are set; the network is 10.96.0.0/12"),
    ({"serviceExternalIPs": [{"cidr": "10.0.0.0/8"}, {"cidr": "fd00::/8"}]}, "spec.serviceExternalIPs[1].cidr",
     "fd00::/8", "IPv6 service ranges are not supported yet"),
    ({"serviceLoadBalancerIPs": [{}]}, "spec.serviceLoadBalancerIPs[0].cidr", None, "required"),
    ({"serviceLoadBalancerIPs": ["10.0.0.0/8"]}, "spec.serviceLoadBalancerIPs[0]", "10.0.0.0/8",
     "must be an object {cidr: ...}"),
    ({"serviceClusterIPs": "10.0.0.0/8"}, "spec.serviceClusterIPs", "10.0.0.0/8", "must be a list of {cidr: ...}"),
    ({"nodeMeshPassword": {"secretKeyRef": {"name": "s"}}}, "spec.nodeMeshPassword.secretKeyRef.key", None,
     "required"),
    ({"nodeMeshPassword": {"secretKeyRef": {"name": "", "key": "k"}}}, "spec.nodeMeshPassword.secretKeyRef.name",
     "", "must not be empty"),
    ({"nodeMeshMaxRestartTime": "2 minutes"}, "spec.nodeMeshMaxRestartTime", "2 minutes",
     "not a valid duration (Go syntax, e.g. 90s, 1m30s, 2h, 500ms)"),
])
def test_bgp_configuration_errors(spec, field_path, value, problem):
    err = error_of(parse_bgp_configuration, obj("default", spec))
    assert (err.kind, err.name, err.field_path, err.value, err.problem) == \
        ("BGPConfiguration", "default", field_path, value, problem)


def test_effective_bgp_configuration_is_the_default_object():
    default = parse_bgp_configuration(obj("default", {"asNumber": 65001}), SCHEMAS)
    other = parse_bgp_configuration(obj("node.n1", {"asNumber": 65002}), SCHEMAS)
    assert effective_bgp_configuration({"node.n1": other, "default": default}) is default
    assert effective_bgp_configuration([other, default]) is default
    assert effective_bgp_configuration([other]) == BGPConfiguration()
    assert effective_bgp_configuration({}) == BGPConfiguration()


# --- BGPPeer ---------------------------------------------------------------------------------------

def test_bgp_peer_global_with_ip():
    peer = parse_bgp_peer(obj("tor", {"peerIP": "10.0.0.1", "asNumber": 65000}), SCHEMAS)
    assert peer == BGPPeer(name="tor", peer_ip=IPv4Address("10.0.0.1"), peer_port=179, as_number=65000)
    assert peer.is_global and peer.applies_to(NodeInfo("any"))


def test_bgp_peer_all_fields():
    peer = parse_bgp_peer(obj("tor", {
        "peerIP": "10.0.0.1:1179", "asNumber": 4294967295, "nodeSelector": "rack == 'r1'",
        "password": {"secretKeyRef": {"name": "bgp", "key": "tor"}}, "maxRestartTime": "1m30s",
        "keepOriginalNextHop": True, "sourceAddress": "None", "holdTime": "9s"}), SCHEMAS)
    assert (peer.peer_ip, peer.peer_port, peer.as_number) == (IPv4Address("10.0.0.1"), 1179, 4294967295)
    assert peer.node_selector == Selector("rack == 'r1'") and not peer.is_global
    assert peer.applies_to(NodeInfo("n", labels={"rack": "r1"}))
    assert not peer.applies_to(NodeInfo("n", labels={"rack": "r2"}))
    assert peer.password == SecretKeyRef("bgp", "tor")
    assert peer.max_restart_time == 90.0 and peer.hold_time == 9.0
    assert peer.keep_original_next_hop and peer.source_address == "None"


def test_bgp_peer_node_specific_with_peer_selector():
    peer = parse_bgp_peer(obj("to-rr", {"node": "n1", "peerSelector": "has(calyx.dev/rr)"}), SCHEMAS)
    assert peer.peer_ip is None and peer.as_number is None and peer.node == "n1"
    assert peer.peer_selector == Selector("has(calyx.dev/rr)")
    assert peer.applies_to(NodeInfo("n1")) and not peer.applies_to(NodeInfo("n2"))
    assert (peer.source_address, peer.keep_original_next_hop) == ("UseNodeIP", False)


@pytest.mark.parametrize("spec, field_path, value, problem", [
    ({"peerIP": "10.0.0.1"}, "spec.asNumber", None, "required with peerIP"),
    ({"peerIP": "10.0.0.1", "asNumber": "65000"}, "spec.asNumber", "65000", "must be of type integer"),
    ({"peerIP": "10.0.0.1", "asNumber": 0}, "spec.asNumber", 0, "must be between 1 and 4294967295"),
    ({"peerIP": "10.0.0.1", "asNumber": 4294967296}, "spec.asNumber", 4294967296,
     "must be between 1 and 4294967295"),
    ({"peerIP": "10.0.0.256", "asNumber": 1}, "spec.peerIP", "10.0.0.256", "not a valid IPv4 address (or address:port)"),
    ({"peerIP": "10.0.0.1:0", "asNumber": 1}, "spec.peerIP", "10.0.0.1:0", "port '0' is not a number in 1..65535"),
    ({"peerIP": "10.0.0.1:x", "asNumber": 1}, "spec.peerIP", "10.0.0.1:x", "port 'x' is not a number in 1..65535"),
    ({"peerIP": "fd00::1", "asNumber": 1}, "spec.peerIP", "fd00::1", "IPv6 peers are not supported yet"),
    ({"peerIP": "[fd00::1]:179", "asNumber": 1}, "spec.peerIP", "[fd00::1]:179", "IPv6 peers are not supported yet"),
    ({"asNumber": 1}, "spec.peerIP", None, "exactly one of peerIP and peerSelector must be set (neither is set)"),
    ({"peerSelector": "all()", "asNumber": 65000}, "spec.asNumber", 65000,
     "set only with peerIP: with peerSelector each selected node's own AS number is used"),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "peerSelector": "all()"}, "spec.peerIP", "10.0.0.1",
     "exactly one of peerIP and peerSelector must be set (both are set)"),
    ({"peerSelector": "all()", "node": "n1", "nodeSelector": "all()"}, "spec.nodeSelector", "all()",
     "node ('n1') and nodeSelector are mutually exclusive (set neither for a global peer)"),
    ({"peerSelector": "a in {"}, "spec.peerSelector", "a in {",
     "invalid selector at position 6: expected a quoted string, found end of input"),
    ({"peerSelector": "all()", "nodeSelector": "x ="}, None, None, None),   # k8s syntax: x="" is valid
    ({"peerSelector": "all()", "node": ""}, "spec.node", "", "must not be empty"),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "holdTime": "90"}, "spec.holdTime", "90",
     "not a valid duration (Go syntax, e.g. 90s, 1m30s, 2h, 500ms)"),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "holdTime": "2s"}, "spec.holdTime", "2s",
     "must be 0 or between 3s and 65535s (RFC 4271)"),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "maxRestartTime": "-5s"}, "spec.maxRestartTime", "-5s",
     "not a valid duration (Go syntax, e.g. 90s, 1m30s, 2h, 500ms)"),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "sourceAddress": "Auto"}, "spec.sourceAddress", "Auto",
     "must be one of UseNodeIP, None"),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "password": {"secretKeyRef": {"key": "k"}}},
     "spec.password.secretKeyRef.name", None, "required"),
])
def test_bgp_peer_errors(spec, field_path, value, problem):
    if field_path is None:
        parse_bgp_peer(obj("peer", spec), SCHEMAS)
        return
    err = error_of(parse_bgp_peer, obj("peer", spec))
    assert (err.kind, err.name, err.field_path, err.value, err.problem) == ("BGPPeer", "peer", field_path, value, problem)


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0), ("90s", 90.0), ("1m30s", 90.0), ("2h", 7200.0), ("500ms", 0.5), ("1.5h", 5400.0),
    ("1h2m3s", 3723.0), ("250us", 0.00025), ("10µs", 0.00001), ("100ns", 1e-7), (".5s", 0.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "90", "s", "1d", "-1s", "1m 30s", "1.2.3s", " 5s", 90])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# --- Node ---------------------------------------------------------------------------------------

def node_obj(name="n1", annotations=None, labels=None, spec=None, addresses=None, **meta):
    return {"metadata": {"name": name, "annotations": annotations or {}, "labels": labels or {}, **meta},
            "spec": spec or {}, "status": {"addresses": addresses or []}}


def test_node_from_annotations():
    node = parse_node(node_obj(annotations={
        "calyx.dev/ipv4-address": "10.0.0.5/24", "calyx.dev/as-number": "64513",
        "calyx.dev/route-reflector-cluster-id": "244.0.0.1", "calyx.dev/ipv4-ipip-tunnel-addr": "10.244.1.1"},
        labels={"zone": "a"}, addresses=[{"type": "InternalIP", "address": "192.168.0.5"}]))
    assert node.bgp_address == IPv4Interface("10.0.0.5/24")
    assert node.internal_ip == IPv4Address("192.168.0.5")
    assert node.as_number == 64513 and node.rr_cluster_id == "244.0.0.1" and node.is_route_reflector
    assert node.tunnel_address_override == IPv4Address("10.244.1.1")
    assert node.labels == {"zone": "a"} and not node.deleting


@pytest.mark.parametrize("mode", ["Always", "CrossSubnet"])
def test_ippool_vxlan_modes_are_accepted(mode):
    pool = parse_ippool(obj("pool-v", {"cidr": "10.0.0.0/16", "vxlanMode": mode}), SCHEMAS)
    assert pool.vxlan_mode == EncapMode(mode) and pool.ipip_mode == EncapMode.NEVER


def test_node_vxlan_tunnel_annotations():
    node = parse_node(node_obj(annotations={"calyx.dev/ipv4-vxlan-tunnel-addr": "10.244.1.0",
                                            "calyx.dev/vxlan-tunnel-mac": "66:1F:2a:00:01:02"}))
    assert node.vxlan_tunnel_address == IPv4Address("10.244.1.0")
    assert node.vxlan_tunnel_mac == "66:1f:2a:00:01:02"
    bare = parse_node(node_obj())
    assert bare.vxlan_tunnel_address is None and bare.vxlan_tunnel_mac is None


def test_node_falls_back_to_internal_ip_as_slash_32():
    node = parse_node(node_obj(addresses=[{"type": "Hostname", "address": "n1"},
                                          {"type": "InternalIP", "address": "fd00::5"},
                                          {"type": "InternalIP", "address": "10.0.0.7"}]))
    assert node.bgp_address == IPv4Interface("10.0.0.7/32") and node.internal_ip == IPv4Address("10.0.0.7")
    assert node.as_number is None and not node.is_route_reflector


def test_node_without_any_address():
    node = parse_node({"metadata": {"name": "bare"}})
    assert node == NodeInfo(name="bare")


def test_node_pod_cidrs_keep_ipv4_and_legacy_field():
    dual = parse_node(node_obj(spec={"podCIDRs": ["fd00:1::/64", "10.244.1.0/24"], "podCIDR": "fd00:1::/64"}))
    assert dual.pod_cidrs == (IPv4Network("10.244.1.0/24"),)
    legacy = parse_node(node_obj(spec={"podCIDR": "10.244.2.0/24"}))
    assert legacy.pod_cidrs == (IPv4Network("10.244.2.0/24"),)
    assert parse_node(node_obj(spec={"podCIDR": "fd00::/64"})).pod_cidrs == ()


def test_node_deleting():
    assert parse_node(node_obj(deletionTimestamp="2024-01-01T00:00:00Z")).deleting


@pytest.mark.parametrize("raw, field_path, value, problem", [
    (node_obj(annotations={"calyx.dev/ipv4-address": "10.0.0.5/33"}),
     "metadata.annotations[calyx.dev/ipv4-address]", "10.0.0.5/33",
     "not a valid IPv4 address with prefix (e.g. 10.0.0.5/24)"),
    (node_obj(annotations={"calyx.dev/ipv4-address": "fd00::5/64"}),
     "metadata.annotations[calyx.dev/ipv4-address]", "fd00::5/64", "IPv6 node addresses are not supported yet"),
    (node_obj(annotations={"calyx.dev/as-number": "AS64512"}),
     "metadata.annotations[calyx.dev/as-number]", "AS64512", "not a valid AS number (1..4294967295)"),
    (node_obj(annotations={"calyx.dev/as-number": "0"}),
     "metadata.annotations[calyx.dev/as-number]", "0", "not a valid AS number (1..4294967295)"),
    (node_obj(annotations={"calyx.dev/route-reflector-cluster-id": "cluster-1"}),
     "metadata.annotations[calyx.dev/route-reflector-cluster-id]", "cluster-1",
     "not a valid IPv4-formatted route reflector cluster ID (e.g. 244.0.0.1)"),
    (node_obj(annotations={"calyx.dev/ipv4-ipip-tunnel-addr": "10.244.1.300"}),
     "metadata.annotations[calyx.dev/ipv4-ipip-tunnel-addr]", "10.244.1.300", "not a valid IPv4 address"),
    (node_obj(annotations={"calyx.dev/ipv4-vxlan-tunnel-addr": "10.244.1"}),
     "metadata.annotations[calyx.dev/ipv4-vxlan-tunnel-addr]", "10.244.1", "not a valid IPv4 address"),
    (node_obj(annotations={"calyx.dev/ipv4-vxlan-tunnel-addr": "fd00::1"}),
     "metadata.annotations[calyx.dev/ipv4-vxlan-tunnel-addr]", "fd00::1",
     "IPv6 is not supported yet (expected an IPv4 address)"),
    (node_obj(annotations={"calyx.dev/vxlan-tunnel-mac": "66-1f-2a-00-01-02"}),
     "metadata.annotations[calyx.dev/vxlan-tunnel-mac]", "66-1f-2a-00-01-02",
     "not a valid MAC address (six hex octets separated by colons, e.g. 66:1f:2a:00:01:02)"),
    (node_obj(annotations={"calyx.dev/vxlan-tunnel-mac": "66:1f:2a:00:01"}),
     "metadata.annotations[calyx.dev/vxlan-tunnel-mac]", "66:1f:2a:00:01",
     "not a valid MAC address (six hex octets separated by colons, e.g. 66:1f:2a:00:01:02)"),
    (node_obj(annotations={"calyx.dev/vxlan-tunnel-mac": "01:00:5e:00:00:01"}),
     "metadata.annotations[calyx.dev/vxlan-tunnel-mac]", "01:00:5e:00:00:01",
     "a multicast MAC address cannot be a VXLAN tunnel endpoint"),
    (node_obj(annotations={"calyx.dev/vxlan-tunnel-mac": "00:00:00:00:00:00"}),
     "metadata.annotations[calyx.dev/vxlan-tunnel-mac]", "00:00:00:00:00:00",
     "the all-zero MAC address cannot be a VXLAN tunnel endpoint"),
    (node_obj(spec={"podCIDRs": ["10.244.1.5/24"]}), "spec.podCIDRs[0]", "10.244.1.5/24",
     "host bits are set; the network is 10.244.1.0/24"),
    (node_obj(spec={"podCIDR": "garbage"}), "spec.podCIDR", "garbage",
     "not a valid IPv4 CIDR (expected address/prefix-length)"),
    (node_obj(addresses=[{"type": "InternalIP", "address": "10.0.0"}]), "status.addresses[0].address", "10.0.0",
     "not a valid IPv4 address"),
    (node_obj(labels={"a": 1}), "metadata.labels", {"a": 1}, "must be a map of strings"),
])
def test_node_errors(raw, field_path, value, problem):
    err = error_of(parse_node, raw)
    assert (err.kind, err.name, err.field_path, err.value, err.problem) == ("Node", "n1", field_path, value, problem)


# --- Pod ----------------------------------------------------------------------------------------

def pod_obj(status=None, spec=None, **meta):
    return {"metadata": {"namespace": "web", "name": "nginx-1", **meta},
            "spec": {"nodeName": "n1", **(spec or {})}, "status": status or {}}


def test_pod_fields():
    pod = parse_pod(pod_obj({"phase": "Running", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
                             "podIP": "10.244.1.5"}))
    assert pod.key == ("web", "nginx-1") and pod.node == "n1" and pod.phase == "Running"
    assert pod.ips == (IPv4Address("10.244.1.5"),) and not pod.host_network and not pod.deleting


def test_pod_legacy_pod_ip_host_network_and_deletion():
    pod = parse_pod(pod_obj({"podIP": "10.244.1.6"}, {"hostNetwork": True}, deletionTimestamp="2024-01-01T00:00:00Z"))
    assert pod.ips == (IPv4Address("10.244.1.6"),) and pod.host_network and pod.deleting
    pending = parse_pod({"metadata": {"namespace": "a", "name": "b"}})
    assert (pending.node, pending.ips, pending.phase) == (None, (), "")


@pytest.mark.parametrize("raw, name, field_path, value", [
    (pod_obj({"podIPs": [{"ip": "10.244.1"}]}), "web/nginx-1", "status.podIPs[0].ip", "10.244.1"),
    (pod_obj({"podIP": "x"}), "web/nginx-1", "status.podIP", "x"),
    ({"metadata": {"name": "a"}}, "None/a", "metadata.namespace", None),
    ({"metadata": {"namespace": "a"}}, "a/None", "metadata.name", None),
])
def test_pod_errors(raw, name, field_path, value):
    err = error_of(parse_pod, raw)
    assert (err.kind, err.name, err.field_path, err.value) == ("Pod", name, field_path, value)


# --- IPAMBlock ----------------------------------------------------------------------------------

def test_block_name():
    assert block_name(IPv4Network("10.244.1.0/26")) == "10-244-1-0-26"
    assert block_name("192.168.255.192/26") == "192-168-255-192-26"


def test_ipam_block():
    block = parse_ipam_block(obj("10-244-1-64-26", {"cidr": "10.244.1.64/26", "affinity": "host:n1", "pool": "p"}), SCHEMAS)
    assert block == IPAMBlock(name="10-244-1-64-26", cidr=IPv4Network("10.244.1.64/26"), node="n1", pool="p",
                              deleted=False)
    released = parse_ipam_block(obj("10-244-1-0-26", {"cidr": "10.244.1.0/26", "deleted": True}), SCHEMAS)
    assert released.node is None and released.pool is None and released.deleted


@pytest.mark.parametrize("name, spec, field_path, value, problem", [
    ("x", {"cidr": "10.244.1.0/26"}, "metadata.name", "x", "must be '10-244-1-0-26', derived from spec.cidr '10.244.1.0/26'"),
    ("b", {}, "spec.cidr", None, "required"),
    ("b", {"cidr": "10.244.1.1/26"}, "spec.cidr", "10.244.1.1/26", "host bits are set; the network is 10.244.1.0/26"),
    ("b", {"cidr": "fd00::/122"}, "spec.cidr", "fd00::/122", "IPv6 blocks are not supported yet"),
    ("10-244-1-0-26", {"cidr": "10.244.1.0/26", "affinity": "n1"}, "spec.affinity", "n1", "must be host:<node name>"),
    ("10-244-1-0-26", {"cidr": "10.244.1.0/26", "affinity": "host:"}, "spec.affinity", "host:",
     "must be host:<node name>"),
    ("10-244-1-0-26", {"cidr": "10.244.1.0/26", "deleted": "no"}, "spec.deleted", "no", "must be of type boolean"),
])
def test_ipam_block_errors(name, spec, field_path, value, problem):
    err = error_of(parse_ipam_block, obj(name, spec))
    assert (err.kind, err.name, err.field_path, err.value, err.problem) == ("IPAMBlock", name, field_path, value, problem)


# --- Secret -------------------------------------------------------------------------------------

def test_secret_decoding_and_error_hides_value():
    key, values = parse_secret({"metadata": {"namespace": "calyx-system", "name": "bgp"},
                                "data": {"mesh": base64.b64encode(b"s3cret").decode()},
                                "stringData": {"tor": "plain"}})
    assert key == ("calyx-system", "bgp") and values == {"mesh": "s3cret", "tor": "plain"}
    err = error_of(parse_secret, {"metadata": {"namespace": "ns", "name": "bgp"}, "data": {"mesh": "!!s3cret!!"}})
    assert "s3cret" not in str(err) and err.field_path == "data[mesh]"


def test_parsers_table_covers_every_kind():
    assert set(model.parsers(SCHEMAS)) == {"IPPool", "BGPConfiguration", "BGPPeer", "IPAMBlock", "Node", "Pod",
                                           "Service", "EndpointSlice"}
    assert set(model.parsers(SCHEMAS)) >= SCHEMAS.kinds


# --- Derived facts ------------------------------------------------------------------------------

BLOCKS = {b.name: b for b in [
    IPAMBlock("10-244-0-64-26", IPv4Network("10.244.0.64/26"), "n1", "p"),
    IPAMBlock("10-244-0-0-26", IPv4Network("10.244.0.0/26"), "n1", "p"),
    IPAMBlock("10-244-0-128-26", IPv4Network("10.244.0.128/26"), "n2", "p"),
    IPAMBlock("10-244-0-192-26", IPv4Network("10.244.0.192/26"), "n1", "p", deleted=True),
]}


def test_node_pod_cidrs_prefers_spec_then_sorted_blocks():
    assert node_pod_cidrs(NodeInfo("n1"), BLOCKS) == (IPv4Network("10.244.0.0/26"), IPv4Network("10.244.0.64/26"))
    assert node_pod_cidrs(NodeInfo("n3"), BLOCKS) == ()
    assert node_pod_cidrs(NodeInfo("n1")) == ()
    spec = NodeInfo("n1", pod_cidrs=(IPv4Network("10.1.0.0/24"),))
    assert node_pod_cidrs(spec, BLOCKS) == (IPv4Network("10.1.0.0/24"),)


def test_node_tunnel_address():
    assert node_tunnel_address(NodeInfo("n1"), BLOCKS) == IPv4Address("10.244.0.0")
    assert node_tunnel_address(NodeInfo("n3"), BLOCKS) is None
    override = NodeInfo("n1", tunnel_address_override=IPv4Address("10.244.0.1"))
    assert node_tunnel_address(override, BLOCKS) == IPv4Address("10.244.0.1")


def test_routing_pools_include_disabled_ones_and_allocating_pools_do_not():
    pools = {p.name: p for p in [
        IPPool("wide", IPv4Network("10.0.0.0/8")),
        IPPool("narrow", IPv4Network("10.1.0.0/16"), node_selector=Selector("zone == 'a'")),
        IPPool("off", IPv4Network("10.1.2.0/24"), disabled=True),
    ]}
    zone_a, zone_b = NodeInfo("n", labels={"zone": "a"}), NodeInfo("n", labels={"zone": "b"})
    assert [p.name for p in allocating_pools_for_node(pools, zone_a)] == ["narrow", "wide"]
    assert [p.name for p in allocating_pools_for_node(pools, zone_b)] == ["wide"]
    assert [p.name for p in routing_pools_for_node(pools, zone_a)] == ["narrow", "off", "wide"]
    assert [p.name for p in routing_pools_for_node(pools, zone_b)] == ["off", "wide"]
    assert routing_pool_containing(pools, IPv4Address("10.1.2.3")).name == "off"     # disabled still routes
    assert routing_pool_containing(pools, IPv4Network("10.1.0.0/26")).name == "narrow"
    assert routing_pool_containing(pools, IPv4Network("10.0.0.0/7")) is None
    assert routing_pool_containing(pools, IPv4Address("10.9.9.9")).name == "wide"
    assert routing_pool_containing(pools, IPv4Address("192.168.0.1")) is None


def test_ippool_keeps_its_creation_time():
    pool = parse_ippool({"metadata": {"name": "p", "creationTimestamp": "2026-01-02T03:04:05Z"},
                         "spec": {"cidr": "10.244.0.0/16"}}, SCHEMAS)
    assert pool.created == "2026-01-02T03:04:05Z"
    assert parse_ippool({"metadata": {"name": "p"}, "spec": {"cidr": "10.244.0.0/16"}}, SCHEMAS).created == ""


# --- Names shared by the CNI plugin and felix ----------------------------------------------------

def test_cali_interface_name():
    # sha1("default.nginx") = c440f455693f...; Calico names the same pod's veth the same way.
    assert naming.cali_interface_name("default", "nginx") == "calic440f455693"
    name = naming.cali_interface_name("kube-system", "coredns-5d78c9869d-abcde")
    assert len(name) == 15 and naming.is_cali_interface(name)
    assert naming.cali_interface_name("a", "b.c") != naming.cali_interface_name("a.b", "c.d")
    assert not naming.is_cali_interface("calixyz") and not naming.is_cali_interface("eth0")
    assert (naming.FELIX_ROUTE_PROTOCOL, naming.BGPD_ROUTE_PROTOCOL) == (80, 186)
    assert (naming.TUNNEL_DEVICE, naming.HOST_VETH_MAC, naming.POD_GATEWAY) == \
        ("tunl0", "ee:ee:ee:ee:ee:ee", "169.254.1.1")


# --- The model and the CRD pattern agree on CIDR text --------------------------------------------

cidr_texts = st.one_of(
    st.builds(lambda a, b, c, d, p: f"{a}.{b}.{c}.{d}/{p}",
              *[st.sampled_from(["0", "10", "255", "256", "01", "1"])] * 4, st.sampled_from(["0", "8", "32", "33", "08", ""])),
    st.text(alphabet="0123456789./:", max_size=18),
)


@settings(max_examples=400, deadline=None)
@given(cidr_texts)
def test_ippool_cidr_refusals_agree_with_the_crd_pattern(text):
    pattern = crds.crd("IPPool").spec_schema["properties"]["cidr"]["pattern"]
    try:
        parse_ippool(obj("p", {"cidr": text, "blockSize": 32}), SCHEMAS)
        accepted = True
    except ValidationError as err:
        accepted = False
        assert err.field_path in ("spec.cidr", "spec.blockSize")
    if accepted:
        assert re.search(pattern, text), text
