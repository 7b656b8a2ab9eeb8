"""The supervised ExaBGP child process and its API channel.

I/O. :class:`ExaBGPProcess` writes the configuration (mode 0600: it holds MD5 keys), starts
ExaBGP with its environment, and serves the Unix socket its API bridge program
(:mod:`bgpd.exabgp.bridge`) connects to. Lines from ExaBGP go to ``on_line``; ``send`` writes
commands. A changed configuration is applied with SIGUSR1 (ExaBGP keeps unchanged sessions).
When ExaBGP exits unexpectedly it is restarted with exponential backoff; ``on_connected``
fires whenever a (new) bridge connects, so the caller re-announces everything.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from calyx.logs import get_logger

from bgpd.channel import Channel
from bgpd.exabgp.config import PROCESS_NAME
from bgpd.netns import join_netns
from bgpd.restarts import RestartBackoff
from bgpd.unixsocket import accept_owner, listen_private, remove_socket_file

log = get_logger("bgpd.exabgp")

_PR_SET_PDEATHSIG = 1


def bridge_argv(socket_path: Path) -> tuple[str, ...]:
    return (sys.executable, "-m", "bgpd.exabgp.bridge", str(socket_path))


def _child_setup(netns: str | None) -> Callable[[], None]:
    """A preexec function: the child gets SIGTERM when bgpd dies, however it dies (SIGKILL
    included), so a new bgpd never meets an orphaned ExaBGP holding the BGP port; ExaBGP then
    closes its sessions without NOTIFICATION and the peers keep our routes through the restart
    (graceful restart). With ``netns``, the child also moves into /run/netns/<netns>."""
    parent = os.getpid()

    def setup() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl PR_SET_PDEATHSIG")
        if os.getppid() != parent:
            os._exit(1)       # bgpd died before the death signal was armed
        if netns is not None:
            join_netns(netns)
    return setup


class ExaBGPProcess:
    """One ExaBGP per node, restarted when it dies."""

    def __init__(self, work_dir: Path, on_line: Callable[[str], None],
                 on_connected: Callable[[], None], on_exit: Callable[[int], None],
                 exabgp_bin: str | None = None, netns: str | None = None,
                 max_backoff: float = 30.0) -> None:
        self.work_dir = work_dir
        self.config_path = work_dir / "exabgp.conf"
        self.socket_path = work_dir / "exabgp-api.sock"
        self.log_path = work_dir / "exabgp.log"
        # Default: ExaBGP through bgpd.exabgp.launch (explicit teardowns send their NOTIFICATION);
        # an explicit executable runs as it is.
        self._exabgp: tuple[str, ...] = (exabgp_bin,) if exabgp_bin else (sys.executable, "-m", "bgpd.exabgp.launch")
        self._netns = netns
        self._on_line = on_line
        self._on_connected = on_connected
        self._on_exit = on_exit
        self._max_backoff = max_backoff
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._channel = Channel(log, "exabgp_api_send_failed")
        self._env: dict[str, str] = {}
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.restarts = 0
        self.config_text = ""

    # --- public ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def connected(self) -> bool:
        return self._channel.connected

    def configure(self, text: str, env: Mapping[str, str], force: bool = False) -> None:
        """Write the configuration; start ExaBGP or make it reload (SIGUSR1; ``force``: even
        when the text is unchanged)."""
        with self._lock:
            changed = force or text != self.config_text or dict(env) != self._env
            self.config_text = text
            self._env = dict(env)
            self._write_config(text)
            proc = self._proc
        if self._listener is None:
            self._start_listener()
            self._spawn()
            threading.Thread(target=self._supervise, name="exabgp-supervisor", daemon=True).start()
        elif changed and proc is not None and proc.poll() is None:
            log.info("exabgp_reload", pid=proc.pid)
            proc.send_signal(signal.SIGUSR1)

    def send(self, lines: Iterable[str]) -> bool:
        """Send API commands; False when no bridge is connected (the caller replays later)."""
        data = "".join(line + "\n" for line in lines).encode()
        if not data:
            return True
        return self._channel.send(data)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        conn = self._channel.detach()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if conn is not None:
            conn.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        remove_socket_file(self.socket_path)

    # --- internals ------------------------------------------------------------------------

    def _write_config(self, text: str) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def _start_listener(self) -> None:
        self._listener = listen_private(self.socket_path, backlog=4)
        threading.Thread(target=self._accept_loop, name="exabgp-api-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set() and listener is not None:
            try:
                conn = accept_owner(listener)
            except OSError:
                return
            old = self._channel.attach(conn)
            if old is not None:
                old.close()
            log.info("exabgp_api_connected", process=PROCESS_NAME)
            threading.Thread(target=self._read_loop, args=(conn,), name="exabgp-api-read", daemon=True).start()
            self._on_connected()

    def _read_loop(self, conn: socket.socket) -> None:
        reader = conn.makefile("r", encoding="utf-8", errors="replace")
        try:
            for line in reader:
                try:
                    self._on_line(line)
                except Exception:   # a bad line must not stop the channel
                    log.error("exabgp_api_line_failed", exc_info=True, line=line[:200])
        except OSError:
            pass
        self._channel.detach(only=conn)
        log.info("exabgp_api_disconnected")

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.update(self._env)
        out = open(self.log_path, "ab")
        try:
            proc = subprocess.Popen(
                [*self._exabgp, str(self.config_path)], env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=str(self.work_dir),
                preexec_fn=_child_setup(self._netns),
                start_new_session=True)
        finally:
            out.close()
        with self._lock:
            self._proc = proc
        log.info("exabgp_started", pid=proc.pid, config=str(self.config_path))

    def _supervise(self) -> None:
        backoff = RestartBackoff(self._max_backoff)
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            log.error("exabgp_exited", pid=proc.pid, code=code, log=str(self.log_path))
            conn = self._channel.detach()
            if conn is not None:
                conn.close()
            self._on_exit(code)
            if self._stopping.wait(backoff.after_exit(time.monotonic() - started)):
                return
            self.restarts += 1
            self._spawn()
