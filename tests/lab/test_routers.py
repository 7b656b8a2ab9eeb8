"""Router images: FRR, BIRD and GoBGP each run their packaged daemon and establish BGP.

Two copies of the same three-router lab run at once, which only works if every node's
runtime files (pid files, vty and control sockets) are its own.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from calyxlab.lab import Lab

pytestmark = pytest.mark.lab

ROUTERS = Path(__file__).resolve().parent / "topologies" / "routers" / "routers.clab.yml"


def sessions(lab: Lab) -> dict[str, set[str]]:
    """Established neighbours as each router's own CLI reports them."""
    out: dict[str, set[str]] = {}
    frr = json.loads(lab.exec("frr", ["vtysh", "-c", "show bgp summary json"]).stdout or "{}")
    peers = frr.get("ipv4Unicast", {}).get("peers", {})
    out["frr"] = {ip for ip, p in peers.items() if p.get("state") == "Established"}
    bird = lab.exec("bird", ["birdc", "show", "protocols"]).stdout
    out["bird"] = {line.split()[0] for line in bird.splitlines()
                   if " BGP " in line and "Established" in line}
    gobgp = json.loads(lab.exec("gobgp", ["gobgp", "neighbor", "-j"]).stdout or "[]")
    out["gobgp"] = {n["conf"]["neighbor_address"] for n in gobgp
                    if n.get("state", {}).get("session_state") == 6}   # 6: ESTABLISHED
    return out


EXPECTED = {"frr": {"10.90.12.2", "10.90.13.2"}, "bird": {"frr", "gobgp"},
            "gobgp": {"10.90.13.1", "10.90.23.1"}}


def wait_established(lab: Lab, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    seen = {}
    while time.monotonic() < deadline:
        seen = sessions(lab)
        if seen == EXPECTED:
            return
        time.sleep(0.5)
    raise AssertionError(f"lab {lab.name}: sessions {seen}, expected {EXPECTED}")


def test_frr_bird_gobgp_establish_and_exchange_routes(lab_factory) -> None:
    labs = [lab_factory(ROUTERS, kernel="host"), lab_factory(ROUTERS, kernel="host")]
    for lab in labs:
        wait_established(lab)
    lab = labs[0]
    # BIRD's static prefix reaches FRR, and FRR's reaches BIRD's kernel table (proto bird)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frr_rib = json.loads(lab.exec("frr", ["vtysh", "-c", "show ip bgp json"]).stdout)
        kernel = lab.exec("bird", ["ip", "route", "show", "10.91.1.0/24"]).stdout
        if "10.91.2.0/24" in frr_rib.get("routes", {}) and "proto bird" in kernel:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"routes not exchanged: FRR {sorted(frr_rib.get('routes', {}))}, "
                             f"BIRD kernel {kernel!r}")
    rib = lab.exec("gobgp", ["gobgp", "global", "rib", "-j"], check=True).stdout
    assert "10.91.1.0/24" in rib and "10.91.2.0/24" in rib
    # each lab's FRR answers for itself: the vty sockets are per node
    for other in labs:
        pid = other.exec("frr", ["cat", "/run/frr/bgpd.pid"], check=True).stdout.strip()
        handle = [p for p in other.processes("frr") if p.name == "bgpd"][0]
        assert int(pid) == handle.pid
