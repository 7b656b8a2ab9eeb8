"""The supervised bfdd child process: FRR's BFD daemon, one per node, in the node's namespace.

I/O. :class:`BfddProcess` starts ``/usr/lib/frr/bfdd`` with its control socket, vty socket, pid
file and log in bgpd's work directory (owned by FRR's ``frr`` user, which bfdd drops to), or
adopts the bfdd a previous bgpd left running there (its pid file names a live bfdd serving the
same control socket), so a bgpd restart keeps the BFD sessions and their peers see nothing.
Unlike ExaBGP, bfdd gets no parent-death signal: it outlives a bgpd killed outright for that.
When bfdd dies it is started again with exponential backoff. :meth:`BfddProcess.stop` ends it
by its PID: SIGTERM, then SIGKILL.
"""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from calyx.logs import get_logger

from bgpd.netns import enter_netns
from bgpd.restarts import RestartBackoff

log = get_logger("bgpd.bfdd")

DEFAULT_BFDD = "/usr/lib/frr/bfdd"
FRR_USER = "frr"


class BfddProcess:
    def __init__(self, work_dir: Path, on_exit: Callable[[int | None], None], bfdd_bin: str = DEFAULT_BFDD,
                 netns: str | None = None, max_backoff: float = 30.0) -> None:
        self.work_dir = work_dir
        self.control_path = work_dir / "bfdd.sock"
        self.pid_path = work_dir / "bfdd.pid"
        self.log_path = work_dir / "bfdd.log"
        self._bin = bfdd_bin
        self._netns = netns
        self._on_exit = on_exit
        self._max_backoff = max_backoff
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pid: int | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        pid = self._pid
        return pid if pid is not None and _alive(pid) else None

    @property
    def running(self) -> bool:
        return self._supervisor is not None

    def start(self) -> None:
        """Adopt the bfdd already serving this work directory, or start one; then supervise it."""
        if self._supervisor is not None:
            return
        self._stopping.clear()
        self._prepare_dir()
        adopted = self._running_bfdd()
        if adopted is not None:
            self._pid = adopted
            log.info("bfdd_adopted", pid=adopted, control=str(self.control_path))
        else:
            self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="bfdd-supervisor", daemon=True)
        self._supervisor.start()

    def stop_leftover(self) -> None:
        """End a bfdd an earlier bgpd left serving this work directory (no peer wants BFD now)."""
        if self._supervisor is None and self.pid_path.exists():
            pid = self._running_bfdd()
            if pid is not None:
                log.info("bfdd_leftover_stopped", pid=pid)
                self._pid = pid
                self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        pid = self._pid
        if pid is not None and _alive(pid):
            log.info("bfdd_stopping", pid=pid)
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid, self._proc) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid, self._proc):
                _signal(pid, signal.SIGKILL)
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout)
        self._pid = None
        self._proc = None

    # --- internals ------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            user = pwd.getpwnam(FRR_USER)
        except KeyError:
            return      # bfdd keeps running as the user that starts it
        os.chown(self.work_dir, user.pw_uid, user.pw_gid)
        os.chmod(self.work_dir, 0o700)

    def _running_bfdd(self) -> int | None:
        """The PID of a live bfdd serving our control socket, from its pid file."""
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if not argv or not argv[0].endswith(b"bfdd") or str(self.control_path).encode() not in argv:
            return None
        return pid

    def _argv(self) -> list[str]:
        return [self._bin, "--bfdctl", str(self.control_path), "--vty_socket", str(self.work_dir),
                "-i", str(self.pid_path), "-z", str(self.work_dir / "zserv.api"), "-P", "0",
                "--log", f"file:{self.log_path}", "--log-level", "info"]

    def _spawn(self) -> None:
        """Start bfdd; a bfdd that cannot be started (missing, not executable) is logged and
        tried again by the supervisor, with its backoff."""
        out = open(self.work_dir.parent / "bfdd.stdout.log", "ab")
        try:
            proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=str(self.work_dir), start_new_session=True,
                                    preexec_fn=enter_netns(self._netns) if self._netns else None)
        except (OSError, subprocess.SubprocessError) as exc:
            with self._lock:
                self._proc, self._pid = None, None
            log.error("bfdd_start_failed", bfdd=self._bin, error=str(exc))
            return
        finally:
            out.close()
        with self._lock:
            self._proc, self._pid = proc, proc.pid
        log.info("bfdd_started", pid=proc.pid, control=str(self.control_path), log=str(self.log_path))

    def _wait(self) -> int | None:
        """Until the current bfdd exits: its exit code (None for an adopted one, or none started)."""
        proc = self._proc
        if proc is not None:
            return proc.wait()
        pid = self._pid
        while pid is not None and _alive(pid) and not self._stopping.wait(0.5):
            pass
        return None

    def _supervise(self) -> None:
        backoff = RestartBackoff(self._max_backoff)
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self._wait()
            if self._stopping.is_set():
                return
            log.error("bfdd_exited", pid=self._pid, code=code, log=str(self.log_path))
            self._on_exit(code)
            if self._stopping.wait(backoff.after_exit(time.monotonic() - started)):
                return
            self.restarts += 1
            self._spawn()


def _alive(pid: int, proc: subprocess.Popen | None = None) -> bool:
    if proc is not None and proc.pid == pid:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:    # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
