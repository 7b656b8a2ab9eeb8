"""bgpd's private Unix sockets: mode 0600 from the moment they appear, and served only to
bgpd's own user even when someone loosens the file's mode."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from bgpd import control
from bgpd.unixsocket import listen_private

NOBODY = 65534
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect:", exc.strerror)
    sys.exit(0)
try:
    s.sendall(b'{"command": "status"}\\n')
    answer = s.makefile("rb").readline()
except OSError:    # closed by the server before or while the request was written
    answer = b""
print("answer:", repr(answer))
"""


@pytest.fixture
def open_dir():
    """A directory any user may enter, so that only the socket's own protection is tested."""
    path = Path(tempfile.mkdtemp(prefix="calyx-unixsocket-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_socket_appears_private_and_replaces_a_stale_file(open_dir: Path) -> None:
    path = open_dir / "x.sock"
    path.write_text("stale")
    sock = listen_private(path, backlog=1)
    try:
        info = path.lstat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert sorted(p.name for p in open_dir.iterdir()) == ["x.sock"]   # staging dir gone
    finally:
        sock.close()


def test_control_socket_serves_only_bgpd_s_user(open_dir: Path) -> None:
    path = open_dir / "bgpd.sock"
    server = control.ControlServer(path, {"status": lambda: {"sessions": []}}).start()
    try:
        assert control.request(path, "status") == {"sessions": []}

        def as_nobody() -> str:
            return subprocess.run(["/usr/bin/python3", "-c", CLIENT, str(path)], user=NOBODY,
                                  capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        assert as_nobody() == "connect: Permission denied"
        os.chmod(path, 0o666)                       # loosened by someone: still not served
        assert as_nobody() == "answer: b''"
        assert control.request(path, "status") == {"sessions": []}
    finally:
        server.stop()
