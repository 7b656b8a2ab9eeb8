"""HTTP probes into a network namespace, as kubelet's httpGet probes reach a hostNetwork pod.

Standard library only (the UML control agent imports it). ``setns(CLONE_NEWNET)`` changes the
namespace of the calling thread alone, so each probe runs in a short-lived thread that joins
the node's namespace, makes one GET and ends; the rest of the process stays where it was.
"""
from __future__ import annotations

import ctypes
import http.client
import os
import threading

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
MAX_BODY = 10 * 1024


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def http_get_status(netns: str, host: str, port: int, path: str, timeout: float) -> tuple[int | None, str]:
    """(HTTP status or None, error text) of ``GET http://host:port/path`` from inside ``netns``."""
    result: list[tuple[int | None, str]] = []

    def probe() -> None:
        try:
            _setns(os.path.join(NETNS_DIR, netns))
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", path, headers={"User-Agent": "calyx-lab-kubelet"})
                response = conn.getresponse()
                # Read the body (as kubelet does, up to a limit): closing with unread data
                # makes the kernel reset the connection, which the server reports as an error.
                response.read(MAX_BODY)
                result.append((response.status, ""))
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            result.append((None, f"{type(exc).__name__}: {exc}"))

    thread = threading.Thread(target=probe, name=f"probe-{netns}", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    return result[0] if result else (None, f"probe of {host}:{port}{path} hung")
