"""Running a short function inside another network namespace, without a child process: a fresh
thread enters the namespace (setns(2) changes only the calling thread's namespace), calls the
function, and ends, so no thread is ever left in a foreign namespace. A socket created there
stays in that namespace for its whole life and can be used from any thread afterwards; that is
what felix's probe does with it (:mod:`felix.probecapture`, :mod:`felix.probesend`).

Entering a namespace needs CAP_SYS_ADMIN; the ``OSError`` says so.
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


def netns_path(netns: str) -> str:
    """A namespace given as a path, or as a name under /run/netns (as ``ip netns`` names it)."""
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        hint = " (entering a network namespace needs CAP_SYS_ADMIN)" if code == errno.EPERM else ""
        raise OSError(code, f"setns: {os.strerror(code)}{hint}")


def call_in_netns(netns: str, fn: Callable[[], T], timeout: float = 10.0) -> T:
    """``fn()`` called in a thread that entered the network namespace ``netns`` (a path or a
    name under /run/netns); its result, or its exception re-raised here."""
    path = netns_path(netns)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    worker = threading.Thread(target=run, name="netns-call", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"{path}: no answer within {timeout:.0f}s")
    if failure:
        raise failure[0]
    return outcome[0]
