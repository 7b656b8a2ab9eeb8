"""Names and numbers every Calyx component must agree on: interface names, route protocols,
the tunnel device, the addresses a pod sees, and the default paths and namespace.

Pure code (no I/O): the CNI plugin names the host side of a pod's veth with
:func:`cali_interface_name` and felix finds it again by the same function, so the two never
need to talk to each other.
"""
from __future__ import annotations

import hashlib

INTERFACE_PREFIX = "cali"
INTERFACE_HASH_LENGTH = 11             # "cali" + 11 hex = 15 characters, Linux's IFNAMSIZ - 1

CRD_GROUP = "calyx.dev"                # the API group of Calyx's custom resources
CRD_VERSION = "v1"

FELIX_ROUTE_PROTOCOL = 80              # routes felix (and the CNI plugin) own
BGPD_ROUTE_PROTOCOL = 186              # RTPROT_BGP: routes bgpd learned over BGP
TUNNEL_DEVICE = "tunl0"                # the IPIP device (created by the ipip module)
VXLAN_DEVICE = "vxlan.calico"          # the VXLAN device felix creates for VXLAN pools
HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"    # MAC of every host-side cali veth
POD_GATEWAY = "169.254.1.1"            # the pod's default gateway, answered by proxy ARP

DEFAULT_NAMESPACE = "calyx-system"     # CALYX_NAMESPACE: where Secrets (BGP passwords) live
DEFAULT_RUN_DIR = "/var/run/calyx"     # CALYX_RUN_DIR: per-node runtime state
MTU_FILE = "mtu"                       # under the run dir: the pod MTU felix computed
IPAM_DIR = "ipam"                      # under the run dir: the CNI plugin's address state
BGPD_SOCKET = "bgpd.sock"              # under the run dir: bgpd's control socket


def cali_interface_name(namespace: str, pod: str) -> str:
    """Host-side veth name of a pod: ``cali`` + the first 11 hex digits of sha1("ns.pod")."""
    digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()
    return INTERFACE_PREFIX + digest[:INTERFACE_HASH_LENGTH]


def is_cali_interface(name: str) -> bool:
    """True for a name :func:`cali_interface_name` could have produced."""
    suffix = name[len(INTERFACE_PREFIX):]
    return (name.startswith(INTERFACE_PREFIX) and len(suffix) == INTERFACE_HASH_LENGTH
            and all(c in "0123456789abcdef" for c in suffix))
