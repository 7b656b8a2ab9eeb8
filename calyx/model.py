"""Calyx's resource model: typed, validated views of the Kubernetes objects Calyx reads.

Pure code (no I/O). Every function here turns a raw Kubernetes object (the dict the API
returns) into a frozen dataclass, or raises :class:`ValidationError` naming the object, the
field and the offending value. felix, bgpd and the CNI plugin all read resources through this
module; nobody else parses raw objects.

Defaults, enums and ranges come from the CRD YAML in ``charts/calyx/crds/`` (see
:mod:`calyx.crds`), which is the single source of the schema; this module adds the checks a
schema cannot express (CIDR parsing, IPv6 refusal, XOR rules, selector syntax).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Mapping

from calyx.selector import Selector

GROUP = "calyx.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

# Node annotations (Calico's projectcalico.org/* equivalents).
ANNOTATION_IPV4_ADDRESS = "calyx.dev/ipv4-address"            # "10.0.0.5/24"
ANNOTATION_AS_NUMBER = "calyx.dev/as-number"                  # "64513"
ANNOTATION_RR_CLUSTER_ID = "calyx.dev/route-reflector-cluster-id"  # "224.0.0.1"
ANNOTATION_TUNNEL_ADDR = "calyx.dev/ipv4-ipip-tunnel-addr"    # "10.244.1.0"

DEFAULT_AS_NUMBER = 64512
DEFAULT_BGP_PORT = 179


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

    def selects(self, node: "NodeInfo") -> bool:
        return self.node_selector.matches(node.labels)


@dataclass(frozen=True)
class BGPConfiguration:
    """The effective global BGP configuration (the object named ``default``, or all defaults)."""

    name: str = "default"
    as_number: int = DEFAULT_AS_NUMBER
    node_to_node_mesh_enabled: bool = True
    service_cluster_ips: tuple[IPv4Network, ...] = ()
    service_external_ips: tuple[IPv4Network, ...] = ()
    service_load_balancer_ips: tuple[IPv4Network, ...] = ()
    listen_port: int = DEFAULT_BGP_PORT
    log_severity_screen: str = "Info"
    node_mesh_password: SecretKeyRef | None = None
    node_mesh_max_restart_time: float | None = None   # seconds


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
    source_address: str = "UseNodeIP"       # UseNodeIP | None
    hold_time: float | None = None          # seconds

    @property
    def is_global(self) -> bool:
        return self.node is None and self.node_selector is None


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

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class IPAMBlock:
    """A block of a pool claimed by (affine to) one node: Calyx's own pod CIDR allocation."""

    name: str
    cidr: IPv4Network
    node: str | None          # from spec.affinity "host:<node>"; None once released
    pool: str | None = None


# --- Parsing: raw Kubernetes object (dict) -> dataclass, or ValidationError --------------

def parse_ippool(obj: Mapping[str, Any]) -> IPPool:
    raise NotImplementedError


def parse_bgp_configuration(obj: Mapping[str, Any]) -> BGPConfiguration:
    raise NotImplementedError


def parse_bgp_peer(obj: Mapping[str, Any]) -> BGPPeer:
    raise NotImplementedError


def parse_node(obj: Mapping[str, Any]) -> NodeInfo:
    raise NotImplementedError


def parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    raise NotImplementedError


def parse_ipam_block(obj: Mapping[str, Any]) -> IPAMBlock:
    raise NotImplementedError


# --- Derived facts shared by felix, bgpd and the CNI plugin --------------------------------

def node_pod_cidrs(node: NodeInfo, blocks: Mapping[str, IPAMBlock] | None = None) -> tuple[IPv4Network, ...]:
    """The node's pod CIDRs: ``spec.podCIDRs`` when the cluster allocates them, else the
    Calyx IPAM blocks affine to the node, sorted. The one function every consumer uses."""
    raise NotImplementedError


def node_tunnel_address(node: NodeInfo, blocks: Mapping[str, IPAMBlock] | None = None) -> IPv4Address | None:
    """tunl0's address: the annotation override, else the first address of the first pod CIDR."""
    raise NotImplementedError


def pools_for_node(pools: Mapping[str, IPPool], node: NodeInfo) -> list[IPPool]:
    """Enabled pools whose nodeSelector selects the node."""
    raise NotImplementedError


def pool_containing(pools: Mapping[str, IPPool], addr: IPv4Address | IPv4Network) -> IPPool | None:
    """The enabled pool whose CIDR contains addr (longest match)."""
    raise NotImplementedError


@dataclass(frozen=True)
class Snapshot:
    """Everything a daemon knows from the API at one instant: the input of every calculation."""

    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    pods: Mapping[tuple[str, str], PodInfo] = field(default_factory=dict)
    ippools: Mapping[str, IPPool] = field(default_factory=dict)
    bgp_configuration: BGPConfiguration = field(default_factory=BGPConfiguration)
    bgp_peers: Mapping[str, BGPPeer] = field(default_factory=dict)
    blocks: Mapping[str, IPAMBlock] = field(default_factory=dict)
    # (namespace, name) -> {key: decoded value}; only what the daemon watches (bgpd: passwords)
    secrets: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
