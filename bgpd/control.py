"""The control socket serving ``bgpd status`` and ``bgpd routes``: one JSON request line in,
one JSON answer line out, over a Unix socket at ``$CALYX_RUN_DIR/bgpd.sock`` that only bgpd's own
user (root) can open or be served on (:mod:`bgpd.unixsocket`).

I/O. :class:`ControlServer` runs in the daemon; :func:`request` is the client the CLI uses.
"""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from bgpd.unixsocket import accept_owner, listen_private, remove_socket_file
from calyx.logs import get_logger

log = get_logger("bgpd.control")


class DaemonNotRunning(RuntimeError):
    """No bgpd answers on the control socket."""


class ControlServer:
    def __init__(self, path: Path, handlers: Mapping[str, Callable[[], Any]]) -> None:
        self.path = path
        self._handlers = dict(handlers)
        self._sock: socket.socket | None = None

    def start(self) -> "ControlServer":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sock = listen_private(self.path, backlog=8)
        threading.Thread(target=self._serve, name="bgpd-control", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        remove_socket_file(self.path)

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn = accept_owner(self._sock)
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                line = conn.makefile("r").readline()
                command = json.loads(line).get("command")
                handler = self._handlers.get(command)
                if handler is None:
                    reply: dict[str, Any] = {"error": f"unknown command {command!r}; try one of {sorted(self._handlers)}"}
                else:
                    reply = {"result": handler()}
            except Exception as exc:
                log.warning("control_request_failed", error=str(exc))
                reply = {"error": str(exc)}
            conn.sendall((json.dumps(reply, default=str) + "\n").encode())


def request(path: Path, command: str, timeout: float = 10.0) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonNotRunning(f"no bgpd is running: cannot connect to {path} ({exc.strerror})") from None
    with sock:
        sock.sendall((json.dumps({"command": command}) + "\n").encode())
        answer = json.loads(sock.makefile("r").readline() or "{}")
    if "error" in answer:
        raise RuntimeError(f"bgpd: {answer['error']}")
    return answer.get("result")
