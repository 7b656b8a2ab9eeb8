"""Max-prefix against real routers (BIRD 2 and FRR, eBGP): a peer sending more prefixes than
allowed gets a Cease NOTIFICATION "maximum number of prefixes reached" (it shows in the
router's own CLI), its routes are withdrawn, and it is held down for the configured time, after
which the session may come up again (and is torn down again while the peer still sends too
many)."""
from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from calyx.model import BGPConfiguration, BGPPeer, IPPool, NodeInfo, Snapshot

from bgpdtest_support import Net, make_speaker, peer_row, random_prefixes, wait_for
from test_bgpd_interop import ROUTERS

pytestmark = [pytest.mark.lab, pytest.mark.fault]

LIMIT = 5
HOLD_DOWN = 12.0


def router_saw_max_prefix_notification(kind: str, router) -> str:
    """The router's own account of the NOTIFICATION it received ('' when none yet)."""
    if kind == "bird":
        text = router.cli("show", "protocols", "all", "calyx")
        return text if "Received: Maximum number of prefixes reached" in text else ""
    lines = (router.dir / "frr.log").read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if "%NOTIFICATION: received from neighbor" in line
                     and "6/1 (Cease/Maximum Number of Prefixes Reached)" in line)


def router_established(kind: str, router) -> bool:
    if kind == "bird":
        return "Established" in router.cli("show", "protocols", "calyx")
    return "BGP state = Established" in router.vtysh("show bgp neighbors")


@pytest.mark.parametrize("kind", ["bird", "frr"])
def test_max_prefix_sends_a_cease_notification_and_holds_down(net: Net, run_root: Path, kind: str,
                                                              fault_record) -> None:
    sub, pool16 = random_prefixes()
    node_ip, router_ip = f"{sub}.1", f"{sub}.254"
    snap = Snapshot(
        nodes={"a": NodeInfo(name="a", bgp_address=IPv4Interface(f"{node_ip}/24"),
                             pod_cidrs=(IPv4Network(f"{pool16}.0.0/26"),))},
        ippools={"pool": IPPool(name="pool", cidr=IPv4Network(f"{pool16}.0.0/16"))},
        bgp_peers={"router": BGPPeer(name="router", peer_ip=IPv4Address(router_ip), as_number=65000)},
        bgp_configuration=BGPConfiguration())
    ns_a = net.node("a", f"{node_ip}/24")
    ns_r = net.node("r", f"{router_ip}/24")
    routes = [f"172.31.{i}.0/24" for i in range(LIMIT * 2 + 2)]
    router = ROUTERS[kind](ns_r, run_root / kind, router_ip, 65000, node_ip, routes)
    speaker = make_speaker(ns_a, "a", run_root, max_prefixes=LIMIT, max_prefix_hold_down=HOLD_DOWN)
    try:
        with fault_record.case(f"eBGP peer ({kind}) sends {len(routes)} prefixes over a limit of {LIMIT}",
                               "Cease/maximum number of prefixes sent, routes withdrawn, peer held down "
                               f"{int(HOLD_DOWN)}s, then torn down again") as case:
            speaker.set_snapshot(snap)
            row = wait_for(lambda: (r := peer_row(speaker, router_ip)) and "maximum prefixes" in r["info"] and r,
                           what="max-prefix teardown in status")
            torn_down = time.monotonic()
            assert f"> {LIMIT})" in row["info"] and row["state"] == "Idle"
            assert f"held down for {int(HOLD_DOWN)}s" in row["info"]
            wait_for(lambda: net.routes(ns_a) == set(), timeout=90, what="the router's routes withdrawn")
            case.recovery_s = time.monotonic() - torn_down
            seen = wait_for(lambda: router_saw_max_prefix_notification(kind, router), timeout=90,
                            what=f"{kind} reports the Cease NOTIFICATION (maximum number of prefixes)")
            print(seen)
            # Held down: no session while the hold-down lasts.
            while time.monotonic() - torn_down < HOLD_DOWN - 4:
                assert not router_established(kind, router), f"{kind}: session up during the hold-down"
                assert peer_row(speaker, router_ip)["state"] == "Idle"
                time.sleep(0.5)
            # After the hold-down the session comes back, and is torn down again (still too many).
            wait_for(lambda: speaker.metrics.max_prefix_teardowns._value.get() >= 2, timeout=HOLD_DOWN + 60,
                     what="a second teardown after the hold-down")
            assert time.monotonic() - torn_down >= HOLD_DOWN - 1
            case.route_writes = int(speaker.metrics.route_writes._value.get())
            case.detail = f"{kind} saw the NOTIFICATION; 2 teardowns"
    finally:
        speaker.stop()
        router.stop()
