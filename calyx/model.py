"""Calyx's resource model: typed, validated views of the Kubernetes objects Calyx reads.

Pure calculation: every function here turns a raw Kubernetes object (the JSON dict the API
returns, camelCase keys) into a frozen dataclass, or raises :class:`ValidationError` naming
the object, the field and the offending value. felix, bgpd and the CNI plugin all read
resources through this module; nobody else parses raw objects.

Defaults, enums and ranges come from the CRD YAML in ``charts/calyx/crds/``, the single source
of the schema: each parser of a custom resource takes the kinds' spec schemas as data (a
:class:`calyx.specschema.SpecSchemas`, read by :func:`calyx.crds.spec_schemas`), fills in the
schema's defaults and validates the ``spec`` against it. This module
adds the checks a schema cannot express (CIDR parsing with precise messages, IPv6 refusal,
XOR rules, selector syntax, durations). Pods and Nodes are core objects and are parsed
directly, without a schema, because felix parses thousands of them.
"""
from __future__ import annotations

import base64
import binascii
import enum
import re
import sys
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address, ip_interface, ip_network
from typing import Any, Callable, Iterable, Mapping

from calyx.naming import CRD_GROUP as GROUP, CRD_VERSION as VERSION
from calyx.selector import Selector, SelectorError
from calyx.specschema import SpecSchemas
API_VERSION = f"{GROUP}/{VERSION}"

KIND_IPPOOL = "IPPool"
KIND_BGP_CONFIGURATION = "BGPConfiguration"
KIND_BGP_PEER = "BGPPeer"
KIND_IPAM_BLOCK = "IPAMBlock"
KIND_NODE = "Node"
KIND_POD = "Pod"
KIND_SECRET = "Secret"
KIND_SERVICE = "Service"
KIND_ENDPOINT_SLICE = "EndpointSlice"

# Node annotations (Calico's projectcalico.org/* equivalents).
ANNOTATION_IPV4_ADDRESS = "calyx.dev/ipv4-address"            # "10.0.0.5/24"
ANNOTATION_AS_NUMBER = "calyx.dev/as-number"                  # "64513"
ANNOTATION_RR_CLUSTER_ID = "calyx.dev/route-reflector-cluster-id"  # "224.0.0.1"
ANNOTATION_TUNNEL_ADDR = "calyx.dev/ipv4-ipip-tunnel-addr"    # "10.244.1.0"
# The node's VXLAN tunnel endpoint, published by its felix (Calico: projectcalico.org/
# IPv4VXLANTunnelAddr and VXLANTunnelMACAddr).
ANNOTATION_VXLAN_TUNNEL_ADDR = "calyx.dev/ipv4-vxlan-tunnel-addr"  # "10.244.1.0"
ANNOTATION_VXLAN_TUNNEL_MAC = "calyx.dev/vxlan-tunnel-mac"        # "66:1f:2a:00:01:02"

# BGPPeer.spec.sourceAddress: bind the session to the node's BGP address, or let the kernel pick.
SOURCE_ADDRESS_NODE_IP = "UseNodeIP"
SOURCE_ADDRESS_NONE = "None"

DEFAULT_AS_NUMBER = 64512
DEFAULT_BGP_PORT = 179
DEFAULT_BGP_CONFIGURATION_NAME = "default"
MAX_AS_NUMBER = 4294967295
BLOCK_AFFINITY_PREFIX = "host:"


# BGPPeer.spec.failureDetectionMode (and BGPConfiguration.spec.nodeMeshFailureDetectionMode)
FAILURE_DETECTION_NONE = "None"
FAILURE_DETECTION_BFD = "BFDIfDirectlyConnected"
BFD_INTERVAL_MIN_MS = 10
BFD_INTERVAL_MAX_MS = 60000


class ValidationError(ValueError):
    """A resource that cannot be used. Its message names kind, object, field and value."""

    def __init__(self, kind: str, name: str, field_path: str, value: Any, problem: str):
        self.kind = kind
        self.name = name
        self.field_path = field_path
        self.value = value
        self.problem = problem
        super().__init__(f"{kind} {name!r}: {field_path}: {value!r}: {problem}")


class EncapMode(str, enum.Enum):
    """IPPool.spec.ipipMode (and vxlanMode): when traffic between nodes is encapsulated."""

    ALWAYS = "Always"
    CROSS_SUBNET = "CrossSubnet"
    NEVER = "Never"


@dataclass(frozen=True, order=True)
class ObjectName:
    """Which object: its kind, name and, for a namespaced kind, namespace. Names the object
    that refers to another (a BGPPeer naming a Secret) in messages and Events."""

    kind: str
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret. Secrets live in the daemons' own namespace (config: CALYX_NAMESPACE)."""

    name: str
    key: str


@dataclass(frozen=True)
class IPPool:
    name: str
    cidr: IPv4Network
    block_size: int = 26
    ipip_mode: EncapMode = EncapMode.NEVER
    vxlan_mode: EncapMode = EncapMode.NEVER
    nat_outgoing: bool = False
    disabled: bool = False
    node_selector: Selector = field(default_factory=Selector.all)
    disable_bgp_export: bool = False
    created: str = ""     # metadata.creationTimestamp (RFC 3339): the older of two overlapping pools wins

    def selects(self, node: "NodeInfo") -> bool:
        return self.node_selector.matches(node.labels)


