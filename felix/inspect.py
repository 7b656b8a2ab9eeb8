"""felix's read-only view of its node's forwarding, served as JSON on its health port for
``calyxctl trace``: ``/v1/route?dst=IP`` and ``/v1/link?name=DEV``.

``/v1/route`` answers what the kernel of this node does with a packet to ``dst``: the kernel's
own route lookup (RTM_GETROUTE, as ``ip route get``: output device, gateway, source address or
the error, e.g. "Network is unreachable"), the routing-table entry that matched (as ``ip route
get fibmatch``: prefix, type, protocol and which Calyx daemon owns it, device, gateway, onlink,
MTU), and the output device (kind, MTU, up). A destination matching a blackhole (or unreachable,
prohibit) entry makes the kernel's lookup fail; the entry is then found by the longest prefix
match over the main table, which is what the kernel matched since Calyx adds no policy rules.

``/v1/link`` answers one device: exists, kind (veth, ipip, vxlan...), MTU, up.

Nothing here writes: every request opens its own netlink sockets (the main loop's are not
shared across threads) and closes them.
"""
from __future__ import annotations

import errno
import os
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Iterable, Mapping

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from calyx.naming import BGPD_ROUTE_PROTOCOL, FELIX_ROUTE_PROTOCOL
from calyx.netlink import Link, RouteTable
from calyx.observability import JsonHandler
from calyx.route import KINDS, MAIN_TABLE, SCOPES, Route

RTM_F_FIB_MATCH = 0x2000          # ask for the matched table entry, not the resolved route
RTNH_F_ONLINK = 4
ROUTE_PATH = "/v1/route"
LINK_PATH = "/v1/link"

_KIND_NAMES = {number: name for name, number in KINDS.items()}
_SCOPE_NAMES = {number: name for name, number in SCOPES.items()}
_PROTOCOL_OWNERS = {FELIX_ROUTE_PROTOCOL: "felix", BGPD_ROUTE_PROTOCOL: "bgpd", 2: "kernel", 3: "boot",
                    4: "static"}


def route_owner(proto: int) -> str:
    """Who wrote a route, by its protocol number: felix (80, also the CNI plugin's pod routes),
    bgpd (186, learned over BGP), the kernel, boot or static (an administrator), else "proto N"."""
    return _PROTOCOL_OWNERS.get(proto, f"proto {proto}")


def longest_match(routes: Iterable[Route], addr: IPv4Address) -> Route | None:
    """The route of ``routes`` whose destination holds ``addr`` with the longest prefix."""
    best: Route | None = None
    for route in routes:
        if addr in route.dst and (best is None or route.dst.prefixlen > best.dst.prefixlen):
            best = route
    return best


def link_json(link: Link | None) -> dict[str, Any] | None:
    if link is None:
        return None
    return {"name": link.name, "index": link.index, "kind": link.kind, "mtu": link.mtu, "up": link.up,
            "addresses": [str(a) for a in link.addresses]}


def _metric_mtu(msg: Any) -> int | None:
    metrics = msg.get_attr("RTA_METRICS")
    return metrics.get_attr("RTAX_MTU") if metrics is not None else None


class NodeInspector:
    """Answers the read-only endpoints for node ``nodename`` from the current network
    namespace (felix's: the node's). ``open_table`` and ``open_iproute`` are the netlink seams."""

    def __init__(self, nodename: str, open_table: Callable[[], RouteTable] = RouteTable,
                 open_iproute: Callable[[], IPRoute] = IPRoute) -> None:
        self.nodename = nodename
        self._open_table = open_table
        self._open_iproute = open_iproute

    def handlers(self) -> dict[str, JsonHandler]:
        return {ROUTE_PATH: self.route, LINK_PATH: self.link}

    # --- /v1/route ----------------------------------------------------------------------

    def route(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        raw = (query.get("dst") or [""])[0]
        try:
            dst = IPv4Address(raw)
        except ValueError:
            return 400, {"error": f"query parameter dst: {raw!r}: not an IPv4 address"}
        with self._open_table() as table, self._open_iproute() as ipr:
            names = {index: name for name, index in table.links().items()}
            lookup = self._lookup(ipr, dst, names)
            match = self._fib_match(ipr, dst, names)
            if match is None:
                fallback = longest_match(table.dump().values(), dst)
                match = self._route_json(fallback) if fallback is not None else None
            dev = lookup.get("dev") or (match or {}).get("dev")
            device = link_json(table.link(dev)) if dev else None
        return 200, {"node": self.nodename, "dst": str(dst), "lookup": lookup, "match": match, "device": device}

    @staticmethod
    def _lookup(ipr: IPRoute, dst: IPv4Address, names: Mapping[int, str]) -> dict[str, Any]:
        try:
            (msg, *_) = ipr.route("get", dst=str(dst))
        except NetlinkError as exc:
            return {"ok": False, "error": os.strerror(exc.code) if exc.code else str(exc),
                    "errno": errno.errorcode.get(exc.code, str(exc.code))}
        gateway = msg.get_attr("RTA_GATEWAY")
        return {"ok": True, "error": None, "type": _KIND_NAMES.get(msg["type"], str(msg["type"])),
                "dev": names.get(msg.get_attr("RTA_OIF")), "gateway": gateway,
                "prefsrc": msg.get_attr("RTA_PREFSRC"), "mtu": _metric_mtu(msg)}

    @staticmethod
    def _fib_match(ipr: IPRoute, dst: IPv4Address, names: Mapping[int, str]) -> dict[str, Any] | None:
        try:
            (msg, *_) = ipr.route("get", dst=str(dst), flags=RTM_F_FIB_MATCH)
        except NetlinkError:
            return None      # blackhole, unreachable, no route: the caller reads the table
        prefix = msg.get_attr("RTA_DST") or "0.0.0.0"
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        proto = msg["proto"]
        return {"dst": str(IPv4Network(f"{prefix}/{msg['dst_len']}")),
                "type": _KIND_NAMES.get(msg["type"], str(msg["type"])), "proto": proto,
                "owner": route_owner(proto), "dev": names.get(msg.get_attr("RTA_OIF")),
                "gateway": msg.get_attr("RTA_GATEWAY"), "onlink": bool(msg["flags"] & RTNH_F_ONLINK),
                "scope": _SCOPE_NAMES.get(msg["scope"], str(msg["scope"])), "table": table,
                "mtu": _metric_mtu(msg)}

    @staticmethod
    def _route_json(route: Route) -> dict[str, Any]:
        return {"dst": str(route.dst), "type": route.kind, "proto": route.proto, "owner": route_owner(route.proto),
                "dev": route.dev, "gateway": str(route.gateway) if route.gateway else None,
                "onlink": route.onlink, "scope": route.scope, "table": route.table or MAIN_TABLE, "mtu": None}

    # --- /v1/link -----------------------------------------------------------------------

    def link(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        name = (query.get("name") or [""])[0]
        if not name or len(name) > 15 or "/" in name:
            return 400, {"error": f"query parameter name: {name!r}: not a device name"}
        with self._open_table() as table:
            return 200, {"node": self.nodename, "name": name, "device": link_json(table.link(name))}
