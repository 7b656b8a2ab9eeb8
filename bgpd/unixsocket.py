"""Private Unix listening sockets for bgpd (its control socket, the ExaBGP API bridge's): only
a process of bgpd's own user (root) may connect.

Two locks: the socket file appears at its path already with mode 0600 (it is bound in a fresh
directory of mode 0700, restricted there, then moved into place, so there is no moment when
another user could connect), and every accepted connection's peer credentials are checked, so
a socket whose file mode was loosened by someone else still serves only its owner's user.
A stale file from an earlier run is replaced.
"""
from __future__ import annotations

import os
import socket
import struct
import tempfile
from pathlib import Path

from calyx.logs import get_logger

log = get_logger("bgpd.unixsocket")

_UCRED = struct.Struct("3i")    # struct ucred: pid, uid, gid


def remove_socket_file(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def listen_private(path: Path, backlog: int) -> socket.socket:
    """A stream socket listening at ``path`` (replacing a stale file), mode 0600 from the start."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sock.bind(str(staging / path.name))
        os.chmod(staging / path.name, 0o600)
        os.replace(staging / path.name, path)
    except BaseException:
        sock.close()
        raise
    finally:
        remove_socket_file(staging / path.name)
        staging.rmdir()
    sock.listen(backlog)
    return sock


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket."""
    pid, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid


def accept_owner(listener: socket.socket) -> socket.socket:
    """The next connection from a process of this process's user; others are closed unanswered
    (and logged). Raises OSError when the listener is closed."""
    while True:
        conn, _ = listener.accept()
        pid, uid = peer_credentials(conn)
        if uid == os.geteuid():
            return conn
        log.warning("unix_socket_peer_refused", socket=listener.getsockname(), peer_uid=uid, peer_pid=pid,
                    reason="only the daemon's own user may connect")
        conn.close()
