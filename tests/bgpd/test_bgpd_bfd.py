"""BFD between real speakers: Calyx with Calyx (node-to-node mesh), with FRR (bgpd + bfdd +
zebra) and with BIRD 2. A peer cut off silently (its bridge port taken down: no link event on
the other nodes, no NOTIFICATION) loses its session and its routes within BFD's detection time, far
inside the hold time; when the path returns, BFD and the session come back."""
from __future__ import annotations

import json
import os
import pickle
import pwd
import signal
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from calyx.model import FAILURE_DETECTION_BFD, BGPConfiguration, BGPPeer, IPPool, NodeInfo, Snapshot

from bgpdtest_support import Bird, Net, RouterProcess, make_speaker, peer_row, random_prefixes, sh, wait_for

pytestmark = pytest.mark.lab

HOLD = 180.0              # seconds: ExaBGP's default hold time, and what the external peers use
DETECT = 15.0             # generous bound for "gone well before the hold timer"


def cut_off(net: Net, port: int) -> None:
    """Take the node's bridge port down in the hub: its peers see no link event, it just goes
    silent (``port`` counts the nodes in the order they were added, from 1)."""
    sh("ip", "-n", net.hub, "link", "set", f"p{port}", "down")


def reconnect(net: Net, port: int) -> None:
    sh("ip", "-n", net.hub, "link", "set", f"p{port}", "up")


def bfd_mesh(net: Net, names: tuple[str, ...]) -> tuple[str, str, Snapshot, dict[str, str]]:
    """Nodes ``names`` (addresses .1, .2, ... of a fresh /24, a /26 each) in a mesh with BFD:
    the subnet's first three octets, the pool's first two, the snapshot, name -> namespace."""
    sub, pool16 = random_prefixes()
    nodes = {n: NodeInfo(name=n, bgp_address=IPv4Interface(f"{sub}.{i}/24"),
                         pod_cidrs=(IPv4Network(f"{pool16}.{i}.0/26"),)) for i, n in enumerate(names, 1)}
    snap = Snapshot(nodes=nodes, ippools={"pool": IPPool(name="pool", cidr=IPv4Network(f"{pool16}.0.0/16"))},
                    bgp_configuration=BGPConfiguration(node_mesh_failure_detection_mode=FAILURE_DETECTION_BFD))
    return sub, pool16, snap, {n: net.node(n, f"{sub}.{i}/24") for i, n in enumerate(names, 1)}


def test_mesh_bfd_removes_a_silent_node_at_once(net: Net, run_root: Path) -> None:
    names = ("a", "b", "c")
    sub, pool16, snap, ns = bfd_mesh(net, names)
    speakers = {n: make_speaker(ns[n], n, run_root) for n in names}
    b_block = f"{pool16}.2.0/26 via {sub}.2 dev eth0"
    try:
        for sp in speakers.values():
            sp.set_snapshot(snap)
        for n in ("a", "c"):
            wait_for(lambda n=n: b_block in net.routes(ns[n]), what=f"{n} learns b's block")
            wait_for(lambda n=n: peer_row(speakers[n], f"{sub}.2").get("bfd") == "up", what=f"{n}: BFD with b up")
        assert speakers["a"].status()["bfdd_pid"] is not None
        cut_off(net, 2)
        for n in ("a", "c"):
            wait_for(lambda n=n: b_block not in net.routes(ns[n]), timeout=DETECT,
                     what=f"{n} removes b's block within BFD's detection time (hold time {HOLD:.0f}s)")
            row = peer_row(speakers[n], f"{sub}.2")
            assert row["bfd"] == "down" and row["state"] != "Established", row
            assert row["info"].startswith("BFD down (control detection time expired)"), row
            assert row["prefixes_received"] == 0
            assert speakers[n].metrics.bfd_teardowns._value.get() == 1
        assert f"{pool16}.3.0/26 via {sub}.3 dev eth0" in net.routes(ns["a"]), "a keeps c's block"
        reconnect(net, 2)
        for n in ("a", "c"):
            wait_for(lambda n=n: peer_row(speakers[n], f"{sub}.2").get("bfd") == "up", what=f"{n}: BFD with b up again")
            wait_for(lambda n=n: b_block in net.routes(ns[n]), timeout=90, what=f"{n} learns b's block again")
    finally:
        pids = [sp.status()["bfdd_pid"] for sp in speakers.values()]
        for sp in speakers.values():
            sp.stop()
    for pid in pids:
        assert pid is None or not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z", f"bfdd {pid} outlived its speaker"


