"""The client of bfdd's control socket: connects, subscribes, sends requests, and posts what
bfdd says as typed events.

I/O. A reader thread connects to the socket (retrying while bfdd starts), subscribes to every
session's state and configuration changes, and posts :class:`BfdChannelUp`, one
:class:`BfdNotified` per notification and :class:`BfdChannelDown` when the connection ends (bfdd
exited or was stopped); then it connects again. :meth:`BfdControl.send` writes requests built by
:mod:`bgpd.bfd.protocol`; a response saying ``error`` is posted as :class:`BfdRefused`.
"""
from __future__ import annotations

import itertools
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from calyx.loop import Event
from calyx.logs import get_logger

from bgpd.bfd import protocol
from bgpd.channel import Channel
from bgpd.bfd.protocol import ConfigNotice, StatusNotice

log = get_logger("bgpd.bfd")

RETRY_INTERVAL = 0.2


@dataclass(frozen=True)
class BfdChannelUp(Event):
    """Connected and subscribed: bfdd is about to report every session it has."""


@dataclass(frozen=True)
class BfdChannelDown(Event):
    reason: str


@dataclass(frozen=True)
class BfdNotified(Event):
    notice: StatusNotice | ConfigNotice


@dataclass(frozen=True)
class BfdRefused(Event):
    request_id: int
    error: str


class BfdControl:
    def __init__(self, path: Path, post: Callable[[Event], None]) -> None:
        self.path = path
        self._post = post
        self._channel = Channel(log, "bfdd_control_send_failed")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    @property
    def connected(self) -> bool:
        return self._channel.connected

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="bfdd-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        sock = self._channel.detach()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def next_id(self) -> int:
        return next(self._ids) % 0xFFFF + 1

    def send(self, data: bytes) -> bool:
        return self._channel.send(data)

    # --- internals ------------------------------------------------------------------------

    def _connect(self) -> socket.socket | None:
        while not self._stopping.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                sock.sendall(protocol.subscribe(self.next_id()))
                return sock
            except OSError:
                sock.close()
                self._stopping.wait(RETRY_INTERVAL)
        return None

    def _run(self) -> None:
        while not self._stopping.is_set():
            sock = self._connect()
            if sock is None:
                return
            self._channel.attach(sock)
            log.info("bfdd_control_connected", path=str(self.path))
            self._post(BfdChannelUp())
            reason = self._read(sock)
            self._channel.detach(only=sock)
            sock.close()
            if self._stopping.is_set():
                return
            log.warning("bfdd_control_disconnected", reason=reason)
            self._post(BfdChannelDown(reason))
            self._stopping.wait(RETRY_INTERVAL)

    def _read(self, sock: socket.socket) -> str:
        decoder = protocol.Decoder()
        while True:
            try:
                data = sock.recv(65536)
            except OSError as exc:
                return str(exc)
            if not data:
                return "bfdd closed the control connection"
            try:
                for message in decoder.feed(data):
                    said = protocol.interpret(message)
                    if isinstance(said, protocol.Response):
                        if not said.ok:
                            self._post(BfdRefused(said.id, said.error))
                    elif said is not None:
                        self._post(BfdNotified(said))
            except protocol.ProtocolError as exc:
                log.error("bfdd_control_protocol_error", error=str(exc))
                return str(exc)
