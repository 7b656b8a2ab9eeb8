"""The benchmarks' test bed on the host kernel: node namespaces on a bridge in the root
namespace, a real Kubernetes control plane (etcd, kube-apiserver, controller-manager,
scheduler; :mod:`calyxlab.controlplane`) listening on the bridge's address, felix/bgpd/BIRD
processes inside the node namespaces. Everything is named with a per-run tag and removed on
exit (processes by PID, then namespaces and the bridge), even when a benchmark fails.

Test bed construction uses iproute2 commands (like the lab runner); the daemons under test use
only their own libraries.
"""
from __future__ import annotations

import ipaddress
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import kubernetes.client

from bench.common import REPO, children, rss_mib, wait_until
from calyx.kube import client as kube_client
from calyx.netlink import RouteTable
from calyxlab import manifests
from calyxlab.controlplane import cluster

VENV_BIN = Path(sys.executable).parent
BGP_PROTO = 186
BIRD_PROTO = 12


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, input=stdin)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}...: {res.stderr.strip()[:500]}")
    return res.stdout


BATCH_LINES = 5000   # per ``ip -batch``: iproute2 keeps a descriptor open per "netns NAME" argument


def ip_batch(commands: Iterable[str], netns: str | None = None) -> None:
    """Run iproute2 commands through ``ip -batch`` (fast for thousands of links or routes)."""
    lines = list(commands)
    for start in range(0, len(lines), BATCH_LINES):
        sh(*(["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]),
           stdin="\n".join(lines[start:start + BATCH_LINES]) + "\n")


def scratch_subnet() -> ipaddress.IPv4Network:
    """A random 10.2XX.Y.0/24 for this run's node addresses (never the lab's 172.20.20.0/24)."""
    return ipaddress.IPv4Network(f"10.{random.randrange(200, 250)}.{random.randrange(1, 255)}.0/24")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def descendants(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo:
            kids = children(todo.pop())
            out += kids
            todo += kids
        return out

    def rss(self) -> float:
        return rss_mib(self.pid)


@dataclass
class Node:
    name: str
    netns: str
    address: ipaddress.IPv4Interface
    run_dir: Path
    port: str                    # the host-side end of its veth, on the bridge
    procs: dict[str, Proc] = field(default_factory=dict)

    def routes(self, proto: int) -> int:
        with RouteTable(netns=self.netns) as table:
            return len(table.dump(proto=proto))


class Testbed:
    """Use as a context manager; :meth:`close` undoes everything it made."""

    def __init__(self, prefix: str = "cxb") -> None:
        self.tag = f"{prefix}{os.getpid() % 1000}{secrets.token_hex(2)}"
        self.subnet = scratch_subnet()
        self.gateway = ipaddress.IPv4Interface(f"{self.subnet[1]}/{self.subnet.prefixlen}")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.bridge = f"{self.tag}br"
        self.nodes: dict[str, Node] = {}
        self._namespaces: list[str] = []
        self._procs: list[Proc] = []
        self._bridge_made = False
        self.api: kubernetes.client.ApiClient | None = None
        self.kubeconfig: Path | None = None
        self.control_plane: cluster.ControlPlane | None = None

    def __enter__(self) -> "Testbed":
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_made = True
        sh("ip", "addr", "add", str(self.gateway), "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- namespaces ----------------------------------------------------------------------

    def netns(self, short: str) -> str:
        name = f"{self.tag}{short}"
        sh("ip", "netns", "add", name)
        self._namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def add_node(self, name: str) -> Node:
        index = len(self.nodes) + 2
        netns = self.netns(f"n{index}")
        address = ipaddress.IPv4Interface(f"{self.subnet[index]}/{self.subnet.prefixlen}")
        port = f"{self.tag}p{index}"
        ip_batch([f"link add {port} type veth peer name eth0 netns {netns}",
                  f"link set {port} master {self.bridge} up"])
        ip_batch([f"addr add {address} dev eth0", "link set eth0 up",
                  f"route add default via {self.gateway.ip}"], netns)
        sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
           "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        node = Node(name, netns, address, self.workdir / name, port)
        node.run_dir.mkdir(parents=True, exist_ok=True)
        self.nodes[name] = node
        return node

    def cut(self, node: Node) -> None:
        """Take the node off the network without telling anyone (its bridge port goes down)."""
        sh("ip", "link", "set", node.port, "down")

    # --- processes -----------------------------------------------------------------------

    def spawn(self, name: str, argv: Sequence[str], netns: str | None = None,
              env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
        with open(log, "ab") as out:
            popen = subprocess.Popen(full, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        proc = Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        """Stop ``proc`` (and the children it leaves behind) by PID."""
        kids = proc.descendants()
        if proc.alive():
            proc.popen.send_signal(sig)
            try:
                proc.popen.wait(wait)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- Kubernetes API ------------------------------------------------------------------

    def start_api(self) -> kubernetes.client.ApiClient:
        """Start the control plane on the bridge's address, with Calyx's CRDs installed."""
        self.control_plane = cluster.start(self.workdir / "control-plane", address=str(self.gateway.ip))
        self.kubeconfig = self.control_plane.admin_kubeconfig
        manifests.install_crds(str(self.kubeconfig), REPO / "charts" / "calyx" / "crds")
        self.api = kube_client.load(str(self.kubeconfig))
        return self.api

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    def create_node(self, node: Node, pod_cidrs: Sequence[str] = (), annotations: dict[str, str] | None = None,
                    labels: dict[str, str] | None = None) -> None:
        meta: dict[str, Any] = {"name": node.name, "labels": {"kubernetes.io/hostname": node.name, **(labels or {})},
                                "annotations": {"calyx.dev/ipv4-address": str(node.address), **(annotations or {})}}
        self.core.create_node({"metadata": meta, "spec": {"podCIDRs": list(pod_cidrs)}})
        self.core.patch_node_status(node.name, {"status": {"addresses": [
            {"type": "InternalIP", "address": str(node.address.ip)}]}})

    def put(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        """Create or replace a cluster-scoped calyx.dev/v1 object."""
        kind = {"ippools": "IPPool", "bgpconfigurations": "BGPConfiguration", "bgppeers": "BGPPeer",
                "ipamblocks": "IPAMBlock"}[plural]
        body: dict[str, Any] = {"apiVersion": "calyx.dev/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
        try:
            current = self.custom.get_cluster_custom_object("calyx.dev", "v1", plural, name)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
            self.custom.create_cluster_custom_object("calyx.dev", "v1", plural, body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.custom.replace_cluster_custom_object("calyx.dev", "v1", plural, name, body)

    # --- daemons -------------------------------------------------------------------------

    def daemon_env(self, node: Node, **extra: str) -> dict[str, str]:
        return {"NODENAME": node.name, "KUBECONFIG": str(self.kubeconfig), "CALYX_RUN_DIR": str(node.run_dir),
                "CALYX_HEALTH_HOST": str(node.address.ip), "CALYX_LOG_LEVEL": "info", **extra}

    def start_bgpd(self, node: Node, **extra: str) -> Proc:
        env = self.daemon_env(node, CALYX_BGPD_MAX_PREFIXES="0", **extra)
        proc = self.spawn(f"bgpd-{node.name}", [str(VENV_BIN / "bgpd")], node.netns, env)
        node.procs["bgpd"] = proc
        return proc

    def start_felix(self, node: Node, **extra: str) -> Proc:
        env = self.daemon_env(node, FELIX_METRICSPORT="", **extra)
        proc = self.spawn(f"felix-{node.name}", [str(VENV_BIN / "felix")], node.netns, env)
        node.procs["felix"] = proc
        return proc

    def exabgp_pids(self, node: Node) -> list[int]:
        """The ExaBGP process tree under this node's bgpd (ExaBGP and its API bridge)."""
        return node.procs["bgpd"].descendants()

    def start_bird(self, node: Node, config: str) -> Proc:
        conf = node.run_dir / "bird.conf"
        conf.write_text(config)
        sock = node.run_dir / "bird.ctl"
        proc = self.spawn(f"bird-{node.name}", ["/usr/sbin/bird", "-f", "-c", str(conf), "-s", str(sock)], node.netns)
        node.procs["bird"] = proc
        wait_until(lambda: sock.exists(), 30, what=f"BIRD control socket on {node.name}")
        return proc

    def birdc(self, node: Node, *command: str) -> str:
        return sh("birdc", "-s", str(node.run_dir / "bird.ctl"), *command)

    # --- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None
        for proc in reversed(self._procs):
            try:
                self.stop(proc, wait=10)
            except Exception as exc:  # keep tearing down the rest
                print(f"teardown: {proc.name}: {exc}", file=sys.stderr)
        self._procs.clear()
        if self.control_plane is not None:
            self.control_plane.stop()
            self.control_plane = None
        for name in reversed(self._namespaces):
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
        self._namespaces.clear()
        if self._bridge_made:
            sh("ip", "link", "del", self.bridge, check=False)
            self._bridge_made = False
        sh("rm", "-rf", str(self.workdir), check=False)


def wait_alive(procs: Iterable[Proc], seconds: float) -> None:
    """Sleep ``seconds`` in small steps, failing early when a process has exited."""
    end = time.monotonic() + seconds
    procs = list(procs)
    while time.monotonic() < end:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.tail()}")
        time.sleep(0.2)


def check_alive(procs: Iterable[Proc]) -> None:
    for p in procs:
        if not p.alive():
            raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.tail()}")


__all__ = ["Testbed", "Node", "Proc", "sh", "ip_batch", "BGP_PROTO", "BIRD_PROTO", "REPO", "check_alive", "wait_alive"]
