"""felix SIGKILLed in the middle of programming thousands of pod routes, then restarted: the
restarted route manager adopts what the dead one wrote, writes exactly the routes that are
missing, and leaves no duplicate, no leftover and no missing route.

The programming process runs felix's own code for routes (``desired_dataplane`` then
``RouteManager.resync`` and ``reconcile`` over the shared netlink layer) in a scratch namespace
holding one cali veth per pod; it is killed at a random moment while its writes are under way.
"""
from __future__ import annotations

import ipaddress
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bench.felix_routes import NODE, make_links, snapshot, writes_of
from calyx.naming import FELIX_ROUTE_PROTOCOL
from calyx.netlink import RouteTable
from felix.calc import LocalFacts, desired_dataplane
from felix.dataplane.routes import RouteManager
from felix.metrics import FelixMetrics

sys.path.insert(0, str(Path(__file__).parents[1] / "netlink"))
from scratch import scratch_netns  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.fault]

REPO = Path(__file__).parents[2]
PROGRAMMER = """
import sys
from prometheus_client import CollectorRegistry
from bench.felix_routes import NODE, snapshot
from calyx.netlink import RouteTable
from felix.calc import LocalFacts, desired_dataplane
from felix.dataplane.routes import RouteManager
from felix.metrics import FelixMetrics
netns, pods = sys.argv[1], int(sys.argv[2])
desired = desired_dataplane(snapshot(pods), LocalFacts(NODE))
with RouteTable(netns=netns) as table:
    manager = RouteManager(table, FelixMetrics.create(CollectorRegistry()))
    manager.resync()
    print("programming", flush=True)
    manager.reconcile(desired.routes, desired.reasons)
print("done", flush=True)
"""


def felix_routes(netns: str) -> list[str]:
    """Destinations of every felix route in the namespace's main table, duplicates included."""
    out = subprocess.run(["ip", "-n", netns, "-j", "-4", "route", "show", "proto", str(FELIX_ROUTE_PROTOCOL)],
                         check=True, capture_output=True, text=True).stdout
    return [str(ipaddress.ip_network(r["dst"])) for r in json.loads(out or "[]")]


def kill_while_programming(netns: str, pods: int, delay: float) -> None:
    """Start programming ``pods`` routes in a child process and SIGKILL it ``delay`` seconds
    after its writes began (by its PID)."""
    child = subprocess.Popen([sys.executable, "-c", PROGRAMMER, netns, str(pods)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "programming"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)


@pytest.mark.parametrize("pods", [3000, pytest.param(10000, marks=pytest.mark.fault_full)])
def test_restart_after_a_kill_mid_programming_writes_only_what_is_missing(pods, fault_record):
    snap = snapshot(pods)
    desired = desired_dataplane(snap, LocalFacts(NODE))
    wanted = sorted(str(r.dst) for r in desired.routes.values())
    with scratch_netns("cxk") as netns, scratch_netns("cxp") as peers:
        make_links(netns, peers, snap)
        with fault_record.case(f"SIGKILL of felix while it programs {pods} pod routes",
                               "restart writes only the missing; no duplicate, leftover or missing") as case:
            # a kill that lands before the first or after the last write proves nothing: the
            # window depends on the machine, so aim at it and narrow down until one lands inside
            delay, present = random.uniform(0.02, 0.1), []
            for _ in range(8):
                kill_while_programming(netns, pods, delay)
                present = felix_routes(netns)
                if 0 < len(present) < len(wanted):
                    break
                subprocess.run(["ip", "-n", netns, "route", "flush", "proto", str(FELIX_ROUTE_PROTOCOL)], check=True)
                delay = delay / 3 if present else delay * 3
            assert 0 < len(present) < len(wanted), f"no kill landed mid-programming (last: {len(present)} routes)"
            assert len(present) == len(set(present)), "the killed felix left duplicate routes"
            case.detail = f"killed after {len(present)} of {len(wanted)} routes"
            started = time.monotonic()
            with RouteTable(netns=netns) as table:
                metrics = FelixMetrics.create(CollectorRegistry())
                manager = RouteManager(table, metrics)
                manager.resync()
                plan = manager.reconcile(desired.routes, desired.reasons)
                case.recovery_s = time.monotonic() - started
                case.route_writes = int(writes_of(metrics))
            assert not plan.pending and not plan.conflicts
            assert sorted(felix_routes(netns)) == wanted, "missing or leftover routes after the restart"
            assert case.route_writes == len(wanted) - len(present), "the restart rewrote routes already in place"
            # and the next restart has nothing to do
            with RouteTable(netns=netns) as table:
                metrics = FelixMetrics.create(CollectorRegistry())
                manager = RouteManager(table, metrics)
                manager.resync()
                manager.reconcile(desired.routes, desired.reasons)
                assert writes_of(metrics) == 0
