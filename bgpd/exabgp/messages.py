"""ExaBGP's API, both ways: JSON messages -> typed events, and routes -> API command lines.

Pure code. Incoming lines are either a JSON object (``type`` state / open / update /
notification) or an acknowledgement (``done`` / ``error``) of a command we sent. Outgoing,
announcements of one neighbor that share their attributes are batched into one
``announce attributes ... nlri ...`` line (about twice as fast as one ``announce route`` each).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Iterable, Mapping

from bgpd.rib import Attributes, Origin

ORIGINS = {"igp": Origin.IGP, "egp": Origin.EGP, "incomplete": Origin.INCOMPLETE}
NLRI_PER_LINE = 500


class MessageError(ValueError):
    """A line from ExaBGP that cannot be understood."""


@dataclass(frozen=True)
class Ack:
    ok: bool


@dataclass(frozen=True)
class StateEvent:
    peer: IPv4Address
    state: str                  # connected | up | down
    reason: str = ""


@dataclass(frozen=True)
class OpenEvent:
    peer: IPv4Address
    router_id: IPv4Address
    hold_time: int
    graceful_restart: int | None     # the peer's restart time when it advertised the capability


@dataclass(frozen=True)
class UpdateEvent:
    peer: IPv4Address
    announced: tuple[tuple[IPv4Network, Attributes], ...] = ()
    withdrawn: tuple[IPv4Network, ...] = ()
    end_of_rib: bool = False


@dataclass(frozen=True)
class NotificationEvent:
    peer: IPv4Address
    code: int
    subcode: int
    direction: str
    data: str = ""


PeerEvent = StateEvent | OpenEvent | UpdateEvent | NotificationEvent
Event = Ack | PeerEvent


def _attributes(raw: Mapping[str, Any], next_hop: IPv4Address) -> Attributes:
    seq: list[int] = []
    as_set: list[int] = []
    as_path = raw.get("as-path", {})
    if isinstance(as_path, list):       # older encoders: a flat sequence
        seq = [int(x) for x in as_path]
    else:
        for key in sorted(as_path, key=int):
            segment = as_path[key]
            if segment.get("element") == "as-sequence":
                seq.extend(int(x) for x in segment.get("value", ()))
            elif segment.get("element") == "as-set":
                as_set.extend(int(x) for x in segment.get("value", ()))
    communities = tuple(f"{a}:{b}" for a, b in raw.get("community", ()))
    originator = raw.get("originator-id")
    return Attributes(
        next_hop=next_hop,
        origin=ORIGINS.get(raw.get("origin", "igp"), Origin.INCOMPLETE),
        as_path=tuple(seq),
        as_set=tuple(as_set),
        local_pref=raw.get("local-preference"),
        med=raw.get("med"),
        communities=communities,
        originator_id=IPv4Address(originator) if originator else None,
        cluster_list=tuple(IPv4Address(c) for c in raw.get("cluster-list", ())),
    )


def parse_line(line: str) -> Event | None:
    """One line from ExaBGP -> an event (None for message kinds bgpd ignores)."""
    text = line.strip()
    if text == "done":
        return Ack(True)
    if text == "error":
        return Ack(False)
    if not text:
        return None
    try:
        msg = json.loads(text)
        kind = msg.get("type")
        neighbor = msg.get("neighbor", {})
        peer = IPv4Address(neighbor["address"]["peer"]) if "address" in neighbor else None
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"ExaBGP API line {text[:200]!r}: {exc}") from None
    if peer is None:
        return None
    try:
        if kind == "state":
            return StateEvent(peer, neighbor.get("state", ""), neighbor.get("reason", ""))
        if kind == "open":
            if neighbor.get("direction") != "receive":
                return None
            op = neighbor["open"]
            gr = None
            for cap in op.get("capabilities", {}).values():
                if cap.get("name") == "graceful restart":
                    gr = int(cap.get("time", 0))
            return OpenEvent(peer, IPv4Address(op["router_id"]), int(op.get("hold_time", 0)), gr)
        if kind == "notification":
            n = neighbor.get("notification", {})
            return NotificationEvent(peer, int(n.get("code", 0)), int(n.get("subcode", 0)),
                                     neighbor.get("direction", ""), str(n.get("data", "")))
        if kind == "update":
            message = neighbor.get("message", {})
            if "eor" in message:
                return UpdateEvent(peer, end_of_rib=True)
            update = message.get("update", {})
            raw_attrs = update.get("attribute", {})
            announced: list[tuple[IPv4Network, Attributes]] = []
            for family, by_nh in update.get("announce", {}).items():
                if family != "ipv4 unicast":
                    continue
                for nh, nlris in by_nh.items():
                    attrs = _attributes(raw_attrs, IPv4Address(nh))
                    for n in nlris:
                        announced.append((IPv4Network(n["nlri"]), attrs))
            withdrawn = [IPv4Network(n["nlri"]) for family, nlris in update.get("withdraw", {}).items()
                         if family == "ipv4 unicast" for n in nlris]
            return UpdateEvent(peer, tuple(announced), tuple(withdrawn))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MessageError(f"ExaBGP {kind} message from {peer}: {exc}") from None
    return None


# --- outgoing --------------------------------------------------------------------------

_ORIGIN_NAMES = {Origin.IGP: "igp", Origin.EGP: "egp", Origin.INCOMPLETE: "incomplete"}


def attribute_text(attrs: Attributes) -> str:
    """ExaBGP's text for ``attrs``. An empty AS path and an absent LOCAL_PREF are left out so
    ExaBGP fills in the defaults for the session (our AS towards eBGP peers, 100 for iBGP)."""
    # no next hop: "self", the local address of each session (sourceAddress None: the kernel's pick)
    next_hop = "self" if attrs.next_hop is None else attrs.next_hop
    parts = [f"next-hop {next_hop}", f"origin {_ORIGIN_NAMES[attrs.origin]}"]
    if attrs.as_path or attrs.as_set:
        text = "as-path [ " + " ".join(str(a) for a in attrs.as_path) + " ]"
        if attrs.as_set:
            text += " ( " + " ".join(str(a) for a in attrs.as_set) + " )"
        parts.append(text)
    if attrs.local_pref is not None:
        parts.append(f"local-preference {attrs.local_pref}")
    if attrs.med is not None:
        parts.append(f"med {attrs.med}")
    if attrs.communities:
        parts.append("community [ " + " ".join(attrs.communities) + " ]")
    if attrs.originator_id is not None:
        parts.append(f"originator-id {attrs.originator_id}")
    if attrs.cluster_list:
        parts.append("cluster-list [ " + " ".join(str(c) for c in attrs.cluster_list) + " ]")
    return " ".join(parts)


def _neighbors(peers: Iterable[IPv4Address]) -> str:
    """ExaBGP's selector for several neighbors at once: ``neighbor A , neighbor B``."""
    return " , ".join(f"neighbor {p}" for p in sorted(peers))


