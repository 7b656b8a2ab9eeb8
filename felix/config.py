"""felix's configuration: the settings every Calyx daemon has plus felix's own."""
from __future__ import annotations

from dataclasses import dataclass

from calyx.config import ConfigError, DaemonConfig, setting


@dataclass(frozen=True)
class FelixConfig(DaemonConfig):
    route_refresh_interval: float = setting(
        90.0, env="FELIX_ROUTEREFRESHINTERVAL",
        help="seconds between full re-reads of the kernel's routes (events repair in between) and of "
             "the NAT table")
    mtu: int | None = setting(
        None, env="FELIX_MTU",
        help="pod and tunnel MTU; unset: detected from the node's interface (minus 20 with IPIP)")
    metrics_port: int | None = setting(
        9091, env="FELIX_METRICSPORT",
        help="second port serving /metrics (on the health host); empty: only the health port")
    debounce: float = setting(
        0.05, env="FELIX_DEBOUNCE", help="seconds to gather a burst of changes before reconciling")
    cni_kubeconfig: str | None = setting(
        None, env="CALYX_CNI_KUBECONFIG",
        help="the CNI plugin's kubeconfig (as felix sees it) to keep the service-account token fresh in; "
             "unset: not refreshed")
    cni_token_dir: str = setting(
        "/var/run/secrets/kubernetes.io/serviceaccount", env="CALYX_CNI_TOKEN_DIR",
        help="directory of the projected service-account token and ca.crt copied into the CNI kubeconfig")
    ipip_teardown_grace: float = setting(
        30.0, env="FELIX_IPIPTEARDOWNGRACE",
        help="seconds tunl0 keeps its address and stays up (decapsulating) after the last pool wanting "
             "IPIP on this node stopped wanting it, so peers still sending IPIP during a live mode switch "
             "are not dropped; 0: tear down at once. The same grace applies to vxlan.calico, and to a "
             "route to a remote block felix no longer carries (its pool left VXLAN), kept until bgpd "
             "replaces it in place")
    packet_probe: bool = setting(
        False, env="FELIX_PACKETPROBE",
        help="serve calyxctl trace --probe: send one echo request from a local pod and watch for it on "
             "every device (needs CAP_NET_RAW, CAP_SYS_ADMIN and the node's /run/netns); false: the "
             "probe endpoints refuse")
    ipam_gc_interval: float = setting(
        60.0, env="FELIX_IPAMGCINTERVAL",
        help="seconds between IPAM block garbage-collection passes (run by the node with the smallest "
             "name only); 0: never")
    ipam_gc_node_grace: float = setting(
        120.0, env="FELIX_IPAMGCNODEGRACE",
        help="seconds a Node must have been gone before its blocks are released (above the CNI plugin's "
             "60 s cache TTL)")
    ipam_gc_leak_grace: float = setting(
        900.0, env="FELIX_IPAMGCLEAKGRACE",
        help="seconds an address of this node's IPAM records must have been held for a pod that no longer "
             "holds it (gone, moved, or holding another address) before it is released; every node "
             "collects its own, every ipam_gc_interval")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.route_refresh_interval <= 0:
            raise ConfigError(f"config field route_refresh_interval: {self.route_refresh_interval!r}: "
                              "must be a positive number of seconds")
        if self.mtu is not None and not 576 <= self.mtu <= 65535:
            raise ConfigError(f"config field mtu: {self.mtu!r}: must be between 576 and 65535")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"config field metrics_port: {self.metrics_port!r}: not a TCP port (0-65535)")
        if self.ipam_gc_interval < 0 or self.ipam_gc_node_grace < 0:
            raise ConfigError(f"config field ipam_gc_interval/ipam_gc_node_grace: {self.ipam_gc_interval!r}/"
                              f"{self.ipam_gc_node_grace!r}: must not be negative")
        if self.ipam_gc_leak_grace < 0:
            raise ConfigError(f"config field ipam_gc_leak_grace: {self.ipam_gc_leak_grace!r}: must not be negative")
        if not 0 <= self.ipip_teardown_grace <= 3600:
            raise ConfigError(f"config field ipip_teardown_grace: {self.ipip_teardown_grace!r}: "
                              "must be between 0 and 3600 seconds")
        if not 0 <= self.debounce <= 5:
            raise ConfigError(f"config field debounce: {self.debounce!r}: must be between 0 and 5 seconds")
