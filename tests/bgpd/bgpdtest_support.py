"""Test support: network namespaces joined by a bridge, torn down by name even on failure."""
from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass, field


def sh(*argv: str, check: bool = True) -> str:
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res.stdout


@dataclass
class Net:
    """A hub namespace holding a bridge, and node namespaces each with one veth into it."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{random.randrange(1000):03d}")
    namespaces: list[str] = field(default_factory=list)
    hub: str = ""

    def __post_init__(self) -> None:
        self.hub = self.ns_name("hub")
        self._add_ns(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        self._ports = 0

    def ns_name(self, short: str) -> str:
        return f"tbgp{self.tag}{short}"

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def node(self, short: str, *addresses: str) -> str:
        """A namespace with eth0 on the hub bridge holding ``addresses`` (CIDR notation)."""
        name = self.ns_name(short)
        self._add_ns(name)
        self._ports += 1
        port = f"p{self._ports}"
        sh("ip", "link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", port, "netns", self.hub)
        sh("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
        for addr in addresses:
            sh("ip", "-n", name, "addr", "add", addr, "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        return name

    def routes(self, ns: str, proto: str = "186") -> set[str]:
        out = sh("ip", "-n", ns, "-4", "route", "show", "proto", proto)
        return {" ".join(line.split()) for line in out.splitlines() if line.strip()}

    def destroy(self) -> None:
        for name in reversed(self.namespaces):
            sh("ip", "netns", "pids", name, check=False)
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


def subnet_octet() -> int:
    """A random second octet in 200-249 for this test session's 10.X.0.0/16 addresses."""
    return random.randrange(200, 250)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
    import time
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def make_speaker(ns: str, node: str, run_root, **kw):
    """A real Speaker for ``node`` whose ExaBGP and netlink live in namespace ``ns``."""
    from calyx.kernelwatch import KernelWatch
    from calyx.netlink import RouteTable
    from bgpd.metrics import SpeakerMetrics
    from bgpd.speaker import Speaker, SpeakerSettings
    kw.setdefault("graceful_restart", 5)
    settings = SpeakerSettings(node=node, run_dir=run_root / node, netns=ns, **kw)
    return Speaker(settings, RouteTable(netns=ns), SpeakerMetrics(), kernel_watch=KernelWatch(ns)).start()


def random_prefixes():
    """(node subnet /24 prefix like '10.231.7', pool /16 like '10.232') unique to this call."""
    x = random.randrange(200, 249)
    return f"10.{x}.{random.randrange(1, 250)}", f"10.{x + 1}"


def peer_row(speaker, address: str) -> dict:
    for p in speaker.status()["peers"]:
        if p["peer_address"] == address:
            return p
    return {}


class RouterProcess:
    """A router daemon the test started (``self.proc``), stopped by PID: terminate, then kill."""

    proc: "subprocess.Popen"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)


