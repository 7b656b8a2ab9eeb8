"""What bgpd knows about one BGP session: its peer, its state as ExaBGP reports it, what the
peer sent (Adj-RIB-In as received, with graceful-restart staleness), what we sent it
(Adj-RIB-Out), the max-prefix hold-down, and how a NOTIFICATION reads to an operator.

Pure code: plain state, changed by the speaker's loop only.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from bgpd.peers import Peer
from bgpd.rib import Attributes, Path

NOTIFICATION_CODES = {1: "message header error", 2: "OPEN message error", 3: "UPDATE message error",
                      4: "hold timer expired", 5: "FSM error", 6: "cease"}
CEASE_SUBCODES = {1: "maximum number of prefixes reached", 2: "administrative shutdown",
                  3: "peer de-configured", 4: "administrative reset", 5: "connection rejected",
                  6: "other configuration change", 7: "connection collision resolution",
                  8: "out of resources", 10: "BFD down"}


def describe_notification(code: int, subcode: int) -> str:
    """A NOTIFICATION's code and subcode in words (RFC 4271 section 4.5, RFC 4486)."""
    what = NOTIFICATION_CODES.get(code, f"code {code}")
    if code == 6:
        return what + f" ({CEASE_SUBCODES.get(subcode, subcode)})"
    return what + f" subcode {subcode}"


_NOTIFICATION_SENT = re.compile(r"notification sent \((\d+),(\d+)\)")
# What ExaBGP says when a connection attempt after a session's end fails: no news about why the
# session ended.
RECONNECT_NOISE = ("closing connection",)


def describe_down_reason(reason: str) -> str:
    """ExaBGP's reason for a session going down, as an operator reads it: the NOTIFICATION it
    sent (``notification sent (3,1)``, e.g. for a malformed UPDATE) in words, else as given."""
    sent = _NOTIFICATION_SENT.fullmatch(reason.strip())
    if sent is None:
        return reason
    return f"NOTIFICATION sent: {describe_notification(int(sent.group(1)), int(sent.group(2)))}"


@dataclass
class Session:
    peer: Peer
    state: str = "Idle"
    since: float = field(default_factory=time.time)
    info: str = ""
    router_id: IPv4Address | None = None
    peer_restart_time: int | None = None
    eor: bool = False                        # the peer sent End-of-RIB in this session
    eor_sent: bool = False                   # ... and we did
    stale_until: float | None = None
    refreshed: set[IPv4Network] = field(default_factory=set)
    received: dict[IPv4Network, Path] = field(default_factory=dict)
    announced: dict[IPv4Network, Attributes] = field(default_factory=dict)
    md5_hint: str = ""
    held_until: float | None = None          # max-prefix hold-down: left out of ExaBGP's config
    held_in_config: bool = False
    reload_when_down: bool = False           # torn down by bgpd: ExaBGP reloads once it is down

    @property
    def established(self) -> bool:
        return self.state == "Established"

    def stale_prefixes(self) -> list[IPv4Network]:
        """Routes kept through the peer's restart that it has not sent again."""
        return [p for p in self.received if p not in self.refreshed]
