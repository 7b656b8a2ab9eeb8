"""The connection bgpd currently holds to a child's API (ExaBGP's bridge, bfdd's control
socket): a reader thread attaches and detaches it, any thread writes to it.

I/O. Writes are serialised so that requests from several threads never interleave.
"""
from __future__ import annotations

import socket
import threading
from typing import Any


class Channel:
    def __init__(self, log: Any, send_failed_event: str) -> None:
        self._log = log
        self._send_failed_event = send_failed_event
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def attach(self, sock: socket.socket) -> socket.socket | None:
        """Use ``sock`` from now on; returns the connection it replaces (for the caller to close)."""
        with self._lock:
            old, self._sock = self._sock, sock
        return old

    def detach(self, only: socket.socket | None = None) -> socket.socket | None:
        """Stop using the connection (only if it is still ``only``, when given); returns it."""
        with self._lock:
            sock = self._sock
            if sock is None or (only is not None and sock is not only):
                return None
            self._sock = None
        return sock

    def send(self, data: bytes) -> bool:
        """Write ``data``; False when there is no connection or the write failed."""
        with self._lock:
            sock = self._sock
            if sock is None:
                return False
            try:
                sock.sendall(data)
                return True
            except OSError as exc:
                self._log.warning(self._send_failed_event, error=str(exc))
                return False