@dataclass(frozen=True)
class BGPConfiguration:
    """The effective global BGP configuration (the object named ``default``, or all defaults)."""

    name: str = DEFAULT_BGP_CONFIGURATION_NAME
    as_number: int = DEFAULT_AS_NUMBER
    node_to_node_mesh_enabled: bool = True
    service_cluster_ips: tuple[IPv4Network, ...] = ()
    service_external_ips: tuple[IPv4Network, ...] = ()
    service_load_balancer_ips: tuple[IPv4Network, ...] = ()
    listen_port: int = DEFAULT_BGP_PORT
    log_severity_screen: str | None = None    # Debug|Info|Warning|Error|Fatal; None: no "default" object
    node_mesh_password: SecretKeyRef | None = None
    node_mesh_max_restart_time: float | None = None   # seconds
    node_mesh_failure_detection_mode: str = FAILURE_DETECTION_NONE   # of the mesh sessions
    bfd_minimum_recv_interval: float = 0.3     # seconds (whole milliseconds)
    bfd_minimum_send_interval: float = 0.3     # seconds (whole milliseconds)
    bfd_multiplier: int = 3


@dataclass(frozen=True)
class BGPPeer:
    name: str
    peer_ip: IPv4Address | None = None
    peer_port: int = DEFAULT_BGP_PORT
    as_number: int | None = None
    node: str | None = None
    node_selector: Selector | None = None
    peer_selector: Selector | None = None
    password: SecretKeyRef | None = None
    max_restart_time: float | None = None   # seconds
    keep_original_next_hop: bool = False
    source_address: str = SOURCE_ADDRESS_NODE_IP    # SOURCE_ADDRESS_NODE_IP | SOURCE_ADDRESS_NONE
    hold_time: float | None = None          # seconds
    failure_detection_mode: str = FAILURE_DETECTION_NONE   # FAILURE_DETECTION_NONE | FAILURE_DETECTION_BFD

    @property
    def is_global(self) -> bool:
        return self.node is None and self.node_selector is None

    def applies_to(self, node: "NodeInfo") -> bool:
        """True when ``node`` opens this session (global, named, or selected)."""
        if self.node is not None:
            return self.node == node.name
        if self.node_selector is not None:
            return self.node_selector.matches(node.labels)
        return True


@dataclass(frozen=True)
class NodeInfo:
    """What Calyx needs to know about a Kubernetes Node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    bgp_address: IPv4Interface | None = None     # annotation, else InternalIP (/32 if prefix unknown)
    as_number: int | None = None                 # annotation; None means the global AS
    rr_cluster_id: str | None = None             # set: this node is a route reflector
    tunnel_address_override: IPv4Address | None = None
    pod_cidrs: tuple[IPv4Network, ...] = ()      # node.spec.podCIDRs (IPv4 entries)
    internal_ip: IPv4Address | None = None
    deleting: bool = False
    vxlan_tunnel_address: IPv4Address | None = None   # the node's VTEP address (annotation)
    vxlan_tunnel_mac: str | None = None              # the node's VTEP MAC, lower case (annotation)

    @property
    def is_route_reflector(self) -> bool:
        return self.rr_cluster_id is not None


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    node: str | None
    ips: tuple[IPv4Address, ...] = ()
    host_network: bool = False
    phase: str = ""
    deleting: bool = False
    labels: tuple[tuple[str, str], ...] = ()                 # sorted (key, value) pairs
    container_ports: tuple[tuple[str, str, int], ...] = ()   # named ones: (name, protocol, port)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class IPAMBlock:
    """A block of a pool claimed by (affine to) one node: Calyx's own pod CIDR allocation.

    The object is named after the CIDR (:func:`block_name`), so two nodes claiming the same
    block collide on the name. ``deleted`` marks a block being released: it is no longer one
    of the node's pod CIDRs even while its affinity is still set.
    """

    name: str
    cidr: IPv4Network
    node: str | None          # from spec.affinity "host:<node>"; None once released
    pool: str | None = None
    deleted: bool = False


# --- Field parsers shared by the resource parsers ---------------------------------------------

@dataclass(frozen=True)
class Where:
    """Which object an error is about: kind and name (namespace/name for namespaced objects)."""

    kind: str
    name: str

    def error(self, field_path: str, value: Any, problem: str) -> ValidationError:
        return ValidationError(self.kind, self.name, field_path, value, problem)


def _metadata(kind: str, obj: Mapping[str, Any]) -> tuple[Where, Mapping[str, Any]]:
    if not isinstance(obj, Mapping):
        raise ValidationError(kind, "?", "(object)", obj, "not a Kubernetes object (expected a mapping)")
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ValidationError(kind, "?", "metadata.name", name, "required")
    return Where(kind, name), meta


def _custom_spec(where: Where, obj: Mapping[str, Any], schemas: SpecSchemas) -> dict[str, Any]:
    """The object's spec with the CRD's defaults applied (not yet validated)."""
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise where.error("spec", spec, "must be an object")
    return schemas.defaulted(where.kind, spec)


def _validate_against_crd(where: Where, spec: Mapping[str, Any], schemas: SpecSchemas) -> None:
    """Raise the first (by field path) violation of the kind's CRD spec schema."""
    validator = schemas.validator(where.kind)
    if validator.is_valid(spec):
        return
    errors = list(validator.iter_errors(spec))
    error = min(errors, key=lambda e: [str(p) for p in e.absolute_path])
    path = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "required":
        missing = next((k for k in error.validator_value if k not in error.instance), "?")
        raise where.error(f"{path}.{missing}", None, "required")
    if error.validator == "type":
        raise where.error(path, error.instance, f"must be of type {error.validator_value}")
    if error.validator == "enum":
        raise where.error(path, error.instance, "must be one of " + ", ".join(map(str, error.validator_value)))
    if error.validator in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f"at least {low}" if low is not None else f"at most {high}")
        raise where.error(path, error.instance, f"must be {bounds}")
    if error.validator == "minLength" and error.validator_value == 1:
        raise where.error(path, error.instance, "must not be empty")
    if error.validator == "pattern":
        raise where.error(path, error.instance, f"does not match the pattern {error.validator_value}")
    raise where.error(path, error.instance, error.message)


def _ipv4_network(where: Where, path: str, value: Any, ipv6_problem: str) -> IPv4Network:
    """A strict IPv4 CIDR ("10.244.0.0/16"); host bits set, IPv6 or any other form refused."""
    if not isinstance(value, str):
        raise where.error(path, value, "required" if value is None else "must be a string (an IPv4 CIDR)")
    address, slash, prefix = value.partition("/")
    if not slash or not prefix.isdigit():
        raise where.error(path, value, "not a valid IPv4 CIDR (expected address/prefix-length)")
    try:
        network = ip_network(value, strict=False)
    except ValueError:
        raise where.error(path, value, "not a valid IPv4 CIDR") from None
    if network.version != 4:
        raise where.error(path, value, ipv6_problem)
    if network.network_address != ip_address(address):
        raise where.error(path, value, f"host bits are set; the network is {network}")
    return network


def _ipv4_address(where: Where, path: str, value: Any, what: str = "IPv4 address") -> IPv4Address:
    if not isinstance(value, str):
        raise where.error(path, value, f"must be a string (an {what})")
    try:
        address = ip_address(value)
    except ValueError:
        raise where.error(path, value, f"not a valid {what}") from None
    if address.version != 4:
        raise where.error(path, value, f"IPv6 is not supported yet (expected an {what})")
    return address


_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def _unicast_mac(where: Where, path: str, value: Any) -> str:
    """A unicast Ethernet address written as six colon-separated hex octets, lower-cased."""
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        raise where.error(path, value, "not a valid MAC address (six hex octets separated by colons, "
                                       "e.g. 66:1f:2a:00:01:02)")
    if int(value[:2], 16) & 1:
        raise where.error(path, value, "a multicast MAC address cannot be a VXLAN tunnel endpoint")
    if value == "00:00:00:00:00:00":
        raise where.error(path, value, "the all-zero MAC address cannot be a VXLAN tunnel endpoint")
    return value.lower()


def _selector(where: Where, path: str, value: Any) -> Selector | None:
    if value is None:
        return None
    try:
        return Selector.parse(value)
    except SelectorError as err:
        raise where.error(path, value, err.detail) from None


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string ("90s", "1m30s", "2h", "500ms", "0"); negative refused.

    Raises ValueError on anything else.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string, not {type(text).__name__}")
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    while position < len(text):
        part = _DURATION_PART.match(text, position)
        if not part:
            break
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        position = part.end()
    if not text or position != len(text):
        raise ValueError("not a valid duration (Go syntax, e.g. 90s, 1m30s, 2h, 500ms)")
    return total