class Bird(RouterProcess):
    """A BIRD 2 process in a namespace, stopped by PID."""

    def __init__(self, ns: str, workdir, config: str) -> None:
        import subprocess
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "bird.conf"
        self.conf.write_text(config)
        self.sock = self.dir / "bird.ctl"
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/sbin/bird", "-f", "-c", str(self.conf),
                                      "-s", str(self.sock)],
                                     stdout=open(self.dir / "bird.log", "wb"), stderr=subprocess.STDOUT)

    def log(self) -> str:
        return (self.dir / "bird.log").read_text(errors="replace")

    def cli(self, *args: str) -> str:
        return sh("birdc", "-s", str(self.sock), *args, check=False)

    def learned(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """prefix -> (next hop, AS path) of the BGP routes BIRD holds."""
        out: dict[str, tuple[str, tuple[int, ...]]] = {}
        prefix, nh, as_path = None, "", ()
        for line in self.cli("show", "route", "where", "source = RTS_BGP", "all").splitlines():
            head = line.split()
            if head and "/" in head[0] and head[0][0].isdigit():
                prefix, nh, as_path = head[0], "", ()
            elif prefix and line.strip().startswith("BGP.next_hop:"):
                nh = line.split(":", 1)[1].split()[0]
                out[prefix] = (nh, as_path)
            elif prefix and line.strip().startswith("BGP.as_path:"):
                as_path = tuple(int(a) for a in line.split(":", 1)[1].split() if a.isdigit())
                if prefix in out:
                    out[prefix] = (out[prefix][0], as_path)
        return out


class FrrBgpd(RouterProcess):
    """FRR's bgpd alone (no zebra, no kernel) in a namespace, stopped by PID."""

    def __init__(self, ns: str, workdir, config: str, listen: str) -> None:
        import subprocess
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "bgpd.conf").write_text(config)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "/usr/lib/frr/bgpd", "-f", str(self.dir / "bgpd.conf"), "-Z", "-S", "-n",
             "-i", str(self.dir / "bgpd.pid"), "--vty_socket", str(self.dir), "-P", "0", "-l", listen,
             "--log", f"file:{self.dir / 'frr.log'}"],
            stdout=open(self.dir / "stdout.log", "wb"), stderr=subprocess.STDOUT)

    def vtysh(self, command: str) -> str:
        return sh("vtysh", "--vty_socket", str(self.dir), "-d", "bgpd", "-c", command, check=False)

    def learned(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """prefix -> (next hop, AS path) of the routes FRR received from its neighbors."""
        import json
        text = self.vtysh("show bgp ipv4 unicast json")
        out = {}
        for prefix, paths in (json.loads(text).get("routes", {}) if text.strip() else {}).items():
            for path in paths:
                if path.get("peerId") in (None, "(unspec)"):
                    continue     # our own
                nh = next((n.get("ip") for n in path.get("nexthops", [])), "")
                out[prefix] = (nh, tuple(int(a) for a in path.get("path", "").split() if a.isdigit()))
        return out


class GoBgp(RouterProcess):
    """gobgpd in a namespace (its gRPC API on the namespace's own loopback), stopped by PID."""

    def __init__(self, ns: str, workdir, config: str) -> None:
        import subprocess
        self.ns = ns
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "gobgp.yml").write_text(config)
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "gobgpd", "-f", str(self.dir / "gobgp.yml"),
                                      "-t", "yaml", "--api-hosts", "127.0.0.1:50051"],
                                     stdout=open(self.dir / "gobgpd.log", "wb"), stderr=subprocess.STDOUT)

    def cli(self, *args: str) -> str:
        return sh("ip", "netns", "exec", self.ns, "gobgp", "-u", "127.0.0.1", "-p", "50051", *args, check=False)

    def announce(self, prefixes: list[str]) -> None:
        """Originate ``prefixes`` (retried until gobgpd's API answers)."""
        import subprocess
        base = ["ip", "netns", "exec", self.ns, "gobgp", "-u", "127.0.0.1", "-p", "50051", "global", "rib"]
        for prefix in prefixes:
            wait_for(lambda p=prefix: subprocess.run(base + ["add", "-a", "ipv4", p], capture_output=True).returncode
                     == 0, timeout=90, what=f"GoBGP originates {prefix}")

    def learned(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """prefix -> (next hop, AS path) of the routes GoBGP received from its neighbors."""
        import json
        text = self.cli("-j", "global", "rib", "-a", "ipv4")
        out = {}
        for prefix, paths in (json.loads(text) if text.strip() else {}).items():
            for path in paths:
                if path.get("source-id") in (None, "", "<nil>") and path.get("neighbor-ip") in (None, "<nil>"):
                    continue     # our own
                nh, as_path = "", ()
                for attr in path.get("attrs", []):
                    if attr.get("type") == 3:
                        nh = attr.get("nexthop", "")
                    elif attr.get("type") == 2:
                        as_path = tuple(a for seg in attr.get("as_paths", []) for a in seg.get("asns", []))
                if nh not in ("", "0.0.0.0"):
                    out[prefix] = (nh, as_path)
        return out
