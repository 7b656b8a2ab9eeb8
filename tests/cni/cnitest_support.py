"""Test support: uniquely named network namespaces that are always removed, and a random
private subnet per test session (never the lab's management subnet)."""
from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Network


def unique_prefix() -> str:
    """A namespace-name prefix no concurrent run shares: 'cx' + pid + random."""
    return f"cx{os.getpid()}{random.randrange(16**4):04x}"


def random_session_subnet() -> IPv4Network:
    """A random 10.2XX.Y.0/24 for this test session."""
    return IPv4Network(f"10.{random.randrange(200, 250)}.{random.randrange(0, 256)}.0/24")


def sh(*argv: str, netns: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


@dataclass
class Namespaces:
    """Creates namespaces under one prefix and deletes every one of them on cleanup."""

    prefix: str = field(default_factory=unique_prefix)
    created: list[str] = field(default_factory=list)

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "link", "set", "lo", "up", netns=name)
        return name

    @staticmethod
    def path(name: str) -> str:
        return f"/var/run/netns/{name}"

    def cleanup(self) -> None:
        for name in reversed(self.created):
            sh("ip", "netns", "del", name, check=False)
        self.created.clear()
