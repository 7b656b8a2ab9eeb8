"""Max-prefix against BIRD 2 as an external (eBGP) peer: the session is torn down and held down."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from calyx.model import BGPConfiguration, BGPPeer, IPPool, NodeInfo, Snapshot

from bgpdtest_support import Bird, Net, make_speaker, peer_row, random_prefixes, wait_for

pytestmark = pytest.mark.lab


def bird_config(router: str, local_as: int, neighbor: str, neighbor_as: int, routes: list[str]) -> str:
    statics = "\n".join(f"    route {r} blackhole;" for r in routes)
    return f"""
log stderr all;
router id {router};
protocol device {{ }}
protocol static s4 {{
    ipv4;
{statics}
}}
protocol bgp calyx {{
    local {router} as {local_as};
    neighbor {neighbor} as {neighbor_as};
    direct;
    ipv4 {{ import all; export where proto = "s4"; }};
}}
"""


def setup(net: Net, run_root: Path, bird_as: int, bird_routes: list[str], **speaker_kw):
    sub, pool16 = random_prefixes()
    node_cidr = IPv4Network(f"{pool16}.0.0/26")
    node = NodeInfo(name="a", bgp_address=IPv4Interface(f"{sub}.1/24"), pod_cidrs=(node_cidr,))
    peer = BGPPeer(name="router", peer_ip=IPv4Address(f"{sub}.254"), as_number=bird_as)
    snap = Snapshot(nodes={"a": node}, ippools={"pool": IPPool(name="pool", cidr=IPv4Network(f"{pool16}.0.0/16"))},
                    bgp_peers={"router": peer},
                    bgp_configuration=BGPConfiguration(service_cluster_ips=(IPv4Network("10.96.0.0/12"),)))
    ns_a = net.node("a", f"{sub}.1/24")
    ns_r = net.node("r", f"{sub}.254/24")
    routes = [r.format(pool16=pool16) for r in bird_routes]
    bird = Bird(ns_r, run_root / "bird", bird_config(f"{sub}.254", bird_as, f"{sub}.1", 64512, routes))
    speaker = make_speaker(ns_a, "a", run_root, **speaker_kw)
    speaker.set_snapshot(snap)
    return sub, pool16, ns_a, bird, speaker


def test_max_prefix_tears_the_session_down(net: Net, run_root: Path) -> None:
    routes = [f"172.31.{i}.0/24" for i in range(12)]
    sub, pool16, ns_a, bird, speaker = setup(net, run_root, 65000, routes, max_prefixes=5)
    try:
        row = wait_for(lambda: (r := peer_row(speaker, f"{sub}.254")) and "maximum prefixes" in r["info"] and r,
                       what="max-prefix teardown in status")
        assert "> 5)" in row["info"] and row["state"] == "Idle"
        assert net.routes(ns_a) == set()
        # Held down: BIRD's session goes down and no new one comes up while the hold-down lasts.
        # (ExaBGP closes a session that negotiated graceful restart without a NOTIFICATION.)
        wait_for(lambda: "Established" not in bird.cli("show", "protocols", "calyx"), timeout=30,
                 what="BIRD's session down")
        import time
        time.sleep(5)
        assert "Established" not in bird.cli("show", "protocols", "calyx")
        assert peer_row(speaker, f"{sub}.254")["state"] == "Idle"
    finally:
        speaker.stop()
        bird.stop()
