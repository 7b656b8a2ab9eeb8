"""kube-proxy on the lab's cluster nodes, run as Kubernetes the hard way runs it: the real
binary (built from the control plane's release by ``scripts/build-kube.sh``) as a node service
with a ``KubeProxyConfiguration`` file and the ``system:kube-proxy`` identity, which the API
server's bootstrap policy binds to ``system:node-proxier``.

A cluster node runs it when its env sets ``CALYX_LAB_KUBE_PROXY`` to ``nftables`` or
``iptables`` (the proxy mode); Service traffic (ClusterIP, ExternalIP, LoadBalancer IP) is then
real in that node's kernel. The UML kernel has no nf_tables for IPv4, so there only the
iptables mode runs, with the legacy iptables commands (:func:`command_links`). This module
renders the configuration and those links (pure).
"""
from __future__ import annotations

from typing import Mapping

import yaml

from calyxlab.topology import Node

ENV = "CALYX_LAB_KUBE_PROXY"
MODES = ("nftables", "iptables")
DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"


class KubeProxyConfigError(ValueError):
    """A node's kube-proxy setting is not one the lab can run."""


def mode(node: Node, kernel: str = "host") -> str | None:
    """The proxy mode ``node`` asks for, or None when it runs no kube-proxy."""
    raw = node.env.get(ENV, "").strip()
    if raw in ("", "none"):
        return None
    if raw not in MODES:
        raise KubeProxyConfigError(f"node {node.name}: env {ENV}={raw!r}: choose one of "
                                   f"{', '.join(MODES)} or none")
    if kernel == "uml" and raw != "iptables":
        raise KubeProxyConfigError(f"node {node.name}: env {ENV}={raw!r}: the UML kernel has no "
                                   f"nf_tables for IPv4; use iptables there")
    return raw


LEGACY_COMMANDS = ("iptables", "iptables-save", "iptables-restore",
                   "ip6tables", "ip6tables-save", "ip6tables-restore")


def command_links(kernel: str) -> dict[str, str]:
    """Command name -> the program it runs, for a directory put first on kube-proxy's PATH:
    the legacy iptables under UML (Debian's default, iptables-nft, needs nf_tables)."""
    if kernel != "uml":
        return {}
    return {name: f"/usr/sbin/{name.replace('tables', 'tables-legacy', 1)}"
            for name in LEGACY_COMMANDS}


def cluster_cidr(pools: list[Mapping]) -> str:
    """The pod CIDRs kube-proxy treats as in-cluster (it masquerades Service traffic from
    anywhere else): the scenario's IPPools, else the chart's default pool."""
    cidrs = [str((p.get("spec") or {}).get("cidr")) for p in pools
             if p.get("kind") == "IPPool" and (p.get("spec") or {}).get("cidr")]
    return ",".join(cidrs) or DEFAULT_CLUSTER_CIDR


def configuration(node: str, proxy_mode: str, kubeconfig: str, pod_cidrs: str) -> str:
    """The ``KubeProxyConfiguration`` for ``node`` (YAML).

    conntrack sizes are left as the kernel has them: the lab's nodes share one kernel, whose
    conntrack table only the host may size. The full resync runs every 5 minutes instead of 30
    seconds (changes are still applied within a second): in the UML kernel each node's
    iptables-legacy rewrite costs the single CPU every other node runs on.
    """
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": proxy_mode,
        "hostnameOverride": node,
        "clusterCIDR": pod_cidrs,
        "clientConnection": {"kubeconfig": kubeconfig},
        "healthzBindAddress": "0.0.0.0:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "nodePortAddresses": ["primary"],
        # kube-proxy reads the resync period from here in both modes.
        "iptables": {"syncPeriod": "5m", "minSyncPeriod": "1s"},
    }
    return yaml.safe_dump(config, sort_keys=False)
