"""Free management subnets for labs that must not collide with others on the same machine.

A subnet is free when no interface of this machine holds an address in it; it is claimed by
creating ``/run/calyx-lab-subnets/<network>`` exclusively with the claiming PID inside, so two
concurrent test sessions never pick the same one (a claim whose PID is gone is taken over).
"""
from __future__ import annotations

import os
import random
from ipaddress import IPv4Network
from pathlib import Path

from calyxlab.lab import subnet_in_use
from calyxlab.procs import start_time

CLAIM_DIR = Path("/run/calyx-lab-subnets")


def _claim(subnet: IPv4Network) -> bool:
    CLAIM_DIR.mkdir(parents=True, exist_ok=True)
    path = CLAIM_DIR / str(subnet.network_address)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and start_time(owner) is not None:
                return False
            path.unlink(missing_ok=True)     # stale: its session is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def claim_free_subnet(rng: random.Random | None = None) -> IPv4Network:
    """A 172.31.X.0/24 with no address on this machine, claimed for this process."""
    rng = rng or random.SystemRandom()
    for third in rng.sample(range(256), 256):
        subnet = IPv4Network(f"172.31.{third}.0/24")
        if subnet_in_use(subnet) is None and _claim(subnet):
            return subnet
    raise RuntimeError("no free 172.31.X.0/24 subnet for a test lab")


def release_subnet(subnet: IPv4Network) -> None:
    path = CLAIM_DIR / str(subnet.network_address)
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass
