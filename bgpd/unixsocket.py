"""Private Unix listening sockets for bgpd (its control socket, the ExaBGP API bridge's):
a stale file from an earlier run is replaced, and only root (mode 0600) may connect."""
from __future__ import annotations

import os
import socket
from pathlib import Path


def remove_socket_file(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def listen_private(path: Path, backlog: int) -> socket.socket:
    """A stream socket listening at ``path`` (replacing a stale file), mode 0600."""
    remove_socket_file(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(backlog)
    return sock
