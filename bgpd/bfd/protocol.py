"""bfdd's control-socket protocol: framing, requests and notifications.

Pure code. FRR's bfdd (``--bfdctl PATH``) speaks a small protocol on a Unix stream socket: each
message is an 8-byte header (payload length, big-endian 32 bits; request id, 16 bits echoed back
as sent; type; version 1) followed by a JSON payload. A client adds and removes sessions with
``{"ipv4": [{"peer-address": ..., "local-address": ..., "receive-interval": ms, ...}]}``,
subscribes to notifications with an 8-byte flag word, and then receives ``"op": "status"``
notifications on every state change (and ``add``/``delete``/``update`` ones on configuration
changes), each naming the session by its peer and local address. On subscription bfdd first
reports every session it already has, which is how a restarted bgpd adopts them.
"""
from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

VERSION = 1
HEADER = struct.Struct("!IHBB")     # length, id, type, version


class MessageType(enum.IntEnum):
    RESPONSE = 1
    REQUEST_ADD = 2
    REQUEST_DEL = 3
    NOTIFY = 4
    NOTIFY_ADD = 5
    NOTIFY_DEL = 6


NOTIFY_PEER_STATE = 1 << 0
NOTIFY_CONFIG = 1 << 1


class BfdState(str, enum.Enum):
    """A session's state as bfdd reports it; ``value`` is its name, :attr:`code` RFC 5880's number."""

    ADMIN_DOWN = "adm-down"
    DOWN = "down"
    INIT = "init"
    UP = "up"

    @property
    def code(self) -> int:
        return {"adm-down": 0, "down": 1, "init": 2, "up": 3}[self.value]


DIAGNOSTICS = {0: "no diagnostic", 1: "control detection time expired", 2: "echo function failed",
               3: "neighbor signaled session down", 4: "forwarding plane reset", 5: "path down",
               6: "concatenated path down", 7: "administratively down", 8: "reverse concatenated path down"}
DIAG_NEIGHBOR_DOWN = 3
DIAG_ADMIN_DOWN = 7


class ProtocolError(ValueError):
    """bfdd sent something this client cannot read."""


@dataclass(frozen=True)
class BfdPeer:
    """One single-hop session as bgpd wants it in bfdd (addresses and our timers, ms)."""

    peer: IPv4Address
    local: IPv4Address
    min_rx_ms: int
    min_tx_ms: int
    multiplier: int


@dataclass(frozen=True)
class Message:
    type: int
    id: int
    payload: bytes


@dataclass(frozen=True)
class Response:
    id: int
    ok: bool
    error: str


@dataclass(frozen=True)
class StatusNotice:
    """A session's state (``op`` ``status``)."""

    peer: IPv4Address
    local: IPv4Address | None
    state: BfdState
    diagnostics: int
    remote_diagnostics: int


@dataclass(frozen=True)
class ConfigNotice:
    """A session was added, updated or deleted in bfdd (``op`` ``add``/``update``/``delete``)."""

    op: str
    peer: IPv4Address
    local: IPv4Address | None


def encode(type_: MessageType, id_: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), id_ & 0xFFFF, int(type_), VERSION) + payload


def subscribe(id_: int) -> bytes:
    """Ask for every session's state changes and configuration changes (and a dump of both now).
    The flag word travels in the host's byte order: bfdd, on the same host, copies it verbatim."""
    return encode(MessageType.NOTIFY, id_, struct.pack("=Q", NOTIFY_PEER_STATE | NOTIFY_CONFIG))


def _peer_json(p: BfdPeer, with_timers: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"peer-address": str(p.peer), "local-address": str(p.local), "multihop": False}
    if with_timers:
        entry.update({"receive-interval": p.min_rx_ms, "transmit-interval": p.min_tx_ms,
                      "detect-multiplier": p.multiplier})
    return entry


def add_request(id_: int, peer: BfdPeer) -> bytes:
    """Create the session, or update its timers when it exists."""
    return encode(MessageType.REQUEST_ADD, id_, json.dumps({"ipv4": [_peer_json(peer, True)]}).encode())


def shutdown_request(id_: int, peer: BfdPeer) -> bytes:
    """Put the session in AdminDown: the peer is told BFD stops on purpose (RFC 5880 6.8.16)."""
    entry = {**_peer_json(peer, True), "shutdown": True}
    return encode(MessageType.REQUEST_ADD, id_, json.dumps({"ipv4": [entry]}).encode())


def delete_request(id_: int, peer: IPv4Address, local: IPv4Address | None) -> bytes:
    entry: dict[str, Any] = {"peer-address": str(peer), "multihop": False}
    if local is not None:
        entry["local-address"] = str(local)
    return encode(MessageType.REQUEST_DEL, id_, json.dumps({"ipv4": [entry]}).encode())


class Decoder:
    """Splits the byte stream from bfdd into messages; feed it what the socket returns."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out = []
        while len(self._buffer) >= HEADER.size:
            length, id_, type_, version = HEADER.unpack_from(self._buffer)
            if version != VERSION:
                raise ProtocolError(f"bfdd control message version {version}, expected {VERSION}")
            if len(self._buffer) < HEADER.size + length:
                break
            payload = self._buffer[HEADER.size:HEADER.size + length]
            self._buffer = self._buffer[HEADER.size + length:]
            out.append(Message(type=type_, id=id_, payload=payload))
        return out


def _address(data: dict[str, Any], key: str) -> IPv4Address | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return IPv4Address(str(value))
    except ValueError:
        raise ProtocolError(f"bfdd {key} {value!r} is not an IPv4 address") from None


def interpret(message: Message) -> Response | StatusNotice | ConfigNotice | None:
    """What a message says; None for what bgpd does not use (IPv6 or multi-hop sessions)."""
    try:
        data = json.loads(message.payload.rstrip(b"\0").decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"bfdd sent a payload that is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"bfdd sent a JSON {type(data).__name__}, expected an object")
    if message.type == MessageType.RESPONSE:
        return Response(id=message.id, ok=data.get("status") == "ok", error=str(data.get("error", "")))
    if message.type != MessageType.NOTIFY:
        raise ProtocolError(f"bfdd sent message type {message.type}")
    if data.get("ipv6") or data.get("multihop"):
        return None
    peer = _address(data, "peer-address")
    if peer is None:
        raise ProtocolError(f"bfdd notification without peer-address: {data}")
    local = _address(data, "local-address")
    op = data.get("op")
    if op == "status":
        try:
            state = BfdState(data.get("state"))
        except ValueError:
            raise ProtocolError(f"bfdd reports state {data.get('state')!r} for {peer}") from None
        return StatusNotice(peer=peer, local=local, state=state, diagnostics=int(data.get("diagnostics", 0)),
                            remote_diagnostics=int(data.get("remote-diagnostics", 0)))
    if op in ("add", "update", "delete"):
        return ConfigNotice(op=op, peer=peer, local=local)
    raise ProtocolError(f"bfdd notification op {op!r}")
