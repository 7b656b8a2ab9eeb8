"""The kernel side of a VXLAN tunnel endpoint: one VXLAN device, its IPv4 addresses, its
permanent neighbour entries (remote VTEP address -> MAC) and its FDB entries (remote MAC ->
remote underlay address), in one network namespace, through pyroute2.

Reads return what the kernel holds; writes are idempotent ("replace" for entries), so a caller
that compares and writes only the difference makes no write when nothing changed. Only
entries on the named device are read or written.
"""
from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT

from calyx.netlink import DeviceControl

__all__ = ["VxlanDevice", "VxlanLinks"]


@dataclass(frozen=True)
class VxlanDevice:
    """A network interface as the VXLAN manager sees it (``kind`` None or another kind: not a
    VXLAN device, whose VXLAN fields are then None)."""

    name: str
    kind: str | None
    mtu: int
    up: bool
    mac: str
    addresses: tuple[IPv4Interface, ...] = ()
    vni: int | None = None
    port: int | None = None
    local: IPv4Address | None = None
    learning: bool | None = None


class VxlanLinks(DeviceControl):
    """VXLAN devices, neighbours and FDB entries of the current (or a named) network namespace;
    MTU, state and addresses through :class:`calyx.netlink.DeviceControl`."""

    # --- the device --------------------------------------------------------------------------

    def device(self, name: str) -> VxlanDevice | None:
        index = self._index(name)
        if index is None:
            return None
        (msg,) = self._iproute.get_links(index)
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        data = info.get_attr("IFLA_INFO_DATA") if info is not None and kind == "vxlan" else None
        addresses = self._addresses(index)
        vni = port = local = learning = None
        if data is not None:
            vni = data.get_attr("IFLA_VXLAN_ID")
            port = data.get_attr("IFLA_VXLAN_PORT")
            raw_local = data.get_attr("IFLA_VXLAN_LOCAL")
            local = IPv4Address(raw_local) if raw_local else None
            learning = bool(data.get_attr("IFLA_VXLAN_LEARNING"))
        return VxlanDevice(name=name, kind=kind, mtu=msg.get_attr("IFLA_MTU"), up=bool(msg["flags"] & 1),
                           mac=str(msg.get_attr("IFLA_ADDRESS") or "").lower(), addresses=addresses,
                           vni=vni, port=port, local=local, learning=learning)

    def create(self, name: str, vni: int, port: int, local: IPv4Address, mtu: int) -> None:
        """A VXLAN device without learning (entries are programmed), sending from ``local``."""
        self._iproute.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=port,
                           vxlan_local=str(local), vxlan_learning=0, mtu=mtu)

    def delete(self, name: str) -> None:
        index = self._index(name)
        if index is not None:
            self._iproute.link("del", index=index)

    # --- neighbours: remote VTEP address -> MAC ------------------------------------------------

    def neighbours(self, name: str) -> dict[IPv4Address, str]:
        """The device's permanent IPv4 neighbour entries (others are the kernel's own)."""
        index = self._index(name)
        if index is None:
            return {}
        out: dict[IPv4Address, str] = {}
        for msg in self._iproute.get_neighbours(ifindex=index, family=socket.AF_INET):
            dst, mac = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
            if msg["ifindex"] == index and msg["state"] & NUD_PERMANENT and dst and mac:
                out[IPv4Address(dst)] = str(mac).lower()
        return out

    def set_neighbour(self, name: str, address: IPv4Address, mac: str) -> None:
        self._iproute.neigh("replace", ifindex=self._require(name), family=socket.AF_INET, dst=str(address),
                            lladdr=mac, state=NUD_PERMANENT)

    def delete_neighbour(self, name: str, address: IPv4Address, mac: str) -> None:
        try:
            self._iproute.neigh("del", ifindex=self._require(name), family=socket.AF_INET, dst=str(address),
                                lladdr=mac)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise

    # --- forwarding database: remote MAC -> remote underlay address ----------------------------

    def fdb(self, name: str) -> dict[str, IPv4Address]:
        """The device's permanent FDB entries that carry a destination address."""
        index = self._index(name)
        if index is None:
            return {}
        out: dict[str, IPv4Address] = {}
        for msg in self._iproute.get_neighbours(ifindex=index, family=socket.AF_BRIDGE):
            dst, mac = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
            if msg["ifindex"] == index and msg["state"] & NUD_PERMANENT and dst and mac and ":" not in dst:
                out[str(mac).lower()] = IPv4Address(dst)
        return out

    def set_fdb(self, name: str, mac: str, underlay: IPv4Address) -> None:
        self._iproute.neigh("replace", ifindex=self._require(name), family=socket.AF_BRIDGE, lladdr=mac,
                            dst=str(underlay), state=NUD_PERMANENT, flags=NTF_SELF)

    def delete_fdb(self, name: str, mac: str, underlay: IPv4Address) -> None:
        try:
            self._iproute.neigh("del", ifindex=self._require(name), family=socket.AF_BRIDGE, lladdr=mac,
                                dst=str(underlay), flags=NTF_SELF)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise
