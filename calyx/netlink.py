"""The shared netlink layer: IPv4 routes, links and addresses of one network namespace.

felix and bgpd both program the kernel through this module and nothing else. pyroute2 speaks
netlink here: its message classes encode and decode every message. What this module adds is
bulk speed for route writes: a route message is encoded by pyroute2 once per *shape* (kind,
protocol, scope, table, which attributes are present) and then only its destination, prefix
length, interface index, gateway and sequence number are patched; many messages travel in
one ``sendmsg`` and their acknowledgements are collected in bulk, so every route still gets
its own success or error. Rare operations (links, addresses, single lookups) use pyroute2's
``IPRoute`` as-is.

Ownership is expressed by the routing protocol number (``proto``) of a route: felix owns
proto 80, bgpd proto 186 (see :mod:`calyx.naming`). Deletes carry the protocol, type and
next hop of the route they remove, so the kernel refuses to delete anyone else's route.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Callable, Iterable, Iterator

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink import NLMSG_DONE, NLMSG_ERROR, nlmsgerr
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netns import create_socket

from calyx.route import KINDS, MAIN_TABLE, SCOPES, ApplyResult, Route

__all__ = ["ApplyResult", "Link", "LinkMonitor", "MAIN_TABLE", "NetlinkUnsupported", "Route", "RouteMonitor",
           "DeviceControl", "RouteTable", "interface_prefix"]

_SCOPE_NAMES = {v: k for k, v in SCOPES.items()}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
_RTNH_F_ONLINK = 4
_RTM_F_CLONED = 0x200

_NETLINK_ROUTE = 0
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10
_NETLINK_EXT_ACK = 11
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33

_NLMSG_HDR = struct.Struct("=IHHII")       # length, type, flags, seq, port id
_NLA_HDR = struct.Struct("=HH")            # length, type
_RTA_DST, _RTA_OIF, _RTA_GATEWAY = 1, 4, 5
_RTMSG_OFFSET = 16                         # rtmsg follows the netlink header
_RTMSG_DST_LEN = _RTMSG_OFFSET + 1
_RTMSG_ATTRS = _RTMSG_OFFSET + 12
_CHUNK_BYTES = 60_000                      # messages per sendmsg: well below the socket buffers
_SOCKET_BUFFER = 8 * 1024 * 1024


class NetlinkUnsupported(OSError):
    """The kernel cannot do what was asked (e.g. no ipip support)."""


@dataclass(frozen=True)
class Link:
    """A network interface as felix's tunnel manager sees it."""

    name: str
    index: int
    kind: str | None
    mtu: int
    up: bool
    addresses: tuple[IPv4Interface, ...] = ()


@dataclass(frozen=True)
class _Shape:
    msg_type: int
    kind: int
    proto: int
    scope: int
    table: int
    has_dev: bool
    has_gateway: bool
    onlink: bool


@dataclass(frozen=True)
class _Template:
    data: bytes
    dst_offset: int
    oif_offset: int | None
    gateway_offset: int | None


def _open_socket(netns: str | None, groups: int = 0) -> socket.socket:
    sock = create_socket(netns=netns, family=socket.AF_NETLINK, socket_type=socket.SOCK_RAW,
                         proto=_NETLINK_ROUTE)
    for forced, capped in ((_SO_SNDBUFFORCE, socket.SO_SNDBUF), (_SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, _SOCKET_BUFFER)
        except OSError:  # the forced variant needs CAP_NET_ADMIN; take what the limit allows
            sock.setsockopt(socket.SOL_SOCKET, capped, _SOCKET_BUFFER)
    sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
    sock.setsockopt(_SOL_NETLINK, _NETLINK_EXT_ACK, 1)
    sock.bind((0, groups))
    return sock


def _attr_offsets(data: bytes) -> dict[int, int]:
    """Offsets of the values of the route attributes in an encoded route message."""
    offsets: dict[int, int] = {}
    pos = _RTMSG_ATTRS
    while pos + _NLA_HDR.size <= len(data):
        length, kind = _NLA_HDR.unpack_from(data, pos)
        offsets[kind & 0x3FFF] = pos + _NLA_HDR.size
        pos += (length + 3) & ~3
    return offsets


_IFINDEX = struct.Struct("=i")
_IFINFO_INDEX = _RTMSG_OFFSET + 4          # ifinfomsg: family, pad, type, then the index
_IFINFO_ATTRS = _RTMSG_OFFSET + 16
_IFLA_IFNAME = 3
_RTMSG = struct.Struct("=BBBBBBBBI")       # family, dst_len, src_len, tos, table, proto, scope, type, flags
_RTA_TABLE, _RTA_MULTIPATH = 15, 9


def _read_route(data: bytes, pos: int, length: int, names: dict[int, str],
                proto: int | None) -> Route | None:
    """The route in one route message (dump reply or event), or None for what Calyx never
    owns or filters out: IPv6, cloned cache entries, multipath routes, other protocols."""
    family, dst_len, _, _, table, msg_proto, scope, kind, flags = _RTMSG.unpack_from(data, pos + 16)
    if family != socket.AF_INET or flags & _RTM_F_CLONED or (proto is not None and msg_proto != proto):
        return None
    kind_name, scope_name = _KIND_NAMES.get(kind), _SCOPE_NAMES.get(scope)
    if kind_name is None or scope_name is None:
        return None
    dst = gateway = None
    oif: int | None = None
    attr, end = pos + _RTMSG_ATTRS, pos + length
    while attr + _NLA_HDR.size <= end:
        attr_len, attr_type = _NLA_HDR.unpack_from(data, attr)
        if attr_len < _NLA_HDR.size:
            break
        value = attr + _NLA_HDR.size
        attr_type &= 0x3FFF
        if attr_type == _RTA_DST:
            dst = IPv4Address(data[value:value + 4])
        elif attr_type == _RTA_GATEWAY:
            gateway = IPv4Address(data[value:value + 4])
        elif attr_type == _RTA_OIF:
            (oif,) = struct.unpack_from("=i", data, value)
        elif attr_type == _RTA_TABLE:
            (table,) = struct.unpack_from("=I", data, value)
        elif attr_type == _RTA_MULTIPATH:
            return None
        attr += (attr_len + 3) & ~3
    return Route(
        dst=IPv4Network((int(dst) if dst is not None else 0, dst_len)),
        proto=msg_proto, kind=kind_name, dev=names.get(oif) if oif is not None else None,
        gateway=gateway, onlink=bool(flags & _RTNH_F_ONLINK), scope=scope_name, table=table,
    )


class DeviceControl:
    """pyroute2's IPRoute on one network namespace (the current one unless ``netns`` names one
    under /run/netns), opened on first use: single lookups, and the device settings every
    device manager writes (MTU, up/down, IPv4 addresses). Not thread-safe."""

    def __init__(self, netns: str | None = None):
        self._netns = netns
        self._ipr: IPRoute | None = None

    @property
    def _iproute(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute(netns=self._netns) if self._netns else IPRoute()
        return self._ipr

    def _index(self, name: str) -> int | None:
        found = self._iproute.link_lookup(ifname=name)
        return found[0] if found else None

    def _require(self, name: str) -> int:
        index = self._index(name)
        if index is None:
            raise OSError(errno.ENODEV, f"device {name} does not exist")
        return index

    def _addresses(self, index: int) -> tuple[IPv4Interface, ...]:
        return tuple(
            IPv4Interface(f"{a.get_attr('IFA_LOCAL') or a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in self._iproute.get_addr(family=socket.AF_INET, index=index))

    def set_link(self, name: str, mtu: int | None = None, up: bool | None = None) -> None:
        changes: dict[str, object] = {}
        if mtu is not None:
            changes["mtu"] = mtu
        if up is not None:
            changes["state"] = "up" if up else "down"
        if changes:
            self._iproute.link("set", index=self._require(name), **changes)

    def add_address(self, name: str, address: IPv4Interface) -> None:
        self._iproute.addr("add", index=self._require(name), address=str(address.ip),
                           prefixlen=address.network.prefixlen)

    def delete_address(self, name: str, address: IPv4Interface) -> None:
        self._iproute.addr("del", index=self._require(name), address=str(address.ip),
                           prefixlen=address.network.prefixlen)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RouteTable(DeviceControl):
    """Netlink access to one network namespace (the current one unless ``netns`` names one
    under /run/netns). Not thread-safe: one owner thread uses it."""

    def __init__(self, netns: str | None = None):
        super().__init__(netns)
        self._sock = _open_socket(netns)
        self._templates: dict[_Shape, _Template] = {}
        self._seq = 1

    # --- reading ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    def _raw_dump(self, request: bytes, seq: int, what: str) -> Iterator[tuple[bytes, int, int, int]]:
        """(buffer, offset, length, type) of each reply message to a dump request, unparsed."""
        self._sock.send(request)
        while True:
            data = self._sock.recv(1 << 20)
            pos = 0
            while pos + _NLMSG_HDR.size <= len(data):
                length, msg_type, _, msg_seq, _ = _NLMSG_HDR.unpack_from(data, pos)
                if length < _NLMSG_HDR.size:
                    break
                if msg_seq == seq:
                    if msg_type == NLMSG_DONE:
                        return
                    if msg_type == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, pos + _NLMSG_HDR.size)
                        if code:
                            raise OSError(-code, f"{what} dump: {os.strerror(-code)}")
                    else:
                        yield data, pos, length, msg_type
                pos += (length + 3) & ~3

    def links(self) -> dict[str, int]:
        """Interface name -> ifindex, for every interface of the namespace.

        Read with a small reader of the name attribute, like :meth:`dump`: a node has one link
        per pod, and decoding every link's full pyroute2 message costs about a millisecond each."""
        req = ifinfmsg()
        req["family"] = socket.AF_UNSPEC
        seq = self._next_seq()
        req["header"].update(type=RTM_GETLINK, flags=NLM_F_REQUEST | NLM_F_DUMP, sequence_number=seq)
        req.encode()
        out: dict[str, int] = {}
        for data, pos, length, msg_type in self._raw_dump(req.data, seq, "link"):
            if msg_type != RTM_NEWLINK:
                continue
            (index,) = _IFINDEX.unpack_from(data, pos + _IFINFO_INDEX)
            attr, end = pos + _IFINFO_ATTRS, pos + length
            while attr + _NLA_HDR.size <= end:
                attr_len, attr_type = _NLA_HDR.unpack_from(data, attr)
                if attr_len < _NLA_HDR.size:
                    break
                if attr_type & 0x3FFF == _IFLA_IFNAME:
                    name = data[attr + _NLA_HDR.size:attr + attr_len].split(b"\0", 1)[0]
                    out[name.decode()] = index
                    break
                attr += (attr_len + 3) & ~3
        return out

    def dump(self, proto: int | None = None) -> dict[IPv4Network, Route]:
        """The main table's IPv4 routes (only protocol ``proto`` if given), keyed by destination.
        Where several routes share a destination (different metrics) the first one reported wins.

        A node can hold tens of thousands of routes, so the reply is read with a small reader
        of the route attributes Calyx uses (destination, interface, gateway, table, multipath)
        instead of building a full pyroute2 message object per route."""
        req = rtmsg()
        req["family"] = socket.AF_INET
        seq = self._next_seq()
        req["header"].update(type=RTM_GETROUTE, flags=NLM_F_REQUEST | NLM_F_DUMP, sequence_number=seq)
        req.encode()
        names = {index: name for name, index in self.links().items()}
        routes: dict[IPv4Network, Route] = {}
        for data, pos, length, msg_type in self._raw_dump(req.data, seq, "route"):
            if msg_type == RTM_NEWROUTE:
                route = _read_route(data, pos, length, names, proto)
                if route is not None and route.table == MAIN_TABLE:
                    routes.setdefault(route.dst, route)
        return routes

    # --- bulk writing -------------------------------------------------------------------

    def _template(self, shape: _Shape) -> _Template:
        template = self._templates.get(shape)
        if template is not None:
            return template
        msg = rtmsg()
        msg.update(family=socket.AF_INET, dst_len=32, table=shape.table if shape.table < 256 else 252,
                   proto=shape.proto, scope=shape.scope, type=shape.kind,
                   flags=_RTNH_F_ONLINK if shape.onlink else 0)
        attrs = [("RTA_TABLE", shape.table), ("RTA_DST", "0.0.0.0")]
        if shape.has_dev:
            attrs.append(("RTA_OIF", 0))
        if shape.has_gateway:
            attrs.append(("RTA_GATEWAY", "0.0.0.0"))
        msg["attrs"] = attrs
        flags = NLM_F_REQUEST
        if shape.msg_type == RTM_NEWROUTE:
            flags |= NLM_F_CREATE | NLM_F_REPLACE
        msg["header"].update(type=shape.msg_type, flags=flags, sequence_number=0)
        msg.encode()
        offsets = _attr_offsets(msg.data)
        template = _Template(bytes(msg.data), offsets[_RTA_DST], offsets.get(_RTA_OIF),
                             offsets.get(_RTA_GATEWAY))
        self._templates[shape] = template
        return template

    def _encode(self, route: Route, msg_type: int, ifindex: int | None, seq: int) -> bytes:
        shape = _Shape(
            msg_type=msg_type,
            kind=KINDS[route.kind],
            proto=route.proto,
            # a delete matches any scope; the kernel then matches type, protocol and next hop
            scope=SCOPES["nowhere"] if msg_type == RTM_DELROUTE else SCOPES[route.scope],
            table=route.table,
            has_dev=ifindex is not None,
            has_gateway=route.gateway is not None,
            onlink=route.onlink,
        )
        template = self._template(shape)
        buf = bytearray(template.data)
        struct.pack_into("=I", buf, 8, seq)
        buf[_RTMSG_DST_LEN] = route.dst.prefixlen
        buf[template.dst_offset:template.dst_offset + 4] = route.dst.network_address.packed
        if template.oif_offset is not None:
            struct.pack_into("=i", buf, template.oif_offset, ifindex)
        if template.gateway_offset is not None:
            buf[template.gateway_offset:template.gateway_offset + 4] = route.gateway.packed
        return bytes(buf)

    def apply(self, upserts: Iterable[Route], deletes: Iterable[Route]) -> ApplyResult:
        """Delete then add-or-replace routes in bulk. Each route succeeds or fails on its own;
        failures come back in ``errors`` with the kernel's reason, and nothing else is undone."""
        errors: list[tuple[Route, str]] = []
        messages: list[tuple[Route, bytes, int]] = []
        indexes: dict[str, int] | None = None
        for msg_type, routes in ((RTM_DELROUTE, deletes), (RTM_NEWROUTE, upserts)):
            for route in routes:
                ifindex = None
                if route.dev is not None:
                    if indexes is None:
                        indexes = self.links()
                    ifindex = indexes.get(route.dev)
                    if ifindex is None:
                        errors.append((route, f"device {route.dev} does not exist"))
                        continue
                seq = self._next_seq()
                messages.append((route, self._encode(route, msg_type, ifindex, seq), seq))
        writes = 0
        start = 0
        while start < len(messages):
            end, size = start, 0
            while end < len(messages) and size + len(messages[end][1]) <= _CHUNK_BYTES:
                size += len(messages[end][1])
                end += 1
            end = max(end, start + 1)
            chunk = messages[start:end]
            outcome = self._send_chunk(chunk)
            for route, _, seq in chunk:
                problem = outcome.get(seq)
                if problem is None:
                    writes += 1
                else:
                    errors.append((route, problem))
            start = end
        return ApplyResult(writes=writes, errors=errors)

    def _send_chunk(self, chunk: list[tuple[Route, bytes, int]]) -> dict[int, str]:
        """Send messages in one datagram; return {seq: error text} for those the kernel refused.

        Only the last message asks for an acknowledgement: the kernel handles a datagram's
        messages in order and reports every failure on its own, so the last message's answer
        means every earlier one has been handled."""
        last = bytearray(chunk[-1][1])
        struct.pack_into("=H", last, 6, struct.unpack_from("=H", last, 6)[0] | NLM_F_ACK)
        self._sock.send(b"".join(data for _, data, _ in chunk[:-1]) + bytes(last))
        seqs = {seq for _, _, seq in chunk}
        last_seq = chunk[-1][2]
        problems: dict[int, str] = {}
        while True:
            data = self._sock.recv(1 << 20)
            pos = 0
            while pos + _NLMSG_HDR.size <= len(data):
                length, msg_type, _, seq, _ = _NLMSG_HDR.unpack_from(data, pos)
                if length < _NLMSG_HDR.size:
                    break
                if msg_type == NLMSG_ERROR and seq in seqs:
                    (code,) = struct.unpack_from("=i", data, pos + _NLMSG_HDR.size)
                    if code:
                        problems[seq] = self._error_text(data[pos:pos + length], code)
                    if seq == last_seq:
                        return problems
                pos += (length + 3) & ~3

    @staticmethod
    def _error_text(data: bytes, code: int) -> str:
        text = os.strerror(-code)
        try:
            err = nlmsgerr(data)
            err.decode()
            detail = err.get_attr("NLMSGERR_ATTR_MSG")
        except Exception:  # the error code alone is still the kernel's answer
            detail = None
        return f"{text}: {detail}" if detail else text

    # --- single lookups and device control (pyroute2 as-is) -----------------------------

    def route_to(self, addr: IPv4Address) -> tuple[str | None, IPv4Address | None]:
        """The kernel's forwarding decision for ``addr``: (output device, gateway)."""
        try:
            msgs = self._iproute.route("get", dst=str(addr))
        except NetlinkError:
            return (None, None)
        for msg in msgs:
            oif = msg.get_attr("RTA_OIF")
            gateway = msg.get_attr("RTA_GATEWAY")
            names = {index: name for name, index in self.links().items()}
            return (names.get(oif), IPv4Address(gateway) if gateway else None)
        return (None, None)

    def interface_of(self, addr: IPv4Address) -> tuple[str, int] | None:
        """(device name, prefix length) of the interface holding local address ``addr``."""
        names = {index: name for name, index in self.links().items()}
        for msg in self._iproute.get_addr(family=socket.AF_INET):
            if msg.get_attr("IFA_ADDRESS") == str(addr) or msg.get_attr("IFA_LOCAL") == str(addr):
                return (names.get(msg["index"], ""), msg["prefixlen"])
        return None

    def interface_prefix(self, addr: IPv4Address) -> int | None:
        """The prefix length of local address ``addr``, or None if no interface holds it."""
        found = self.interface_of(addr)
        return found[1] if found else None

    def link(self, name: str) -> Link | None:
        """The interface ``name`` with its kind, MTU, state and IPv4 addresses, or None."""
        index = self.links().get(name)
        if index is None:
            return None
        (msg,) = self._iproute.get_links(index)
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        addresses = self._addresses(index)
        return Link(name=name, index=index, kind=kind, mtu=msg.get_attr("IFLA_MTU"),
                    up=bool(msg["flags"] & 1), addresses=addresses)

    def create_ipip(self, name: str) -> None:
        """Create an IPIP device; raises :class:`NetlinkUnsupported` if the kernel has no ipip."""
        try:
            self._iproute.link("add", ifname=name, kind="ipip")
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return
            if exc.code in (errno.EOPNOTSUPP, errno.ENODEV, errno.EAFNOSUPPORT, errno.ENOENT,
                            errno.EINVAL):
                raise NetlinkUnsupported(exc.code, f"cannot create ipip device {name}: "
                                         f"{os.strerror(exc.code)}") from exc
            raise

    def close(self) -> None:
        self._sock.close()
        super().close()


def interface_prefix(addr: IPv4Address, netns: str | None = None) -> int | None:
    """The prefix length of the local interface address ``addr`` (None if not local)."""
    with RouteTable(netns) as table:
        return table.interface_prefix(addr)


class _Monitor:
    """A netlink multicast subscription read by its own thread until :meth:`stop`."""

    def __init__(self, groups: int, netns: str | None, name: str):
        self._sock = _open_socket(netns, groups)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "_Monitor":
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = self._sock.recv(1 << 20)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:   # events were lost: the consumer must resync
                    self._overflow()
                    continue
                raise
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        raise NotImplementedError

    def _overflow(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        self._sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


class LinkMonitor(_Monitor):
    """Link add/del events -> ``callback(name, ifindex, present)`` on the monitor's thread.
    After lost events (socket overflow) the callback gets ``("", 0, False)``: resync."""

    def __init__(self, callback: Callable[[str, int, bool], None], netns: str | None = None):
        super().__init__(RTMGRP_LINK, netns, "link-monitor")
        self._marshal = MarshalRtnl()
        self._callback = callback

    def _handle(self, data: bytes) -> None:
        for msg in self._marshal.parse(data):
            kind = msg["header"]["type"]
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                self._callback(msg.get_attr("IFLA_IFNAME") or "", msg["index"], kind == RTM_NEWLINK)

    def _overflow(self) -> None:
        self._callback("", 0, False)


class RouteMonitor(_Monitor):
    """IPv4 route add/del events -> ``callback(route, present)`` on the monitor's thread.
    ``route`` is None after lost events (socket overflow): the consumer must resync."""

    def __init__(self, callback: Callable[[Route | None, bool], None], netns: str | None = None):
        super().__init__(RTMGRP_IPV4_ROUTE, netns, "route-monitor")
        self._callback = callback
        self._names: dict[int, str] = {}
        self._lookup = RouteTable(netns)

    def _handle(self, data: bytes) -> None:
        pos = 0
        while pos + _NLMSG_HDR.size <= len(data):
            length, kind, _, _, _ = _NLMSG_HDR.unpack_from(data, pos)
            if length < _NLMSG_HDR.size:
                break
            if kind in (RTM_NEWROUTE, RTM_DELROUTE):
                route = _read_route(data, pos, length, self._names, None)
                if route is not None and route.dev is None and self._has_oif(data, pos, length):
                    # an interface this monitor has not seen yet: learn its name, read again
                    self._names = {index: name for name, index in self._lookup.links().items()}
                    route = _read_route(data, pos, length, self._names, None)
                if route is not None:
                    self._callback(route, kind == RTM_NEWROUTE)
            pos += (length + 3) & ~3

    @staticmethod
    def _has_oif(data: bytes, pos: int, length: int) -> bool:
        attr, end = pos + _RTMSG_ATTRS, pos + length
        while attr + _NLA_HDR.size <= end:
            attr_len, attr_type = _NLA_HDR.unpack_from(data, attr)
            if attr_len < _NLA_HDR.size:
                return False
            if attr_type & 0x3FFF == _RTA_OIF:
                return True
            attr += (attr_len + 3) & ~3
        return False

    def _overflow(self) -> None:
        self._callback(None, False)

    def stop(self) -> None:
        super().stop()
        self._lookup.close()