def _duration(where: Where, path: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise where.error(path, value, str(err)) from None


def _secret_key_ref(holder: Mapping[str, Any] | None) -> SecretKeyRef | None:
    """{secretKeyRef: {name, key}} (already schema-validated) -> SecretKeyRef."""
    if not holder:
        return None
    ref = holder["secretKeyRef"]
    return SecretKeyRef(name=ref["name"], key=ref["key"])


def _cidr_list(where: Where, spec: Mapping[str, Any], key: str) -> tuple[IPv4Network, ...]:
    items = spec.get(key) or []
    if not isinstance(items, list):
        raise where.error(f"spec.{key}", items, "must be a list of {cidr: ...}")
    networks = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise where.error(f"spec.{key}[{index}]", item, "must be an object {cidr: ...}")
        networks.append(_ipv4_network(where, f"spec.{key}[{index}].cidr", item.get("cidr"),
                                      "IPv6 service ranges are not supported yet"))
    return tuple(networks)


def _as_number(where: Where, path: str, value: Any) -> int:
    if not isinstance(value, str) or not value.isdigit() or not 1 <= int(value) <= MAX_AS_NUMBER:
        raise where.error(path, value, f"not a valid AS number (1..{MAX_AS_NUMBER})")
    return int(value)


# --- Parsing: raw Kubernetes object (dict) -> dataclass, or ValidationError --------------

def parse_ippool(obj: Mapping[str, Any], schemas: SpecSchemas) -> IPPool:
    where, meta = _metadata(KIND_IPPOOL, obj)
    spec = _custom_spec(where, obj, schemas)
    cidr = _ipv4_network(where, "spec.cidr", spec.get("cidr"), "IPv6 pools are not supported yet")
    selector = _selector(where, "spec.nodeSelector", spec.get("nodeSelector"))
    _validate_against_crd(where, spec, schemas)
    if spec["blockSize"] < cidr.prefixlen:
        raise where.error("spec.blockSize", spec["blockSize"],
                          f"must be at least the pool's prefix length /{cidr.prefixlen}")
    if spec["vxlanMode"] != EncapMode.NEVER.value and spec["ipipMode"] != EncapMode.NEVER.value:
        raise where.error("spec.vxlanMode", spec["vxlanMode"],
                          f"ipipMode and vxlanMode cannot both be enabled (ipipMode is {spec['ipipMode']!r}): "
                          "set one of them to Never")
    return IPPool(
        name=where.name,
        cidr=cidr,
        block_size=spec["blockSize"],
        ipip_mode=EncapMode(spec["ipipMode"]),
        vxlan_mode=EncapMode(spec["vxlanMode"]),
        nat_outgoing=spec["natOutgoing"],
        disabled=spec["disabled"],
        node_selector=selector or Selector.all(),
        disable_bgp_export=spec["disableBGPExport"],
        created=str(meta.get("creationTimestamp") or ""),
    )


def parse_bgp_configuration(obj: Mapping[str, Any], schemas: SpecSchemas) -> BGPConfiguration:
    where, _ = _metadata(KIND_BGP_CONFIGURATION, obj)
    spec = _custom_spec(where, obj, schemas)
    cluster_ips = _cidr_list(where, spec, "serviceClusterIPs")
    external_ips = _cidr_list(where, spec, "serviceExternalIPs")
    load_balancer_ips = _cidr_list(where, spec, "serviceLoadBalancerIPs")
    max_restart = _duration(where, "spec.nodeMeshMaxRestartTime", spec.get("nodeMeshMaxRestartTime"))
    _validate_against_crd(where, spec, schemas)
    recv = _bfd_interval(where, "spec.bfdMinimumRecvInterval", spec["bfdMinimumRecvInterval"])
    send = _bfd_interval(where, "spec.bfdMinimumSendInterval", spec["bfdMinimumSendInterval"])
    return BGPConfiguration(
        name=where.name,
        as_number=spec["asNumber"],
        node_to_node_mesh_enabled=spec["nodeToNodeMeshEnabled"],
        service_cluster_ips=cluster_ips,
        service_external_ips=external_ips,
        service_load_balancer_ips=load_balancer_ips,
        listen_port=spec["listenPort"],
        log_severity_screen=spec["logSeverityScreen"],
        node_mesh_password=_secret_key_ref(spec.get("nodeMeshPassword")),
        node_mesh_max_restart_time=max_restart,
        node_mesh_failure_detection_mode=spec["nodeMeshFailureDetectionMode"],
        bfd_minimum_recv_interval=recv,
        bfd_minimum_send_interval=send,
        bfd_multiplier=spec["bfdMultiplier"],
    )


def _bfd_interval(where: Where, path: str, value: Any) -> float:
    """A BFD interval: a duration of whole milliseconds within what BFD speakers accept."""
    seconds = _duration(where, path, value)
    assert seconds is not None
    millis = seconds * 1000
    if abs(millis - round(millis)) > 1e-6:
        raise where.error(path, value, "must be a whole number of milliseconds")
    if not BFD_INTERVAL_MIN_MS <= round(millis) <= BFD_INTERVAL_MAX_MS:
        raise where.error(path, value, f"must be between {BFD_INTERVAL_MIN_MS}ms and {BFD_INTERVAL_MAX_MS // 1000}s")
    return round(millis) / 1000


def effective_bgp_configuration(
        configs: Mapping[str, BGPConfiguration] | Iterable[BGPConfiguration]) -> BGPConfiguration:
    """The global configuration in effect: the object named ``default``, else all defaults.

    Objects with other names are accepted (and kept by the datastore) but, as in Calico, only
    ``default`` configures the cluster.
    """
    values = configs.values() if isinstance(configs, Mapping) else configs
    for config in values:
        if config.name == DEFAULT_BGP_CONFIGURATION_NAME:
            return config
    return BGPConfiguration()


def _peer_address(where: Where, value: Any) -> tuple[IPv4Address, int]:
    path = "spec.peerIP"
    if not isinstance(value, str):
        raise where.error(path, value, "must be a string (IPv4 address or address:port)")
    if value.count(":") > 1 or value.startswith("["):
        raise where.error(path, value, "IPv6 peers are not supported yet")
    host, colon, port_text = value.partition(":")
    try:
        address = IPv4Address(host)
    except ValueError:
        raise where.error(path, value, "not a valid IPv4 address (or address:port)") from None
    if not colon:
        return address, DEFAULT_BGP_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise where.error(path, value, f"port {port_text!r} is not a number in 1..65535")
    return address, int(port_text)


def parse_bgp_peer(obj: Mapping[str, Any], schemas: SpecSchemas) -> BGPPeer:
    where, _ = _metadata(KIND_BGP_PEER, obj)
    spec = _custom_spec(where, obj, schemas)
    peer_ip, peer_port = (_peer_address(where, spec["peerIP"]) if spec.get("peerIP") is not None
                          else (None, DEFAULT_BGP_PORT))
    node_selector = _selector(where, "spec.nodeSelector", spec.get("nodeSelector"))
    peer_selector = _selector(where, "spec.peerSelector", spec.get("peerSelector"))
    max_restart = _duration(where, "spec.maxRestartTime", spec.get("maxRestartTime"))
    hold_time = _duration(where, "spec.holdTime", spec.get("holdTime"))
    _validate_against_crd(where, spec, schemas)
    if "node" in spec and "nodeSelector" in spec:
        raise where.error("spec.nodeSelector", spec["nodeSelector"],
                          f"node ({spec['node']!r}) and nodeSelector are mutually exclusive "
                          "(set neither for a global peer)")
    if ("peerIP" in spec) == ("peerSelector" in spec):
        both = "both are set" if "peerIP" in spec else "neither is set"
        raise where.error("spec.peerIP", spec.get("peerIP"),
                          f"exactly one of peerIP and peerSelector must be set ({both})")
    if peer_ip is not None and "asNumber" not in spec:
        raise where.error("spec.asNumber", None, "required with peerIP")
    if peer_ip is None and "asNumber" in spec:
        raise where.error("spec.asNumber", spec["asNumber"],
                          "set only with peerIP: with peerSelector each selected node's own AS number is used")
    if hold_time is not None and (0 < hold_time < 3 or hold_time > 65535):
        raise where.error("spec.holdTime", spec["holdTime"], "must be 0 or between 3s and 65535s (RFC 4271)")
    return BGPPeer(
        name=where.name,
        peer_ip=peer_ip,
        peer_port=peer_port,
        as_number=spec.get("asNumber"),
        node=spec.get("node"),
        node_selector=node_selector,
        peer_selector=peer_selector,
        password=_secret_key_ref(spec.get("password")),
        max_restart_time=max_restart,
        keep_original_next_hop=spec["keepOriginalNextHop"],
        source_address=spec["sourceAddress"],
        hold_time=hold_time,
        failure_detection_mode=spec["failureDetectionMode"],
    )


def _string_map(where: Where, path: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise where.error(path, value, "must be a map of strings")
    return dict(value)


def _ipv4_cidr_entries(where: Where, path: str, values: Iterable[Any]) -> tuple[IPv4Network, ...]:
    """The IPv4 entries of a dual-stack CIDR list; IPv6 entries are skipped, bad ones refused."""
    networks = []
    for index, value in enumerate(values):
        if isinstance(value, str) and ":" in value:
            continue
        networks.append(_ipv4_network(where, f"{path}[{index}]", value, "IPv6 is not supported"))
    return tuple(networks)


def parse_node(obj: Mapping[str, Any]) -> NodeInfo:
    where, meta = _metadata(KIND_NODE, obj)
    labels = _string_map(where, "metadata.labels", meta.get("labels"))
    annotations = _string_map(where, "metadata.annotations", meta.get("annotations"))
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}

    internal_ip = None
    for index, entry in enumerate(status.get("addresses") or []):
        if isinstance(entry, Mapping) and entry.get("type") == "InternalIP" and ":" not in str(entry.get("address")):
            internal_ip = _ipv4_address(where, f"status.addresses[{index}].address", entry.get("address"))
            break

    bgp_address = None
    if ANNOTATION_IPV4_ADDRESS in annotations:
        path = f"metadata.annotations[{ANNOTATION_IPV4_ADDRESS}]"
        value = annotations[ANNOTATION_IPV4_ADDRESS]
        try:
            interface = ip_interface(value)
        except ValueError:
            raise where.error(path, value, "not a valid IPv4 address with prefix (e.g. 10.0.0.5/24)") from None
        if interface.version != 4:
            raise where.error(path, value, "IPv6 node addresses are not supported yet")
        bgp_address = interface
    elif internal_ip is not None:
        bgp_address = IPv4Interface(f"{internal_ip}/32")

    def annotation(key: str, parse: Callable[[Where, str, Any], Any]) -> Any:
        """The parsed value of an optional annotation (None when absent)."""
        return parse(where, f"metadata.annotations[{key}]", annotations[key]) if key in annotations else None

    as_number = annotation(ANNOTATION_AS_NUMBER, _as_number)
    rr_cluster_id = annotation(ANNOTATION_RR_CLUSTER_ID, lambda w, path, value: str(_ipv4_address(
        w, path, value, "IPv4-formatted route reflector cluster ID (e.g. 244.0.0.1)")))
    tunnel = annotation(ANNOTATION_TUNNEL_ADDR, _ipv4_address)
    vxlan_address = annotation(ANNOTATION_VXLAN_TUNNEL_ADDR, _ipv4_address)
    vxlan_mac = annotation(ANNOTATION_VXLAN_TUNNEL_MAC, _unicast_mac)

    pod_cidrs: tuple[IPv4Network, ...] = ()
    if spec.get("podCIDRs"):
        if not isinstance(spec["podCIDRs"], list):
            raise where.error("spec.podCIDRs", spec["podCIDRs"], "must be a list of CIDRs")
        pod_cidrs = _ipv4_cidr_entries(where, "spec.podCIDRs", spec["podCIDRs"])
    elif spec.get("podCIDR"):
        value = spec["podCIDR"]
        if not (isinstance(value, str) and ":" in value):
            pod_cidrs = (_ipv4_network(where, "spec.podCIDR", value, "IPv6 is not supported"),)

    return NodeInfo(
        name=where.name,
        labels=labels,
        bgp_address=bgp_address,
        as_number=as_number,
        rr_cluster_id=rr_cluster_id,
        tunnel_address_override=tunnel,
        pod_cidrs=pod_cidrs,
        internal_ip=internal_ip,
        deleting=bool(meta.get("deletionTimestamp")),
        vxlan_tunnel_address=vxlan_address,
        vxlan_tunnel_mac=vxlan_mac,
    )


def parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    """A Pod's networking facts. Kept lean: felix parses every pod of its node on each change."""
    _, namespace, name, meta = namespaced_metadata(KIND_POD, obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    pod_ips = status.get("podIPs")
    if pod_ips:
        raw = [(f"status.podIPs[{i}].ip", entry.get("ip") if isinstance(entry, Mapping) else entry)
               for i, entry in enumerate(pod_ips)]
    elif status.get("podIP"):
        raw = [("status.podIP", status["podIP"])]
    else:
        raw = []
    ips = []
    for path, value in raw:
        if isinstance(value, str) and ":" in value:
            continue   # IPv6 addresses of dual-stack pods are not Calyx's
        try:
            ips.append(IPv4Address(value))
        except ValueError:
            raise ValidationError(KIND_POD, f"{namespace}/{name}", path, value, "not a valid IPv4 address") from None
    return PodInfo(
        namespace=namespace,
        name=name,
        node=spec.get("nodeName") or None,
        ips=tuple(ips),
        host_network=bool(spec.get("hostNetwork", False)),
        phase=status.get("phase") or "",
        deleting=bool(meta.get("deletionTimestamp")),
        labels=tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items())),
        container_ports=_named_container_ports(spec),
    )


def _named_container_ports(spec: Mapping[str, Any]) -> tuple[tuple[str, str, int], ...]:
    """(name, protocol, port) of every named container port (what NetworkPolicy's named ports
    refer to); the API server has validated them, anything else is skipped."""
    found = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in (container.get("ports") or []) if isinstance(container, Mapping) else []:
            if (isinstance(port, Mapping) and isinstance(port.get("name"), str) and port["name"]
                    and isinstance(port.get("containerPort"), int)):
                found.append((port["name"], port.get("protocol") or "TCP", port["containerPort"]))
    return tuple(found)


# --- Services and EndpointSlices (core / discovery.k8s.io objects, parsed without a schema) ---
#
# bgpd advertises Service addresses over BGP. It keeps only these small views of the two kinds
# (thousands of objects in a big cluster); :func:`service_essentials` and
# :func:`endpoint_slice_essentials` cut a raw object down to what the parsers read before it is
# cached at all.

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
TRAFFIC_POLICIES = ("Cluster", "Local")
LABEL_SERVICE_NAME = "kubernetes.io/service-name"     # an EndpointSlice's Service


@dataclass(frozen=True)
class ServiceInfo:
    """What Service advertisement needs of one Service: its IPv4 addresses and traffic policies.
    ``load_balancer_ips`` are the addresses the load-balancer implementation has published in
    ``status.loadBalancer.ingress``, not the ones asked for in the spec."""

    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[IPv4Address, ...] = ()          # none for a headless Service
    external_ips: tuple[IPv4Address, ...] = ()
    load_balancer_ips: tuple[IPv4Address, ...] = ()
    external_traffic_local: bool = False               # externalTrafficPolicy: Local
    internal_traffic_local: bool = False               # internalTrafficPolicy: Local

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class EndpointSliceInfo:
    """One EndpointSlice reduced to where its ready IPv4 endpoints run: (node, count) pairs,
    sorted by node. Endpoints without ``conditions.ready`` count as ready (the API's rule for
    an unknown state); those without ``nodeName`` belong to no node. A slice of another
    address type has none."""

    namespace: str
    name: str
    service: str | None                                 # label kubernetes.io/service-name
    ready_by_node: tuple[tuple[str, int], ...] = ()

    def ready_on(self, node: str) -> int:
        return next((count for name, count in self.ready_by_node if name == node), 0)