def test_peer_outside_the_subnet_gets_no_bfd(net: Net, run_root: Path) -> None:
    sub, pool16 = random_prefixes()
    nodes = {"a": NodeInfo(name="a", bgp_address=IPv4Interface(f"{sub}.1/24"))}
    far = "192.0.2.77"
    snap = Snapshot(nodes=nodes, bgp_peers={"far": BGPPeer(name="far", peer_ip=IPv4Address(far), as_number=65001,
                                                            failure_detection_mode=FAILURE_DETECTION_BFD)})
    ns = net.node("a", f"{sub}.1/24")
    sp = make_speaker(ns, "a", run_root)
    try:
        sp.set_snapshot(snap)
        wait_for(lambda: peer_row(sp, far), what="the peer is configured")
        row = peer_row(sp, far)
        assert row["bfd"] == "" and "not directly connected" in row["info"], row
        assert sp.status()["bfdd_pid"] is None, "bfdd runs only when a peer wants BFD"
    finally:
        sp.stop()


class FrrWithBfd(RouterProcess):
    """FRR's zebra, bgpd and bfdd in one namespace (bgpd asks bfdd for BFD through zebra)."""

    def __init__(self, ns: str, workdir: Path, config: str) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        frr = pwd.getpwnam("frr")
        os.chown(self.dir, frr.pw_uid, frr.pw_gid)      # the daemons drop to FRR's user
        (self.dir / "frr.conf").write_text(config)
        zserv = str(self.dir / "zserv.api")
        common = ["--vty_socket", str(self.dir), "-z", zserv, "-P", "0", "--log", f"file:{self.dir / 'frr.log'}"]
        self.procs = []
        for daemon, extra in (("zebra", []), ("bfdd", []), ("bgpd", ["-f", str(self.dir / "frr.conf")])):
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, f"/usr/lib/frr/{daemon}", *common, "-i", str(self.dir / f"{daemon}.pid"),
                 *extra], stdout=open(self.dir / f"{daemon}.out", "wb"), stderr=subprocess.STDOUT))
            if daemon == "zebra":
                wait_for(lambda: Path(zserv).exists(), timeout=20, what="zebra's socket")
        self.proc = self.procs[-1]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self.proc = proc
            super().stop()

    def vtysh(self, daemon: str, command: str) -> str:
        return sh("vtysh", "--vty_socket", str(self.dir), "-d", daemon, "-c", command, check=False)


