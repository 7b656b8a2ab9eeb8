"""Local process primitives: run, spawn detached, identify by (PID, start time), terminate.

Standard library only, because the UML control agent imports it inside user-mode Linux where
every import is slow. A process is identified by its PID *and* its start time (field 22 of
``/proc/PID/stat``), so a recycled PID is never mistaken for one the lab started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Mapping, Sequence


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":      # a zombie has finished; only its exit status remains
        _reap(pid)
        return None
    return int(fields[19])


def alive(pid: int, started: int) -> bool:
    """True if ``pid`` still runs and is the process that started at ``started``."""
    return pid > 0 and start_time(pid) == started


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def run(argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None,
        env: Mapping[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """Run to completion; returns (returncode, stdout, stderr). Timeout kills its group: -9."""
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if input is not None
                                else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=full_env, start_new_session=True)
    except OSError as exc:
        return 127, b"", f"{argv[0]}: {exc.strerror}\n".encode()
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\ntimed out after {timeout} s\n".encode()
        return -signal.SIGKILL, out, err
    return proc.returncode, out, err


def spawn(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          log: str | None = None) -> tuple[int, int]:
    """Start a detached process (own session), output appended to ``log``; (pid, start time)."""
    full_env = {**os.environ, **env} if env else None
    if log:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        out = open(log, "ab")
    else:
        out = open(os.devnull, "wb")
    with out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
                                close_fds=True)
    started = None
    for _ in range(100):
        started = start_time(proc.pid)
        if started is not None or proc.poll() is not None:
            break
        time.sleep(0.01)
    return proc.pid, started if started is not None else -1


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(pid: int, started: int, *, grace: float = 5.0, group: bool = False) -> bool:
    """SIGTERM the process (or its process group), SIGKILL after ``grace`` seconds.

    Does nothing unless ``pid`` is still the process that started at ``started``. Returns True
    if it was running.
    """
    if not alive(pid, started):
        return False
    send = (lambda s: _kill_group(pid, s)) if group else (lambda s: _signal(pid, s))
    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid, started):
            return True
        time.sleep(0.02)
    if alive(pid, started):
        send(signal.SIGKILL)
        for _ in range(250):
            if not alive(pid, started):
                break
            time.sleep(0.02)
    return True


def kill_now(pid: int, started: int, *, group: bool = False) -> None:
    """SIGKILL at once (used for a whole UML instance, whose state is disposable)."""
    if alive(pid, started):
        if group:
            _kill_group(pid, signal.SIGKILL)
        _signal(pid, signal.SIGKILL)
        for _ in range(500):
            if not alive(pid, started):
                break
            time.sleep(0.01)


def send_signal(pid: int, started: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``started``; whether it was."""
    if not alive(pid, started):
        return False
    _signal(pid, sig)
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