def namespaced_metadata(kind: str, obj: Mapping[str, Any]) -> tuple[Where, str, str, Mapping[str, Any]]:
    """(where errors point, namespace, name, metadata) of a namespaced object; both names required."""
    if not isinstance(obj, Mapping):
        raise ValidationError(kind, "?", "(object)", obj, "not a Kubernetes object (expected a mapping)")
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    where = Where(kind, f"{namespace}/{name}")
    if not isinstance(name, str) or not name:
        raise where.error("metadata.name", name, "required")
    if not isinstance(namespace, str) or not namespace:
        raise where.error("metadata.namespace", namespace, "required")
    return where, namespace, name, meta


def _ipv4_addresses(where: Where, path: str, values: Any) -> tuple[IPv4Address, ...]:
    """The IPv4 entries of a list of addresses; IPv6 ones are skipped, bad ones refused."""
    if values is None:
        return ()
    if not isinstance(values, list):
        raise where.error(path, values, "must be a list of IP addresses")
    out = []
    for index, value in enumerate(values):
        if isinstance(value, str) and ":" in value:
            continue
        out.append(_ipv4_address(where, f"{path}[{index}]", value, "IP address"))
    return tuple(out)


def _choice(where: Where, path: str, value: Any, allowed: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    if value not in allowed:
        raise where.error(path, value, f"must be one of {', '.join(allowed)}")
    return value


def _mapping(where: Where, path: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise where.error(path, value, "must be an object")
    return value


def parse_service(obj: Mapping[str, Any]) -> ServiceInfo:
    where, namespace, name, _ = namespaced_metadata(KIND_SERVICE, obj)
    spec = _mapping(where, "spec", obj.get("spec"))
    status = _mapping(where, "status", obj.get("status"))
    service_type = _choice(where, "spec.type", spec.get("type"), SERVICE_TYPES, "ClusterIP")
    path = "spec.clusterIPs" if spec.get("clusterIPs") else "spec.clusterIP"
    raw_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    if isinstance(raw_ips, list):
        raw_ips = [ip for ip in raw_ips if ip != "None"]      # a headless Service has none
    cluster_ips = _ipv4_addresses(where, path, raw_ips)
    balancer = _mapping(where, "status.loadBalancer", status.get("loadBalancer"))
    ingress = balancer.get("ingress") or []
    if not isinstance(ingress, list):
        raise where.error("status.loadBalancer.ingress", ingress, "must be a list")
    lb_ips = []
    for index, entry in enumerate(ingress):
        entry = _mapping(where, f"status.loadBalancer.ingress[{index}]", entry)
        ip = entry.get("ip")
        if not ip or (isinstance(ip, str) and ":" in ip):
            continue        # a hostname-only entry, or IPv6
        lb_ips.append(_ipv4_address(where, f"status.loadBalancer.ingress[{index}].ip", ip, "IP address"))
    external = _choice(where, "spec.externalTrafficPolicy", spec.get("externalTrafficPolicy"),
                       TRAFFIC_POLICIES, "Cluster")
    internal = _choice(where, "spec.internalTrafficPolicy", spec.get("internalTrafficPolicy"),
                       TRAFFIC_POLICIES, "Cluster")
    return ServiceInfo(
        namespace=namespace,
        name=name,
        type=service_type,
        cluster_ips=cluster_ips,
        external_ips=_ipv4_addresses(where, "spec.externalIPs", spec.get("externalIPs")),
        load_balancer_ips=tuple(lb_ips),
        external_traffic_local=external == "Local",
        internal_traffic_local=internal == "Local",
    )


def parse_endpoint_slice(obj: Mapping[str, Any]) -> EndpointSliceInfo:
    where, namespace, name, meta = namespaced_metadata(KIND_ENDPOINT_SLICE, obj)
    labels = _string_map(where, "metadata.labels", meta.get("labels"))
    endpoints = obj.get("endpoints") or []
    if not isinstance(endpoints, list):
        raise where.error("endpoints", endpoints, "must be a list")
    ready: dict[str, int] = {}
    ipv4 = obj.get("addressType") == "IPv4"
    for index, endpoint in enumerate(endpoints):
        endpoint = _mapping(where, f"endpoints[{index}]", endpoint)
        conditions = _mapping(where, f"endpoints[{index}].conditions", endpoint.get("conditions"))
        is_ready = conditions.get("ready")
        if is_ready is not None and not isinstance(is_ready, bool):
            raise where.error(f"endpoints[{index}].conditions.ready", is_ready, "must be true or false")
        node = endpoint.get("nodeName")
        if node is not None and (not isinstance(node, str) or not node):
            raise where.error(f"endpoints[{index}].nodeName", node, "must be a node name")
        if ipv4 and node and is_ready is not False:
            ready[node] = ready.get(node, 0) + 1
    return EndpointSliceInfo(
        namespace=namespace,
        name=name,
        service=labels.get(LABEL_SERVICE_NAME) or None,
        ready_by_node=tuple(sorted((sys.intern(node), count) for node, count in ready.items())),
    )


def _essential_metadata(obj: Mapping[str, Any], labels: tuple[str, ...] = ()) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp") if k in meta}
    found = meta.get("labels")
    if labels and isinstance(found, Mapping):
        kept["labels"] = {k: found[k] for k in labels if k in found}
    return kept


def service_essentials(obj: dict[str, Any]) -> dict[str, Any]:
    """A raw Service cut down to what :func:`parse_service` reads and an Event about it names."""
    out: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
    out["metadata"] = _essential_metadata(obj)
    spec = obj.get("spec")
    if isinstance(spec, Mapping):
        out["spec"] = {k: spec[k] for k in ("type", "clusterIP", "clusterIPs", "externalIPs",
                                            "externalTrafficPolicy", "internalTrafficPolicy") if k in spec}
    else:
        out["spec"] = spec
    status = obj.get("status")
    if isinstance(status, Mapping) and "loadBalancer" in status:
        out["status"] = {"loadBalancer": status["loadBalancer"]}
    elif status is not None and not isinstance(status, Mapping):
        out["status"] = status
    return out


def endpoint_slice_essentials(obj: dict[str, Any]) -> dict[str, Any]:
    """A raw EndpointSlice cut down to what :func:`parse_endpoint_slice` reads (each endpoint's
    node, and its readiness when it is not ready; not its addresses, ports, zone or target) and
    an Event about it names. Node names are interned: thousands of endpoints share a few."""
    out: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind", "addressType") if k in obj}
    out["metadata"] = _essential_metadata(obj, (LABEL_SERVICE_NAME,))
    endpoints = obj.get("endpoints")
    if isinstance(endpoints, list):
        slim = []
        for endpoint in endpoints:
            if not isinstance(endpoint, Mapping):
                slim.append(endpoint)
                continue
            entry: dict[str, Any] = {}
            node = endpoint.get("nodeName")
            if node is not None:
                entry["nodeName"] = sys.intern(node) if isinstance(node, str) else node
            conditions = endpoint.get("conditions")
            if isinstance(conditions, Mapping):
                if conditions.get("ready", True) is not True:     # absent and true both read as ready
                    entry["conditions"] = {"ready": conditions["ready"]}
            elif conditions is not None:
                entry["conditions"] = conditions
            slim.append(entry)
        out["endpoints"] = slim
    elif endpoints is not None:
        out["endpoints"] = endpoints
    return out


def block_name(cidr: IPv4Network | str) -> str:
    """IPAMBlock object name of a block: 10.244.1.0/26 -> "10-244-1-0-26"."""
    network = ip_network(cidr) if isinstance(cidr, str) else cidr
    return f"{network.network_address}-{network.prefixlen}".replace(".", "-")


def parse_ipam_block(obj: Mapping[str, Any], schemas: SpecSchemas) -> IPAMBlock:
    where, _ = _metadata(KIND_IPAM_BLOCK, obj)
    spec = _custom_spec(where, obj, schemas)
    cidr = _ipv4_network(where, "spec.cidr", spec.get("cidr"), "IPv6 blocks are not supported yet")
    affinity = spec.get("affinity")
    node = None
    if affinity is not None:
        if not isinstance(affinity, str) or not affinity.startswith(BLOCK_AFFINITY_PREFIX) \
                or len(affinity) == len(BLOCK_AFFINITY_PREFIX):
            raise where.error("spec.affinity", affinity, "must be host:<node name>")
        node = affinity[len(BLOCK_AFFINITY_PREFIX):]
    _validate_against_crd(where, spec, schemas)
    expected = block_name(cidr)
    if where.name != expected:
        raise where.error("metadata.name", where.name,
                          f"must be {expected!r}, derived from spec.cidr {str(cidr)!r}")
    return IPAMBlock(name=where.name, cidr=cidr, node=node, pool=spec.get("pool"), deleted=spec["deleted"])


def parse_secret(obj: Mapping[str, Any]) -> tuple[tuple[str, str], dict[str, str]]:
    """((namespace, name), {key: decoded value}) of a Secret: base64 ``data`` and ``stringData``.

    Values are never part of error messages (they are secrets).
    """
    if not isinstance(obj, Mapping):
        raise ValidationError(KIND_SECRET, "?", "(object)", None, "not a Kubernetes object (expected a mapping)")
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    values: dict[str, str] = {}
    for key, encoded in (obj.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
            raise ValidationError(KIND_SECRET, f"{namespace}/{name}", f"data[{key}]", "<hidden>",
                                  "not base64-encoded UTF-8 text") from None
    for key, value in (obj.get("stringData") or {}).items():
        values[key] = str(value)
    return (namespace, name), values


def parsers(schemas: SpecSchemas) -> Mapping[str, Callable[[Mapping[str, Any]], Any]]:
    """The parser of each kind Calyx reads, the custom ones bound to ``schemas``."""
    return {
        KIND_IPPOOL: lambda obj: parse_ippool(obj, schemas),
        KIND_BGP_CONFIGURATION: lambda obj: parse_bgp_configuration(obj, schemas),
        KIND_BGP_PEER: lambda obj: parse_bgp_peer(obj, schemas),
        KIND_IPAM_BLOCK: lambda obj: parse_ipam_block(obj, schemas),
        KIND_NODE: parse_node,
        KIND_POD: parse_pod,
        KIND_SERVICE: parse_service,
        KIND_ENDPOINT_SLICE: parse_endpoint_slice,
    }


# --- Derived facts shared by felix, bgpd and the CNI plugin --------------------------------

def node_pod_cidrs(node: NodeInfo, blocks: Mapping[str, IPAMBlock] | None = None) -> tuple[IPv4Network, ...]:
    """The node's pod CIDRs: ``spec.podCIDRs`` when the cluster allocates them, else the
    Calyx IPAM blocks affine to the node (not being deleted), sorted. The one function every
    consumer uses."""
    if node.pod_cidrs:
        return node.pod_cidrs
    return tuple(sorted(block.cidr for block in (blocks or {}).values()
                        if block.node == node.name and not block.deleted))


def node_address(node: NodeInfo) -> IPv4Address | None:
    """The address other nodes reach ``node`` at: its ``calyx.dev/ipv4-address``, else its InternalIP."""
    return node.bgp_address.ip if node.bgp_address is not None else node.internal_ip


def node_tunnel_address(node: NodeInfo, blocks: Mapping[str, IPAMBlock] | None = None) -> IPv4Address | None:
    """tunl0's address: the annotation override, else the first address of the first pod CIDR."""
    if node.tunnel_address_override is not None:
        return node.tunnel_address_override
    cidrs = node_pod_cidrs(node, blocks)
    return cidrs[0].network_address if cidrs else None


def allocating_pools_for_node(pools: Mapping[str, IPPool], node: NodeInfo) -> list[IPPool]:
    """The pools the node may take new blocks and addresses from, by name: not ``disabled``,
    and selecting the node. Only IPAM asks this; routing uses :func:`routing_pools_for_node`."""
    return [pool for pool in routing_pools_for_node(pools, node) if not pool.disabled]


def routing_pools_for_node(pools: Mapping[str, IPPool], node: NodeInfo) -> list[IPPool]:
    """The pools whose addresses the node routes as its own pods' (tunnel, encapsulation), by
    name: every pool selecting the node, ``disabled`` ones included, since disabling a pool
    stops new allocations only and its pods keep working."""
    return [pool for _, pool in sorted(pools.items()) if pool.selects(node)]


def routing_pool_containing(pools: Mapping[str, IPPool], addr: IPv4Address | IPv4Network) -> IPPool | None:
    """The pool whose CIDR contains addr (longest match; ties go to the first name), ``disabled``
    pools included: what routes, imports and install modes follow. Pools never overlap once
    :mod:`calyx.ippools` has refused the conflicting ones, so the match is unambiguous there."""
    network = addr if isinstance(addr, IPv4Network) else IPv4Network(addr)
    best: IPPool | None = None
    for _, pool in sorted(pools.items()):
        if not network.subnet_of(pool.cidr):
            continue
        if best is None or pool.cidr.prefixlen > best.cidr.prefixlen:
            best = pool
    return best


def pool_wants_vxlan(pool: IPPool) -> bool:
    """A pool whose vxlanMode is Always or CrossSubnet (``disabled`` or not: its pods keep
    working): felix routes its blocks between nodes itself, from the API (VTEP annotations),
    without BGP."""
    return pool.vxlan_mode in (EncapMode.ALWAYS, EncapMode.CROSS_SUBNET)


def vxlan_pool_containing(pools: Mapping[str, IPPool], addr: IPv4Address | IPv4Network) -> IPPool | None:
    """The pool containing ``addr`` (:func:`routing_pool_containing`) when it is in VXLAN mode,
    else None."""
    pool = routing_pool_containing(pools, addr)
    return pool if pool is not None and pool_wants_vxlan(pool) else None


@dataclass(frozen=True)
class Snapshot:
    """Everything a daemon knows from the API at one instant: the input of every calculation."""

    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    pods: Mapping[tuple[str, str], PodInfo] = field(default_factory=dict)
    ippools: Mapping[str, IPPool] = field(default_factory=dict)
    bgp_configuration: BGPConfiguration = field(default_factory=BGPConfiguration)
    bgp_peers: Mapping[str, BGPPeer] = field(default_factory=dict)
    blocks: Mapping[str, IPAMBlock] = field(default_factory=dict)
    # (namespace, name) -> {key: decoded value}; only what the daemon watches (bgpd: passwords).
    # Left out of the repr: the values are passwords.
    secrets: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict, repr=False)
    # (namespace, name) -> why a Secret watched by name is not in ``secrets`` although it may
    # exist: "not read from the API yet", "cannot be read: HTTP 403 Forbidden: ...". A Secret
    # in neither mapping was not found.
    secret_errors: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # Only what bgpd watches for Service advertisement, by (namespace, name).
    services: Mapping[tuple[str, str], ServiceInfo] = field(default_factory=dict)
    endpoint_slices: Mapping[tuple[str, str], EndpointSliceInfo] = field(default_factory=dict)
    # Only what felix watches for NetworkPolicy: calyx.networkpolicy.NetworkPolicy by
    # (namespace, name), and each Namespace's labels by name.
    network_policies: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