def _external_case(net: Net, run_root: Path, start_router) -> None:
    """Calyx node ``a`` peers (BFD, hold 90s) with a router in its subnet that originates a /24."""
    sub, pool16 = random_prefixes()
    router_ip = f"{sub}.254"
    prefix = "198.51.100.0/24"      # outside the IPPool: an external route a accepts
    nodes = {"a": NodeInfo(name="a", bgp_address=IPv4Interface(f"{sub}.1/24"))}
    snap = Snapshot(nodes=nodes, ippools={"pool": IPPool(name="pool", cidr=IPv4Network(f"{pool16}.0.0/16"))},
                    bgp_peers={"router": BGPPeer(name="router", peer_ip=IPv4Address(router_ip), as_number=65001,
                                                 hold_time=90.0, failure_detection_mode=FAILURE_DETECTION_BFD)})
    ns_a = net.node("a", f"{sub}.1/24")
    ns_r = net.node("r", f"{router_ip}/24")
    router = start_router(ns_r, run_root / "router", sub, router_ip, prefix)
    sp = make_speaker(ns_a, "a", run_root)
    route = f"{prefix} via {router_ip} dev eth0"
    try:
        sp.set_snapshot(snap)
        wait_for(lambda: route in net.routes(ns_a), timeout=90, what="a installs the router's prefix")
        wait_for(lambda: peer_row(sp, router_ip).get("bfd") == "up", what="BFD with the router up")
        assert router.bfd_up(f"{sub}.1"), "the router sees BFD with a up"
        cut_off(net, 2)
        wait_for(lambda: route not in net.routes(ns_a), timeout=DETECT,
                 what="a removes the router's prefix within BFD's detection time (hold time 90s)")
        row = peer_row(sp, router_ip)
        assert row["bfd"] == "down" and row["state"] != "Established" and row["prefixes_received"] == 0, row
        reconnect(net, 2)
        wait_for(lambda: route in net.routes(ns_a), timeout=120, what="the prefix comes back with the path")
        assert peer_row(sp, router_ip)["bfd"] == "up"
    finally:
        sp.stop()
        router.stop()


def test_bfd_with_frr(net: Net, run_root: Path) -> None:
    def start(ns: str, workdir: Path, sub: str, me: str, prefix: str):
        frr = FrrWithBfd(ns, workdir, f"""
frr defaults traditional
hostname r
router bgp 65001
 bgp router-id {me}
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 30 90
 neighbor {sub}.1 remote-as 64512
 neighbor {sub}.1 bfd
 address-family ipv4 unicast
  network {prefix}
 exit-address-family
""")
        frr.bfd_up = lambda peer: '"status":"up"' in frr.vtysh("bfdd", "show bfd peers json").replace(" ", "")
        return frr
    _external_case(net, run_root, start)


def test_bfd_with_bird(net: Net, run_root: Path) -> None:
    def start(ns: str, workdir: Path, sub: str, me: str, prefix: str):
        bird = Bird(ns, workdir, f"""
router id {me};
protocol device {{ }}
protocol static {{ ipv4; route {prefix} blackhole; }}
protocol bfd {{
  interface "eth0" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }};
}}
protocol bgp calyx {{
  local {me} as 65001;
  neighbor {sub}.1 as 64512;
  hold time 90;
  bfd on;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
""")
        bird.bfd_up = lambda peer: any(peer in line and " Up " in f" {line} " for line in
                                       bird.cli("show", "bfd", "sessions").splitlines())
        return bird
    _external_case(net, run_root, start)


SPEAKER_PROCESS = """
import json, pickle, sys, time
from pathlib import Path
sys.path.insert(0, {support!r})
from bgpdtest_support import make_speaker, peer_row
ns, node, root, peer = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
snap = pickle.loads(Path(sys.argv[5]).read_bytes())
sp = make_speaker(ns, node, root)
sp.set_snapshot(snap)
while peer_row(sp, peer).get("bfd") != "up":
    time.sleep(0.2)
print(json.dumps(sp.status()), flush=True)
time.sleep(3600)
"""


