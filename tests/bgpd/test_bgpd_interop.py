"""Interop with BIRD 2, FRR and GoBGP as external routers, each as an eBGP and as an iBGP
peer (a global BGPPeer) of a real Speaker with a real ExaBGP: the session comes up with the
right peer type; the import policy installs the router's own network and refuses a prefix
inside our pod CIDR and one inside a pool; the router learns our pod block and the service
CIDR with our address as next hop (and our AS first in the path over eBGP)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from calyx.model import BGPConfiguration, BGPPeer, IPPool, NodeInfo, Snapshot

from bgpdtest_support import Bird, FrrBgpd, GoBgp, Net, make_speaker, peer_row, random_prefixes, wait_for

pytestmark = pytest.mark.lab

OUR_AS = 64512
SERVICES = "10.96.0.0/12"


def bird(ns: str, workdir: Path, router: str, router_as: int, node: str, routes: list[str],
         log_states: bool = False):
    """BIRD originating ``routes`` (blackholes) to ``node`` over eBGP; ``log_states`` logs the
    session's state changes."""
    statics = "\n".join(f"    route {r} blackhole;" for r in routes)
    debug = "    debug { states };\n" if log_states else ""
    return Bird(ns, workdir, f"""
log stderr all;
router id {router};
protocol device {{ }}
protocol static s4 {{
    ipv4;
{statics}
}}
protocol bgp calyx {{
{debug}    local {router} as {router_as};
    neighbor {node} as {OUR_AS};
    direct;
    ipv4 {{ import all; export where proto = "s4"; }};
}}
""")


def frr(ns: str, workdir: Path, router: str, router_as: int, node: str, routes: list[str]):
    networks = "\n".join(f"  network {r}" for r in routes)
    return FrrBgpd(ns, workdir, f"""
frr defaults traditional
hostname router
router bgp {router_as}
 bgp router-id {router}
 bgp log-neighbor-changes
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor {node} remote-as {OUR_AS}
 address-family ipv4 unicast
{networks}
 exit-address-family
""", listen=router)


def gobgp(ns: str, workdir: Path, router: str, router_as: int, node: str, routes: list[str]):
    g = GoBgp(ns, workdir, f"""
global:
  config: {{as: {router_as}, router-id: {router}, port: 179, local-address-list: ["{router}"]}}
neighbors:
  - config: {{neighbor-address: {node}, peer-as: {OUR_AS}}}
    afi-safis:
      - config: {{afi-safi-name: ipv4-unicast}}
""")
    g.announce(routes)
    return g


ROUTERS = {"bird": bird, "frr": frr, "gobgp": gobgp}


@pytest.mark.parametrize("router_as", [65000, OUR_AS], ids=["ebgp", "ibgp"])
@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_router_peer_import_policy_and_advertisement(net: Net, run_root: Path, kind: str, router_as: int) -> None:
    sub, pool16 = random_prefixes()
    node_ip, router_ip = f"{sub}.1", f"{sub}.254"
    node_cidr = f"{pool16}.0.0/26"
    external = f"172.31.{router_as % 250}.0/24"
    own, in_pool = f"{pool16}.0.0/28", f"{pool16}.9.0/26"
    snap = Snapshot(
        nodes={"a": NodeInfo(name="a", bgp_address=IPv4Interface(f"{node_ip}/24"),
                             pod_cidrs=(IPv4Network(node_cidr),))},
        ippools={"pool": IPPool(name="pool", cidr=IPv4Network(f"{pool16}.0.0/16"))},
        bgp_peers={"router": BGPPeer(name="router", peer_ip=IPv4Address(router_ip), as_number=router_as)},
        bgp_configuration=BGPConfiguration(as_number=OUR_AS, service_cluster_ips=(IPv4Network(SERVICES),)))
    ns_a = net.node("a", f"{node_ip}/24")
    ns_r = net.node("r", f"{router_ip}/24")
    router = ROUTERS[kind](ns_r, run_root / kind, router_ip, router_as, node_ip, [external, own, in_pool])
    speaker = make_speaker(ns_a, "a", run_root)
    try:
        speaker.set_snapshot(snap)
        wait_for(lambda: net.routes(ns_a) == {f"{external} via {router_ip} dev eth0"},
                 what=f"only {external} installed from {kind}")
        theirs = {external, own, in_pool}
        learned = wait_for(lambda: theirs <= (got := {r["prefix"]: r for r in speaker.routes()["learned"]}).keys()
                           and got, what=f"{kind}'s three prefixes received")
        # FRR (traditional defaults) also sends our own routes back over eBGP: refused as a loop.
        echoed = {p: r for p, r in learned.items() if p not in theirs}
        assert all(r["reason"] == f"AS_PATH contains our AS {OUR_AS}" for r in echoed.values()), echoed
        row = peer_row(speaker, router_ip)
        assert row["state"] == "Established" and row["peer_type"] == "global" and row["peer_as"] == router_as
        assert row["prefixes_received"] == len(learned)
        assert row["prefixes_accepted"] == 1 and row["prefixes_advertised"] == 2
        assert "overlaps this node's own" in learned[own]["reason"]
        assert "inside IPPool 'pool'" in learned[in_pool]["reason"]
        assert learned[external]["accepted"] and learned[external]["next_hop"] == router_ip
        if router_as != OUR_AS:
            assert learned[external]["as_path"] == str(router_as)
        got = wait_for(lambda: (r := router.learned()) and node_cidr in r and SERVICES in r and r,
                       what=f"{kind} learns the pod block and the service CIDR")
        for prefix in (node_cidr, SERVICES):
            nh, as_path = got[prefix]
            assert nh == node_ip, f"{kind}: {prefix} next hop {nh}"
            assert as_path == ((OUR_AS,) if router_as != OUR_AS else ()), f"{kind}: {prefix} AS path {as_path}"
    finally:
        speaker.stop()
        router.stop()
