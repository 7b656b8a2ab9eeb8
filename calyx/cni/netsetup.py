"""The pod's network plumbing through netlink (pyroute2): the cali veth pair, the pod's /32,
its link-local gateway and default route, and the host's /32 route to the pod.

Host side (the node's namespace, where the plugin runs): ``caliXXXXXXXXXXX`` with MAC
ee:ee:ee:ee:ee:ee, proxy_arp=1, neigh proxy_delay=0, forwarding=1, and the route
``IP/32 dev caliX scope link proto 80`` (felix's protocol, so felix adopts it as it is).
Pod side (CNI_NETNS): ``eth0`` with ``IP/32``, ``169.254.1.1 scope link``, ``default via
169.254.1.1`` and a permanent neighbour entry for the gateway (answered by proxy ARP otherwise).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from calyx import naming
from calyx.cni.config import ERR_CHECK_FAILED, ERR_INVALID_ENV, ERR_NETLINK, CniError

SCOPE_LINK = 253
RT_TABLE_MAIN = 254
NUD_PERMANENT = 0x80
RTPROT_BOOT = 3            # what `ip route add` uses: the pod's routes look hand-made


@dataclass(frozen=True)
class PodLink:
    """Everything that identifies one pod interface and its wiring."""

    host_ifname: str
    pod_ifname: str
    netns: str              # path of the pod's network namespace
    address: IPv4Address
    mtu: int


@dataclass(frozen=True)
class Macs:
    host: str
    pod: str


def _netns_exists(path: str) -> bool:
    return bool(path) and os.path.exists(path)


# pyroute2 enters a namespace through a helper process and gives up after 2 s; a loaded node
# (or the lab's user-mode Linux kernel) can take longer to start one, so the plugin tries again
# until this budget is spent.
NETNS_ENTER_BUDGET = 60.0


@contextlib.contextmanager
def _pod_ns(path: str) -> Iterator[IPRoute]:
    if not _netns_exists(path):
        raise CniError(ERR_INVALID_ENV, f"CNI_NETNS: {path!r}: network namespace does not exist")
    deadline = time.monotonic() + NETNS_ENTER_BUDGET
    while True:
        try:
            ipr = IPRoute(netns=path)
            break
        except (TimeoutError, RuntimeError):
            # pyroute2's netns helper (a child process) did not answer within its 2 s: on a
            # loaded node it may still be starting (TimeoutError) or have given up
            # (RuntimeError "child process is dead"). Another helper is tried.
            if time.monotonic() < deadline:
                continue
            raise CniError(ERR_INVALID_ENV, f"CNI_NETNS: {path!r}: cannot enter: no netns helper started "
                                            f"within {NETNS_ENTER_BUDGET:.0f} s") from None
        except (OSError, NetlinkError) as exc:
            raise CniError(ERR_INVALID_ENV, f"CNI_NETNS: {path!r}: cannot enter: {exc}") from None
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def host_sysctls(host_ifname: str) -> dict[str, str]:
    return {f"/proc/sys/net/ipv4/conf/{host_ifname}/proxy_arp": "1",
            f"/proc/sys/net/ipv4/conf/{host_ifname}/forwarding": "1",
            f"/proc/sys/net/ipv4/neigh/{host_ifname}/proxy_delay": "0"}


def setup(link: PodLink) -> Macs:
    """Create and wire the veth pair; on failure nothing half-made is left behind."""
    gateway = str(naming.POD_GATEWAY)
    host_mac = naming.HOST_VETH_MAC
    with _pod_ns(link.netns) as pod, IPRoute() as host:
        try:
            stale = _index(pod, link.pod_ifname)
            if stale is not None:          # an earlier, interrupted ADD for this sandbox
                pod.link("del", index=stale)
            stale = _index(host, link.host_ifname)
            if stale is not None:          # the pod's previous sandbox left its veth
                host.link("del", index=stale)
            ns_fd = os.open(link.netns, os.O_RDONLY)
            try:
                host.link("add", ifname=link.host_ifname, kind="veth", address=host_mac, mtu=link.mtu,
                          peer={"ifname": link.pod_ifname, "net_ns_fd": ns_fd, "mtu": link.mtu})
            finally:
                os.close(ns_fd)
        except NetlinkError as exc:
            raise CniError(ERR_NETLINK, f"creating veth {link.host_ifname} <-> {link.pod_ifname} "
                                        f"in {link.netns}: {exc}") from None
        try:
            host_idx = _index(host, link.host_ifname)
            for path, value in host_sysctls(link.host_ifname).items():
                _write_sysctl(path, value)
            pod_idx = _index(pod, link.pod_ifname)
            lo_idx = _index(pod, "lo")
            if host_idx is None or pod_idx is None:
                raise CniError(ERR_NETLINK, f"veth {link.host_ifname} <-> {link.pod_ifname} vanished after creation")
            if lo_idx is not None:
                pod.link("set", index=lo_idx, state="up")
            pod.addr("add", index=pod_idx, address=str(link.address), prefixlen=32)
            pod.link("set", index=pod_idx, state="up")
            pod.route("replace", dst=f"{gateway}/32", oif=pod_idx, scope=SCOPE_LINK, proto=RTPROT_BOOT)
            pod.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=pod_idx, proto=RTPROT_BOOT)
            pod.neigh("replace", dst=gateway, lladdr=host_mac, ifindex=pod_idx, state=NUD_PERMANENT)
            pod_mac = pod.get_links(pod_idx)[0].get_attr("IFLA_ADDRESS")
            host.link("set", index=host_idx, state="up")
            host.route("replace", dst=f"{link.address}/32", oif=host_idx, scope=SCOPE_LINK,
                       proto=naming.FELIX_ROUTE_PROTOCOL, table=RT_TABLE_MAIN)
        except (NetlinkError, OSError, CniError) as exc:
            with contextlib.suppress(NetlinkError):
                host.link("del", ifname=link.host_ifname)
            if isinstance(exc, CniError):
                raise
            raise CniError(ERR_NETLINK, f"wiring {link.host_ifname} <-> {link.pod_ifname} "
                                        f"({link.address}): {exc}") from None
    return Macs(host=host_mac, pod=pod_mac)


def teardown(host_index: int | None, netns: str, pod_ifname: str) -> None:
    """Remove the veth pair (the host route goes with it). Anything already gone is fine.

    The host side is named by index, looked up while the IPAM lock was held: if the pod's next
    sandbox has replaced the veth since, its new link has another index and is left alone.
    """
    try:
        if host_index is not None:
            with IPRoute() as host:
                try:
                    host.link("del", index=host_index)
                    return
                except NetlinkError as exc:
                    if exc.code != 19:   # ENODEV: gone (or replaced) meanwhile
                        raise
        if _netns_exists(netns):
            with _pod_ns(netns) as pod:
                idx = _index(pod, pod_ifname)
                if idx is not None:
                    pod.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code != 19:   # ENODEV: removed concurrently
            raise CniError(ERR_NETLINK, f"removing veth #{host_index} / {pod_ifname} in {netns}: {exc}") from None


def check(link: PodLink) -> None:
    """Verify what :func:`setup` made; raise naming the first thing that differs."""
    gateway = str(naming.POD_GATEWAY)

    def fail(what: str) -> CniError:
        return CniError(ERR_CHECK_FAILED, f"CHECK {link.host_ifname} ({link.address}): {what}")

    with IPRoute() as host:
        idx = _index(host, link.host_ifname)
        if idx is None:
            raise fail(f"host interface {link.host_ifname} is missing")
        info = host.get_links(idx)[0]
        kind = info.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") if info.get_attr("IFLA_LINKINFO") else None
        if kind != "veth":
            raise fail(f"host interface {link.host_ifname} is a {kind!r}, not a veth")
        if (info.get_attr("IFLA_ADDRESS") or "").lower() != naming.HOST_VETH_MAC:
            raise fail(f"host interface MAC is {info.get_attr('IFLA_ADDRESS')}, want {naming.HOST_VETH_MAC}")
        if not any(r.get_attr("RTA_DST") == str(link.address) and r["dst_len"] == 32
                   and r.get_attr("RTA_OIF") == idx for r in host.get_routes(family=2, table=RT_TABLE_MAIN)):
            raise fail(f"route {link.address}/32 dev {link.host_ifname} is missing")
        for path, value in host_sysctls(link.host_ifname).items():
            with open(path, encoding="ascii") as f:
                if f.read().strip() != value:
                    raise fail(f"{path} is not {value}")
    with _pod_ns(link.netns) as pod:
        idx = _index(pod, link.pod_ifname)
        if idx is None:
            raise fail(f"{link.pod_ifname} is missing in {link.netns}")
        addrs = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in pod.get_addr(index=idx, family=2)}
        if (str(link.address), 32) not in addrs:
            raise fail(f"{link.pod_ifname} in {link.netns} lacks {link.address}/32 (has {sorted(addrs)})")
        routes = pod.get_routes(family=2, table=RT_TABLE_MAIN)
        have_gw_route = any(r.get_attr("RTA_DST") == gateway and r["dst_len"] == 32 and r.get_attr("RTA_OIF") == idx
                            for r in routes)
        have_default = any(r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY") == gateway for r in routes)
        if not have_gw_route:
            raise fail(f"route {gateway} scope link dev {link.pod_ifname} missing in {link.netns}")
        if not have_default:
            raise fail(f"default route via {gateway} missing in {link.netns}")
