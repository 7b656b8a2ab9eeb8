"""The benchmarks' test bed on the host kernel: node namespaces on a bridge in the root
namespace, a real Kubernetes control plane (etcd, kube-apiserver, controller-manager,
scheduler; :mod:`calyxlab.controlplane`) listening on the bridge's address, felix/bgpd/BIRD
processes inside the node namespaces. Everything is named with a per-run tag and removed on
exit (processes by PID, then namespaces and the bridge), even when a benchmark fails.

Pod blocks reach nodes as in a cluster that runs Calyx IPAM: one ``IPAMBlock`` per block with
``spec.affinity: host:<node>``, named and built by :mod:`calyx.cni.blocks`. A real API server
has no bulk create, so :meth:`Testbed.write_blocks` creates them concurrently on a bounded set
of threads (each with its own ``ApiClient``) and records when the first create was sent and
the last one answered, so that benchmarks can report the API's share of a timing.

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import kubernetes.client

from bench.common import REPO, children, rss_mib, wait_until
from calyx.cni import blocks as cni_blocks
from calyx.kube import client as kube_client
from calyx.netlink import RouteTable
from calyxlab import manifests
from calyxlab.controlplane import cluster

VENV_BIN = Path(sys.executable).parent
BGP_PROTO = 186
BIRD_PROTO = 12
POOL_NAME = "bench"   # the IPPool every benchmark cluster carves its blocks from
WRITERS = 8           # concurrent IPAMBlock creates (threads, one ApiClient and connection each)


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
        """How many routes of ``proto`` the node's main table holds; -1 when the namespace could
        not be entered in time (pyroute2 forks a helper to open the socket, which a machine busy
        starting thirty speakers can delay past its timeout): the caller polls again."""
        try:
            with RouteTable(netns=self.netns) as table:
                return len(table.dump(proto=proto))
        except TimeoutError:
            return -1


class BlockWrites:
    """IPAMBlock creates in flight: ``claims`` (node, CIDR) shared out to at most ``writers``
    threads, each creating one object at a time through its own ``ApiClient``
    (:func:`calyx.kube.client.clone`), as concurrent CNI plugins would.

    Each thread first opens its connection (TLS handshake, one ``GET /version``) and waits for
    the others, so that no object is written before every writer is ready and connection set-up
    is not counted as writing. ``started`` is the monotonic time the first create was sent,
    ``finished`` the time the last one was answered; :meth:`join` waits for all of them and
    raises the first failure.
    """

    def __init__(self, api: kubernetes.client.ApiClient, claims: Iterable[tuple[str, str]],
                 pool: str = POOL_NAME, writers: int = WRITERS) -> None:
        self._bodies = [cni_blocks.block_object(ipaddress.IPv4Network(cidr), node, pool) for node, cidr in claims]
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self._answered = 0
        count = max(1, min(writers, len(self._bodies)))
        # one client (own connection pool) per thread, as calyx.kube.client advises
        self._clients = [kube_client.clone(api) for _ in range(count)]
        self._ready = threading.Barrier(count)
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True, name=f"ipamblock-writer-{i}")
                         for i, c in enumerate(self._clients)]

    @property
    def count(self) -> int:
        return len(self._bodies)

    @property
    def seconds(self) -> float:
        """From the first create sent to the last one answered (0 for no blocks)."""
        if self.started is None or self.finished is None:
            raise RuntimeError("IPAMBlock writes not finished (call join first)")
        return self.finished - self.started

    def start(self) -> "BlockWrites":
        if not self._bodies:
            self.started = self.finished = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def _take(self) -> dict[str, Any] | None:
        with self._lock:
            if self._stop.is_set() or self._next >= len(self._bodies):
                return None
            body = self._bodies[self._next]
            self._next += 1
            if self.started is None:
                self.started = time.monotonic()
            return body

    def _fail(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                detail = f": {str(exc.body)[:300]}" if isinstance(exc, kubernetes.client.ApiException) else ""
                self.error = RuntimeError(f"{what}: {kube_client.describe_error(exc)}{detail}")
                self._stop.set()
        self._ready.abort()

    def _run(self, client: kubernetes.client.ApiClient) -> None:
        api = cni_blocks.Api(client)
        try:
            kubernetes.client.VersionApi(client).get_code()
            self._ready.wait(120)
        except threading.BrokenBarrierError:  # cancelled, another writer failed, or one not ready in time
            with self._lock:
                if self.error is None and not self._stop.is_set():
                    self.error = RuntimeError("IPAMBlock writers: not all connected to the API server within 120 s")
                    self._stop.set()
            return
        except BaseException as exc:  # reported by join()/check()
            self._fail("IPAMBlock writer connecting to the API server", exc)
            return
        while (body := self._take()) is not None:
            try:
                api.create_block(body)
            except BaseException as exc:  # reported by join()/check(); the others stop taking work
                self._fail(f"creating IPAMBlock {body['metadata']['name']} ({body['spec']['affinity']})", exc)
                return
            answered = time.monotonic()
            with self._lock:
                self.finished = answered if self.finished is None else max(self.finished, answered)
                self._answered += 1

    def check(self) -> None:
        """Raise the first failed create, if any (for use inside a polling predicate)."""
        if self.error is not None:
            raise self.error

    def done(self) -> bool:
        """Every create answered (raises the first failure instead). The route for the last
        block cannot be installed before that block's create is committed, just before it is
        answered, so a benchmark polls kernels only once this is true: its polling (Python, in
        this process) would otherwise compete with the writer threads and slow the writes."""
        self.check()
        return self._answered == len(self._bodies)

    def cancel(self) -> None:
        """Send no further creates (those in flight still finish)."""
        self._stop.set()
        self._ready.abort()

    def join(self, timeout: float | None = None) -> "BlockWrites":
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if not alive:
            for client in self._clients:
                client.close()
            self._clients = []
        self.check()
        if alive:
            raise TimeoutError(f"IPAMBlock writers still busy after {timeout:.0f}s: {', '.join(alive)}")
        return self


class Testbed:
    """Use as a context manager; :meth:`close` undoes everything it made."""

    def __init__(self, prefix: str = "cxb") -> None:
        self.tag = f"{prefix}{os.getpid() % 1000}{secrets.token_hex(2)}"
        self.subnet = scratch_subnet()
        self.gateway = ipaddress.IPv4Interface(f"{self.subnet[1]}/{self.subnet.prefixlen}")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        os.chmod(self.workdir, 0o711)     # bgpd's bfdd runs as FRR's user and must reach its directory
        self.bridge = f"{self.tag}br"
        self.nodes: dict[str, Node] = {}
        self._namespaces: list[str] = []
        self._procs: list[Proc] = []
        self._bridge_made = False
        self.api: kubernetes.client.ApiClient | None = None
        self.kubeconfig: Path | None = None
        self.control_plane: cluster.ControlPlane | None = None
        self._writes: list[BlockWrites] = []

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
        """Create the Node (with its InternalIP). ``pod_cidrs`` (at most one IPv4 CIDR) can be
        given only here: the API server refuses any later change of ``spec.podCIDRs``, and a node
        with podCIDRs has no use for IPAMBlocks. Blocks added later go through :meth:`write_blocks`."""
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

    def write_blocks(self, claims: Iterable[tuple[str, str]], pool: str = POOL_NAME,
                     writers: int = WRITERS) -> BlockWrites:
        """Start creating one IPAMBlock per (node, CIDR) claim, concurrently; returns at once.
        Call ``join()`` on the result for its timing (and its first failure)."""
        writes = BlockWrites(self.api, claims, pool, writers)
        self._writes.append(writes)
        return writes.start()

    def create_blocks(self, claims: Iterable[tuple[str, str]], pool: str = POOL_NAME,
                      writers: int = WRITERS, timeout: float = 600.0) -> BlockWrites:
        """Create one IPAMBlock per (node, CIDR) claim, concurrently, and wait for all."""
        return self.write_blocks(claims, pool, writers).join(timeout)

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
        for writes in self._writes:        # before the API goes away: no creates left in flight
            writes.cancel()
            try:
                writes.join(60)
            except TimeoutError as exc:
                print(f"teardown: {exc}", file=sys.stderr)
            except Exception:      # a failed create: already raised to the benchmark
                pass
        self._writes.clear()
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


__all__ = ["Testbed", "BlockWrites", "Node", "Proc", "sh", "ip_batch", "BGP_PROTO", "BIRD_PROTO", "POOL_NAME",
           "WRITERS", "REPO", "check_alive", "wait_alive"]