def test_a_restarted_bgpd_adopts_its_bfdd_and_the_peer_sees_no_bfd_flap(net: Net, run_root: Path) -> None:
    """bgpd killed outright leaves bfdd running; the next bgpd adopts it (same PID), so the BFD
    sessions never go down and no peer tears anything down because of BFD."""
    sub, pool16, snap, ns = bfd_mesh(net, ("a", "b"))
    (run_root / "snapshot.pickle").write_bytes(pickle.dumps(snap))
    b = make_speaker(ns["b"], "b", run_root)
    first = subprocess.Popen([sys.executable, "-c", SPEAKER_PROCESS.format(support=str(Path(__file__).parent)),
                              ns["a"], "a", str(run_root), f"{sub}.2", str(run_root / "snapshot.pickle")],
                             stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).parents[2]))
    a = None
    before: dict = {}
    try:
        b.set_snapshot(snap)
        before = json.loads(first.stdout.readline())
        wait_for(lambda: peer_row(b, f"{sub}.1").get("bfd") == "up", what="b: BFD with a up")
        first.kill()            # bgpd dies without stopping anything
        first.wait(10)
        try:
            os.kill(before["exabgp_pid"], signal.SIGKILL)    # ExaBGP ends with bgpd; make sure
        except ProcessLookupError:
            pass
        a = make_speaker(ns["a"], "a", run_root)
        a.set_snapshot(snap)
        wait_for(lambda: peer_row(a, f"{sub}.2").get("bfd") == "up", what="the new bgpd sees BFD with b up")
        assert a.status()["bfdd_pid"] == before["bfdd_pid"], "the running bfdd was adopted, not replaced"
        wait_for(lambda: f"{pool16}.1.0/26 via {sub}.1 dev eth0" in net.routes(ns["b"]), timeout=90,
                 what="b learns a's block again from the new bgpd")
        assert b.metrics.bfd_teardowns._value.get() == 0, "BFD never went down during the restart"
        assert peer_row(b, f"{sub}.1")["bfd"] == "up"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        if a is not None:
            a.stop()
        elif before.get("bfdd_pid"):
            os.kill(before["bfdd_pid"], signal.SIGKILL)
        b.stop()


def test_a_stopping_bgpd_says_admin_down_so_peers_keep_its_routes(net: Net, run_root: Path) -> None:
    """bgpd stopping (an upgrade, a restart) puts its BFD sessions AdminDown before ending bfdd:
    the peer does not treat it as a failure, and graceful restart keeps the routes meanwhile."""
    sub, pool16, snap, ns = bfd_mesh(net, ("a", "b"))
    a = make_speaker(ns["a"], "a", run_root, graceful_restart=30)
    b = make_speaker(ns["b"], "b", run_root)
    a_block = f"{pool16}.1.0/26 via {sub}.1 dev eth0"
    try:
        for sp in (a, b):
            sp.set_snapshot(snap)
        wait_for(lambda: a_block in net.routes(ns["b"]), what="b learns a's block")
        wait_for(lambda: peer_row(b, f"{sub}.1").get("bfd") == "up", what="b: BFD with a up")
        bfdd = a.status()["bfdd_pid"]
        a.stop()
        assert not Path(f"/proc/{bfdd}/cmdline").exists() or not Path(f"/proc/{bfdd}/cmdline").read_bytes(), \
            "bfdd ended with bgpd"
        wait_for(lambda: peer_row(b, f"{sub}.1").get("bfd") == "down", what="b sees BFD with a down")
        row = peer_row(b, f"{sub}.1")
        assert b.metrics.bfd_teardowns._value.get() == 0, row
        assert a_block in net.routes(ns["b"]), "b keeps a's block (graceful restart), no BFD teardown"
        assert "stale" in row["info"] or row["prefixes_received"] == 1, row
    finally:
        a.stop()
        b.stop()


def test_a_missing_bfdd_leaves_bgp_running_and_says_so(net: Net, run_root: Path) -> None:
    sub, pool16, snap, ns = bfd_mesh(net, ("a", "b"))
    speakers = [make_speaker(ns[n], n, run_root, bfdd_bin=str(run_root / "no-such-bfdd")) for n in ("a", "b")]
    try:
        for sp in speakers:
            sp.set_snapshot(snap)
        wait_for(lambda: f"{pool16}.2.0/26 via {sub}.2 dev eth0" in net.routes(ns["a"]),
                 what="BGP works without bfdd")
        row = peer_row(speakers[0], f"{sub}.2")
        assert row["bfd"] == "unknown" and row["info"].startswith("BFD: bfdd not connected"), row
        assert speakers[0].status()["bfdd_pid"] is None
    finally:
        for sp in speakers:
            sp.stop()
