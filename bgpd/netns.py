"""Starting bgpd's child processes (ExaBGP, bfdd) inside the node's network namespace."""
from __future__ import annotations

import ctypes
import os
from typing import Callable

_CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> Callable[[], None]:
    """A preexec function moving the child into network namespace /run/netns/<name>."""
    path = f"/run/netns/{name}"

    def enter() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
        os.close(fd)
    return enter
