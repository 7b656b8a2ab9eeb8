"""felix SIGKILLed in the middle of programming thousands of pod routes, then restarted: the
restarted route manager adopts what the dead one wrote, writes exactly the routes that are
missing, and leaves no duplicate, no leftover and no missing route.

The programming process runs felix's own code for routes (``desired_dataplane`` then
``RouteManager.resync`` and ``reconcile`` over the shared netlink layer) in a scratch namespace
holding one cali veth per pod; it is killed at a random moment while its writes are under way.
Two pods that were running before (wired as the CNI plugin wires them, their routes in place)
ping each other throughout: the kill and the restart must not cost them a packet.
"""
from __future__ import annotations

import ipaddress
import json
import random
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bench.felix_routes import NODE, make_links, snapshot, with_running_pods, writes_of
from bench.testbed import ip_batch
from calyx.naming import FELIX_ROUTE_PROTOCOL, cali_interface_name
from calyx.netlink import RouteTable
from felix.calc import LocalFacts, desired_dataplane
from felix.dataplane.routes import RouteManager
from felix.metrics import FelixMetrics
from podpings import NetnsPingMatrix, PodEnd, wire_pod

sys.path.insert(0, str(Path(__file__).parents[1] / "netlink"))
from scratch import scratch_netns  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.fault]

REPO = Path(__file__).parents[2]
PROGRAMMER = """
import json, sys
from prometheus_client import CollectorRegistry
from bench.felix_routes import NODE, snapshot, with_running_pods
from calyx.netlink import RouteTable
from felix.calc import LocalFacts, desired_dataplane
from felix.dataplane.routes import RouteManager
from felix.metrics import FelixMetrics
netns, pods, running = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
desired = desired_dataplane(with_running_pods(snapshot(pods), running), LocalFacts(NODE))
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


def kill_while_programming(netns: str, pods: int, running: dict[str, str], delay: float) -> None:
    """Start programming the routes of ``pods`` pods and the ``running`` ones in a child process
    and SIGKILL it ``delay`` seconds after its writes began (by its PID)."""
    child = subprocess.Popen([sys.executable, "-c", PROGRAMMER, netns, str(pods), json.dumps(running)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "programming"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)


def running_pods(stack: ExitStack, netns: str, snap, count: int = 2) -> dict[str, PodEnd]:
    """``count`` pods with namespaces of their own wired to the node as the CNI plugin wires them
    (their routes in place), on the addresses after the snapshot's pods."""
    free = list(snap.nodes[NODE].pod_cidrs[0].hosts())[len(snap.pods):]
    return {name: wire_pod(netns, stack.enter_context(scratch_netns("cxr")), cali_interface_name("bench", name),
                           str(free[i]), mtu=1500)
            for i, name in enumerate(f"running-{i}" for i in range(count))}


def delete_routes_but(netns: str, keep: set[str]) -> None:
    """Every felix route in the namespace gone but ``keep`` (destinations)."""
    ip_batch([f"route del {dst} proto {FELIX_ROUTE_PROTOCOL}" for dst in felix_routes(netns) if dst not in keep],
             netns)


@pytest.mark.parametrize("pods", [3000, pytest.param(10000, marks=pytest.mark.fault_full)])
def test_restart_after_a_kill_mid_programming_writes_only_what_is_missing(pods, fault_record, tmp_path):
    with ExitStack() as stack:
        netns, peers = stack.enter_context(scratch_netns("cxk")), stack.enter_context(scratch_netns("cxp"))
        make_links(netns, peers, snapshot(pods))
        running = running_pods(stack, netns, snapshot(pods))
        kept = {f"{pod.ip}/32" for pod in running.values()}
        snap = with_running_pods(snapshot(pods), {name: pod.ip for name, pod in running.items()})
        desired = desired_dataplane(snap, LocalFacts(NODE))
        wanted = sorted(str(r.dst) for r in desired.routes.values())
        with fault_record.case(f"SIGKILL of felix while it programs {pods} pod routes",
                               "restart writes only the missing; no duplicate, leftover or missing; "
                               "running pods lose no ping") as case:
            with NetnsPingMatrix(running, tmp_path) as pings:
                # a kill that lands before the first or after the last write proves nothing: the
                # window depends on the machine, so aim at it and narrow down until one lands inside
                delay, written = random.uniform(0.02, 0.1), []
                for _ in range(8):
                    kill_while_programming(netns, pods, {name: pod.ip for name, pod in running.items()}, delay)
                    present = felix_routes(netns)
                    written = [dst for dst in present if dst not in kept]
                    if 0 < len(written) < len(wanted) - len(kept):
                        break
                    delete_routes_but(netns, kept)
                    delay = delay / 3 if written else delay * 3
                assert 0 < len(written) < len(wanted) - len(kept), \
                    f"no kill landed mid-programming (last: {len(written)} routes)"
                assert len(present) == len(set(present)), "the killed felix left duplicate routes"
                case.detail = f"killed after {len(written)} of {len(wanted) - len(kept)} routes"
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
            pings.record(case)