def update_lines(announce: Mapping[IPv4Address, Mapping[IPv4Network, Attributes]],
                 withdraw: Mapping[IPv4Address, Iterable[IPv4Network]]) -> list[str]:
    """Commands sending each peer its announcements and withdrawals, as few as ExaBGP allows.

    ExaBGP parses a command once and hands each of its routes to every neighbor the command
    names, so a route going to several peers with the same attributes (a node's own blocks to
    every mesh peer, a reflected path to every client) is one command for all of them; the
    routes of one attribute set and one set of peers share commands of up to NLRI_PER_LINE
    prefixes. Withdrawals first, each prefix once for all the peers it leaves."""
    lines: list[str] = []
    leaving: dict[IPv4Network, set[IPv4Address]] = {}
    for peer, prefixes in withdraw.items():
        for prefix in prefixes:
            leaving.setdefault(prefix, set()).add(peer)
    for prefix in sorted(leaving):
        lines.append(f"{_neighbors(leaving[prefix])} withdraw route {prefix}")
    receivers: dict[tuple[IPv4Network, Attributes], set[IPv4Address]] = {}
    for peer, routes in announce.items():
        for prefix, attrs in routes.items():
            receivers.setdefault((prefix, attrs), set()).add(peer)
    groups: dict[tuple[Attributes, frozenset[IPv4Address]], list[IPv4Network]] = {}
    for (prefix, attrs), peers in receivers.items():
        groups.setdefault((attrs, frozenset(peers)), []).append(prefix)
    for (attrs, peers), prefixes in sorted(groups.items(), key=lambda g: (sorted(g[0][1]), min(g[1]))):
        prefixes.sort()
        head = f"{_neighbors(peers)} announce attributes {attribute_text(attrs)} nlri "
        for i in range(0, len(prefixes), NLRI_PER_LINE):
            lines.append(head + " ".join(str(p) for p in prefixes[i:i + NLRI_PER_LINE]))
    return lines


def end_of_rib_line(peers: Iterable[IPv4Address]) -> str:
    """End-of-RIB for IPv4 unicast to these neighbors, sent by ExaBGP after what is queued."""
    return f"{_neighbors(peers)} announce eor ipv4 unicast"


def teardown_line(peer: IPv4Address, cease_subcode: int) -> str:
    return f"neighbor {peer} teardown {cease_subcode}"


CEASE_MAX_PREFIXES = 1
CEASE_BFD_DOWN = 10        # RFC 9384
