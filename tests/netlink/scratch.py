"""Scratch network namespaces for tests: unique names, removed even when a test fails."""
from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from typing import Iterator


def unique_name(prefix: str) -> str:
    """A name no concurrent test run uses: prefix + pid + random suffix (<= 15 chars for links)."""
    return f"{prefix}{os.getpid() % 10000}{secrets.token_hex(2)}"


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return subprocess.run(argv, check=check, capture_output=True, text=True)


@contextlib.contextmanager
def scratch_netns(prefix: str = "cxt") -> Iterator[str]:
    """A fresh namespace with lo up; deleted (with everything in it) on exit."""
    name = unique_name(prefix)
    ip("netns", "add", name)
    try:
        ip("link", "set", "lo", "up", netns=name)
        yield name
    finally:
        ip("netns", "del", name, check=False)


def add_veth(netns: str, name: str, peer: str | None = None, address: str | None = None) -> None:
    """A veth pair inside ``netns`` (both ends up), optionally with an address on ``name``."""
    ip("link", "add", name, "type", "veth", "peer", "name", peer or f"{name}p", netns=netns)
    ip("link", "set", name, "up", netns=netns)
    ip("link", "set", peer or f"{name}p", "up", netns=netns)
    if address:
        ip("addr", "add", address, "dev", name, netns=netns)
