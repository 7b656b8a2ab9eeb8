"""The route value felix and bgpd reason about, in the terms ``ip route`` uses.

Pure code: calculations build and compare :class:`Route` values without touching the kernel;
:mod:`calyx.netlink` reads and writes them and reports each bulk write as an :class:`ApplyResult`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

MAIN_TABLE = 254
SCOPES = {"universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
KINDS = {"unicast": 1, "local": 2, "broadcast": 3, "blackhole": 6, "unreachable": 7, "prohibit": 8}


@dataclass(frozen=True)
class Route:
    """One IPv4 route in the form both daemons reason about and the kernel reports."""

    dst: IPv4Network
    proto: int
    kind: str = "unicast"              # "unicast" | "blackhole" (| "unreachable" | "prohibit")
    dev: str | None = None             # output interface name
    gateway: IPv4Address | None = None
    onlink: bool = False
    scope: str = "universe"            # "link" for device routes such as pod /32s
    table: int = MAIN_TABLE

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"route {self.dst}: kind: {self.kind!r}: not one of {sorted(KINDS)}")
        if self.scope not in SCOPES:
            raise ValueError(f"route {self.dst}: scope: {self.scope!r}: not one of {sorted(SCOPES)}")

    def __str__(self) -> str:
        parts = [str(self.dst) if self.kind == "unicast" else f"{self.kind} {self.dst}"]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        if self.dev is not None:
            parts.append(f"dev {self.dev}")
        parts.append(f"proto {self.proto}")
        if self.scope != "universe":
            parts.append(f"scope {self.scope}")
        if self.onlink:
            parts.append("onlink")
        if self.table != MAIN_TABLE:
            parts.append(f"table {self.table}")
        return " ".join(parts)


@dataclass(frozen=True)
class ApplyResult:
    """What one bulk write of routes did: messages the kernel accepted, and per-route errors."""

    writes: int = 0
    errors: list[tuple[Route, str]] = field(default_factory=list)
