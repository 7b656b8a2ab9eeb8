"""The reliability suite's IPAM cases: what a node's addresses look like after the CNI plugin is
SIGKILLed in the middle of ADD or DEL (one at a time, and among hundreds of concurrent ADDs),
after the runtime retries, deletes and forgets sandboxes and the leak collector has run, and
after the Kubernetes API stops answering in the middle of an ADD.

Each case drives the real plugin (a process in a node namespace, as the container runtime runs
it) against the session's real kube-apiserver, checks the node's IPAM records, the pods' network
namespaces and the API's blocks, and reports to the fault table (``fault_record``).
"""
from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from kubernetes import client as k8s

from calyx import naming
from calyx.cni import blocks, gc, ipam, leakgc
from calyx.kube import client as kube_client
from calyxlab.controlplane import cluster as controlplane
from calyxlab.controlplane import pki
from cnitest_support import Clock, Namespaces, PluginRun, reap, sh
from podpings import NetnsPingMatrix, PodEnd

pytestmark = [pytest.mark.fault, pytest.mark.lab]

POD_NAMESPACE = "faults"
SEED = random.randrange(2**32)        # printed by every case, so a failing run can be replayed


# --- what the plugin left behind ------------------------------------------------------------

def pod_addresses(netns: str, ifname: str = "eth0") -> list[str]:
    """The IPv4 addresses on the pod's interface (none when it does not exist)."""
    out = sh("ip", "-4", "-o", "addr", "show", "dev", ifname, netns=netns, check=False).stdout
    return [line.split()[3] for line in out.splitlines()]


def host_link_exists(cluster, pod: str) -> bool:
    name = naming.cali_interface_name(POD_NAMESPACE, pod)
    return sh("ip", "link", "show", "dev", name, netns=cluster.node_ns, check=False).returncode == 0


def run_and_kill(cluster, env: dict[str, str], delay: float, procs: list[subprocess.Popen]) -> bool:
    """Start the plugin, SIGKILL it (by PID) ``delay`` seconds later; True if it was still running."""
    proc = cluster.spawn_plugin(env)
    procs.append(proc)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    running = proc.poll() is None
    if running:
        proc.send_signal(signal.SIGKILL)
    proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=60)
    return running


def timed(cluster, env: dict[str, str], conf: dict | None = None) -> tuple[PluginRun, float]:
    started = time.monotonic()
    run = cluster.plugin(env, conf)
    return run, time.monotonic() - started


def add_pod_object(cluster, name: str) -> None:
    """The Pod in the API, bound to the cluster's node (what the kubelet runs sandboxes for)."""
    core = k8s.CoreV1Api(cluster.api)
    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": POD_NAMESPACE}})
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise
    core.create_namespaced_pod(POD_NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": POD_NAMESPACE},
        "spec": {"nodeName": cluster.node, "containers": [{"name": "c", "image": "pause"}]}})


def assert_one_address_per_container_and_none_twice(allocations: list[dict]) -> None:
    addresses = Counter(a["address"] for a in allocations)
    assert [a for a, n in addresses.items() if n > 1] == [], "an address is assigned twice"
    containers = Counter((a["containerID"], a["ifname"]) for a in allocations)
    assert [c for c, n in containers.items() if n > 1] == [], "a container holds two addresses"
    pods = Counter(a["pod"] for a in allocations)
    assert [p for p, n in pods.items() if n > 1] == [], "a pod holds two addresses"


class PodsPinging:
    """Pods made before the fault (uninterrupted ADDs, their Pods in the API) pinging each other
    every 50 ms, every ordered pair, through the node's routes for as long as the fault lasts
    (a context manager): an address handed out twice, or a route or interface a crashed plugin
    took away, costs them packets. Their addresses must be theirs, unchanged, afterwards."""

    def __init__(self, cluster, count: int = 3) -> None:
        self.cluster = cluster
        self.pods: dict[str, PodEnd] = {}      # by container ID
        sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", netns=cluster.node_ns)
        for i in range(count):
            name = f"resident-{i}"
            add_pod_object(cluster, name)
            netns, run = cluster.add_pod(POD_NAMESPACE, name, container_id=name)
            assert run.returncode == 0, run.stdout + run.stderr
            self.pods[name] = PodEnd(netns, run.json["ips"][0]["address"].split("/")[0])
        self._pings = NetnsPingMatrix(self.pods, cluster.workdir)

    @property
    def containers(self) -> set[str]:
        return set(self.pods)

    def others(self, allocations: list[dict]) -> list[dict]:
        """``allocations`` without the pinging pods'."""
        return [a for a in allocations if a["containerID"] not in self.pods]

    def __enter__(self) -> "PodsPinging":
        self._pings.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pings.__exit__(*exc)
        if exc[0] is None:
            mine = {a["containerID"]: a["address"] for a in self.cluster.allocations() if a["containerID"] in self.pods}
            assert mine == {c: pod.ip for c, pod in self.pods.items()}, "a resident pod's address changed"
            for pod in self.pods.values():
                assert pod_addresses(pod.netns) == [f"{pod.ip}/32"]

    def record(self, case) -> None:
        self._pings.record(case)


# --- case 1: the plugin killed in the middle of ADD, and of DEL ------------------------------

@pytest.mark.timeout(900)
@pytest.mark.parametrize("rounds", [pytest.param(20, id="20"), pytest.param(80, id="80", marks=pytest.mark.fault_full)])
def test_plugin_killed_mid_add_and_mid_del_leaves_one_address_per_pod(cluster, fault_record, rounds):
    rng = random.Random(SEED)
    print(f"\nseed {SEED}")
    # /29 blocks (7 pod addresses): kills land in block claims through the API as well.
    cluster.create_pool("pool-kill", "10.96.0.0/24", block_size=29)
    residents = PodsPinging(cluster)
    procs: list[subprocess.Popen] = []
    live: dict[str, tuple[str, str, str]] = {}        # container -> (pod, netns, address)
    kills = Counter()
    try:
        with fault_record.case(f"calyx-cni SIGKILLed mid-ADD ({rounds}x) and mid-DEL ({rounds // 2}x), "
                               "random instants", "the retried ADD gives the pod one address, the retried DEL "
                               "releases it; no address handed out twice; running pods lose no ping") as case:
            with residents:
                started = time.monotonic()
                # How long an uninterrupted ADD (from the cache: the second one) and DEL take here and
                # now: the kills are spread over that.
                probe_ns = cluster.namespaces.add("probe")
                for container in ("probe-0", "probe"):
                    add_run, add_s = timed(cluster, cluster.env("ADD", container, Namespaces.path(probe_ns),
                                                                (POD_NAMESPACE, "probe")))
                    assert add_run.returncode == 0, add_run.stdout + add_run.stderr
                assert cluster.plugin(cluster.env("DEL", "probe-0", "", (POD_NAMESPACE, "probe"))).returncode == 0
                del_run, del_s = timed(cluster, cluster.env("DEL", "probe", Namespaces.path(probe_ns),
                                                            (POD_NAMESPACE, "probe")))
                assert del_run.returncode == 0, del_run.stdout + del_run.stderr
                recoveries = []
                for i in range(rounds):
                    pod, cid = f"kill-{i}", f"kill-{i}-{rng.randrange(16**8):08x}"
                    netns = cluster.namespaces.add(f"k{i}")
                    env = cluster.env("ADD", cid, Namespaces.path(netns), (POD_NAMESPACE, pod))
                    kills["add"] += run_and_kill(cluster, env, rng.uniform(0.0, add_s * 1.2), procs)
                    retry, took = timed(cluster, env)
                    recoveries.append(took)
                    assert retry.returncode == 0, retry.stdout + retry.stderr
                    address = retry.json["ips"][0]["address"].split("/")[0]
                    again = cluster.plugin(env)                  # and once more: idempotent
                    assert again.returncode == 0 and again.json["ips"] == retry.json["ips"]
                    mine = [a for a in cluster.allocations() if a["pod"] == pod]
                    assert [(a["containerID"], a["address"]) for a in mine] == [(cid, address)]
                    assert pod_addresses(netns) == [f"{address}/32"]
                    live[cid] = (pod, netns, address)
                    if i % 2:
                        victim = rng.choice(sorted(live))
                        victim_pod, victim_ns, _ = live.pop(victim)
                        env = cluster.env("DEL", victim, Namespaces.path(victim_ns), (POD_NAMESPACE, victim_pod))
                        kills["del"] += run_and_kill(cluster, env, rng.uniform(0.0, del_s * 1.2), procs)
                        retry, took = timed(cluster, env)
                        recoveries.append(took)
                        assert retry.returncode == 0, retry.stdout + retry.stderr
                        assert [a for a in cluster.allocations() if a["containerID"] == victim] == []
                        assert not host_link_exists(cluster, victim_pod)
                        assert pod_addresses(victim_ns) == []
                allocations = cluster.allocations()
                assert_one_address_per_container_and_none_twice(allocations)
                assert {a["containerID"]: a["address"] for a in residents.others(allocations)} == \
                    {c: v[2] for c, v in live.items()}
                for _, netns, address in live.values():
                    assert pod_addresses(netns) == [f"{address}/32"]
                routes = sh("ip", "route", "show", "proto", "80", netns=cluster.node_ns).stdout.split("\n")
                assert sorted(r.split()[0] for r in routes if r) == \
                    sorted([v[2] for v in live.values()] + [pod.ip for pod in residents.pods.values()])
                leftovers = sorted(p.name for p in (cluster.workdir / "run" / "ipam").iterdir()
                                   if p.name not in ("state.json", "lock"))
                assert leftovers == [], "files left behind in the IPAM directory"
                case.recovery_s = max(recoveries)
                case.detail = (f"{kills['add']} of {rounds} ADDs and {kills['del']} of {rounds // 2} DELs "
                               f"killed before finishing, {len(live)} pods left, 0 duplicates, 0 extra addresses; "
                               f"{time.monotonic() - started:.0f} s")
            residents.record(case)
    finally:
        reap(procs)


# --- case 2: a crowd of ADDs, some killed; retries, DELs, forgotten sandboxes, collection -----

def kill_some(procs: list[subprocess.Popen], victims: dict[int, float]) -> set[int]:
    """SIGKILL (by PID) each victim at its instant (seconds from now) if still running; returns
    those actually killed before they finished."""
    started, killed = time.monotonic(), set()
    for i, at in sorted(victims.items(), key=lambda kv: kv[1]):
        time.sleep(max(0.0, started + at - time.monotonic()))
        if procs[i].poll() is None:
            procs[i].send_signal(signal.SIGKILL)
            killed.add(i)
    return killed


@pytest.mark.timeout(900)
@pytest.mark.parametrize("pods", [pytest.param(40, id="40"), pytest.param(200, id="200", marks=pytest.mark.fault_full)])
def test_concurrent_adds_with_kills_then_retries_dels_and_leak_collection(cluster, fault_record, pods):
    rng = random.Random(SEED)
    print(f"\nseed {SEED}")
    cluster.create_pool("pool-crowd", "10.98.0.0/22", block_size=26)
    residents = PodsPinging(cluster)
    names = [f"crowd-{i}" for i in range(pods)]
    for name in names:
        add_pod_object(cluster, name)
    netnss = [cluster.namespaces.add(f"c{i}") for i in range(pods)]
    envs = [cluster.env("ADD", f"cid-{i}", Namespaces.path(ns), (POD_NAMESPACE, names[i])) for i, ns in enumerate(netnss)]
    procs: list[subprocess.Popen] = []
    try:
        with fault_record.case(f"{pods} concurrent ADDs on one node, a quarter SIGKILLed at random instants; "
                               "then retries, DELs, sandboxes forgotten without DEL, leak collection",
                               "no address handed out twice; after collection every allocated address "
                               "belongs to a live pod; running pods lose no ping") as case:
            with residents:
                started = time.monotonic()
                conf = json.dumps(cluster.netconf())
                procs += [cluster.spawn_plugin(env, feed=False) for env in envs]
                for proc in procs:
                    proc.stdin.write(conf)
                    proc.stdin.close()
                # 200 ADDs take about a minute on the 2-core test machine: the kills land all along it.
                victims = {i: rng.uniform(0.0, pods * 0.15) for i in rng.sample(range(pods), k=pods // 4)}
                killed = kill_some(procs, victims)
                outcome: dict[int, str] = {}
                for i, proc in enumerate(procs):
                    out, err = proc.stdout.read(), proc.stderr.read()
                    proc.wait(timeout=600)
                    if i in killed:
                        assert proc.returncode == -signal.SIGKILL, out + err
                    else:
                        assert proc.returncode == 0, out + err
                        outcome[i] = json.loads(out)["ips"][0]["address"].split("/")[0]
                crowd_s = time.monotonic() - started

                # The kubelet's part: retry a third of the killed ones, DEL a third and delete their
                # Pods; the last third's sandboxes are lost without a DEL (their Pods deleted).
                # Those killed after the IPAM step hold an address: half of them are among the
                # forgotten, so the collector has real leaks to find.
                held_by = {a["containerID"] for a in cluster.allocations()}
                allocated = [i for i in sorted(killed) if f"cid-{i}" in held_by]
                others = [i for i in sorted(killed) if f"cid-{i}" not in held_by]
                rng.shuffle(allocated)
                rng.shuffle(others)
                order = allocated[1::2] + others + allocated[0::2]
                forgotten = order[-((len(order) + 2) // 3):] if order else []
                rest = order[:len(order) - len(forgotten)]
                retried, deleted = rest[0::2], rest[1::2]
                retries = [cluster.spawn_plugin(envs[i]) for i in retried]
                procs += retries
                for i, proc in zip(retried, retries):
                    out, err = proc.stdout.read(), proc.stderr.read()
                    assert proc.wait(timeout=300) == 0, out + err
                    outcome[i] = json.loads(out)["ips"][0]["address"].split("/")[0]
                core = k8s.CoreV1Api(cluster.api)
                for i in deleted:
                    run = cluster.plugin(cluster.env("DEL", f"cid-{i}", Namespaces.path(netnss[i]), (POD_NAMESPACE, names[i])))
                    assert run.returncode == 0, run.stdout + run.stderr
                for i in deleted + forgotten:
                    core.delete_namespaced_pod(names[i], POD_NAMESPACE, grace_period_seconds=0)
                for i in forgotten:
                    sh("ip", "netns", "del", netnss[i])
                    cluster.namespaces.created.remove(netnss[i])

                live = {f"cid-{i}": address for i, address in outcome.items()}
                assert len(set(live.values())) == len(live), "an address handed out twice"
                before = cluster.allocations()
                assert_one_address_per_container_and_none_twice(before)
                leaked = {a["containerID"] for a in before} - set(live) - residents.containers
                assert leaked == {f"cid-{i}" for i in forgotten if i in allocated}

                # The collectors as felix runs them: blocks of live nodes stay; leaked addresses go
                # once they have been leaked for the grace period, the others never.
                api = blocks.Api(kube_client.load(cluster.kubeconfig))
                assert gc.GarbageCollector(api).pass_once() == []
                clock = Clock()
                collector = leakgc.LeakCollector(api, cluster.node, ipam.AddressStore(str(cluster.workdir / "run")),
                                                 leak_grace=60, clock=clock)
                assert collector.pass_once() == []
                clock.t = 60
                freed = collector.pass_once()
                assert {a.container_id for a in freed} == leaked
                assert not collector.pending()
                after = cluster.allocations()
                assert {a["containerID"]: a["address"] for a in residents.others(after)} == live
                for i, address in outcome.items():
                    assert pod_addresses(netnss[i]) == [f"{address}/32"]
                case.recovery_s = time.monotonic() - started - crowd_s
                case.detail = (f"{pods} ADDs in {crowd_s:.0f} s, {len(killed)} killed: {len(retried)} retried, "
                               f"{len(deleted)} DELed, {len(forgotten)} forgotten ({len(leaked)} of them held an "
                               f"address: leaked, all released by the collector); 0 duplicates, 0 leaked after GC")
            residents.record(case)
    finally:
        reap(procs)


# --- case 3: the API stops answering in the middle of an ADD ---------------------------------

@dataclass
class ApiRelay:
    """A TCP relay between the node and kube-apiserver that the test can freeze: while frozen
    it accepts connections and holds every byte (a hung or partitioned API server, as the
    plugin sees it: connections open, nothing answers); thawing drops the connections it held.
    ``freeze_at`` freezes it as the n-th chunk towards the API server arrives (counted in
    ``chunks``: TLS handshake messages and requests), so a freeze lands in a chosen call. The
    kubeconfig's ``tls-server-name`` lets the plugin verify the API server through it."""

    upstream: tuple[str, int]
    listen_host: str
    frozen: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    _sockets: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: socket.socket | None = None
    chunks: int = 0
    freeze_at: int | None = None

    def start(self) -> "ApiRelay":
        self._server = socket.create_server((self.listen_host, 0))
        threading.Thread(target=self._accept, name="api-relay", daemon=True).start()
        return self

    @property
    def port(self) -> int:
        return self._server.getsockname()[1]

    def thaw(self) -> None:
        """Forward again; the connections held while frozen are closed (their clients gave up)."""
        with self._lock:
            held, self._sockets = self._sockets, []
        self.frozen.clear()
        for s in held:
            s.close()

    def stop(self) -> None:
        self.stopping.set()
        self.frozen.clear()
        self._server.close()
        self.thaw()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.frozen.is_set():
                with self._lock:
                    self._sockets.append(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b, towards_api in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, towards_api), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, towards_api: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if data and towards_api:
                    with self._lock:
                        self.chunks += 1
                        if self.freeze_at is not None and self.chunks >= self.freeze_at:
                            self.frozen.set()
                if not data or self.frozen.is_set():
                    break            # frozen: hold it (the sockets stay open until thawed)
                dst.sendall(data)
        except OSError:
            return
        if not self.frozen.is_set():
            for s in (src, dst):
                s.close()


def relayed_kubeconfig(cluster, relay: ApiRelay) -> str:
    cp = cluster.kube.control_plane
    url = f"https://{relay.listen_host}:{relay.port}"
    return str(controlplane.Credentials(cp.pki, url).kubeconfig_for(pki.ADMIN, cluster.workdir / "relayed.kubeconfig"))


def assert_no_trace_of(cluster, container: str, pod: str, netns: str) -> None:
    """A failed ADD left nothing: no record, no host veth, nothing in the pod's namespace."""
    assert [a for a in cluster.allocations() if a["containerID"] == container] == []
    assert not host_link_exists(cluster, pod)
    assert pod_addresses(netns) == []


@pytest.mark.timeout(900)
@pytest.mark.parametrize("freezes", [pytest.param(2, id="2"), pytest.param(8, id="8", marks=pytest.mark.fault_full)])
def test_api_unreachable_mid_add_fails_try_again_later_and_the_retry_succeeds(cluster, fault_record, freezes):
    rng = random.Random(SEED)
    print(f"\nseed {SEED}")
    root_address = str(cluster.subnet[1])          # where the node namespace reaches the host
    relay = ApiRelay(("127.0.0.1", cluster.kube.port), root_address).start()
    # Every ADD asks the API (cache TTL 0), and /29 blocks make it claim a block every 7th.
    conf = cluster.netconf(kubeconfig=relayed_kubeconfig(cluster, relay), ipam_cache_ttl=0)
    cluster.create_pool("pool-api", "10.97.0.0/24", block_size=29)
    residents = PodsPinging(cluster)
    results = []
    procs: list[subprocess.Popen] = []
    try:
        with fault_record.case(f"API unreachable mid-ADD: relay frozen ({freezes}x at random instants), "
                               "kube-apiserver stopped", "ADD fails with 11 (try again later) leaving no "
                               "allocation; the retry succeeds; running pods lose no ping") as case:
            with residents:
                # How many chunks (TLS handshake, requests) one ADD sends the API once its node has a
                # block: the freezes land among them.
                for warm in ("warm-0", "warm"):
                    netns = cluster.namespaces.add(warm)
                    before = relay.chunks
                    run = cluster.plugin(cluster.env("ADD", warm, Namespaces.path(netns), (POD_NAMESPACE, warm)), conf)
                    assert run.returncode == 0, run.stdout + run.stderr
                add_chunks = relay.chunks - before
                pods = []
                for i in range(freezes + 1):
                    pod, cid = f"api-{i}", f"api-{i}"
                    netns = cluster.namespaces.add(f"a{i}")
                    env = cluster.env("ADD", cid, Namespaces.path(netns), (POD_NAMESPACE, pod))
                    if i < freezes:
                        # Frozen as one of its chunks arrives: in the handshake, or in one of its calls
                        # (reading the Node, the pools, the blocks, claiming a block).
                        at = rng.randint(1, add_chunks)
                        what = f"relay frozen at chunk {at}"
                        relay.freeze_at = relay.chunks + at
                        proc = cluster.spawn_plugin(env, conf)
                        procs.append(proc)
                    else:
                        what = "apiserver stopped"
                        cluster.kube.stop_api()
                        proc = cluster.spawn_plugin(env, conf)
                        procs.append(proc)
                    cut_at = time.monotonic()
                    out, err = proc.stdout.read(), proc.stderr.read()
                    proc.wait(timeout=120)
                    failed_after = time.monotonic() - cut_at
                    if proc.returncode == 0:
                        results.append(f"{what}: done before the cut")   # the API answered in time
                    else:
                        error = json.loads(out)
                        assert error["code"] == 11, out + err
                        assert_no_trace_of(cluster, cid, pod, netns)
                        results.append(f"{what}: 11 after {failed_after:.1f} s")
                    if i < freezes:
                        relay.freeze_at = None
                        relay.thaw()
                    else:
                        cluster.kube.restart_api()
                    retry, took = timed(cluster, env, conf)
                    assert retry.returncode == 0, retry.stdout + retry.stderr
                    pods.append((cid, retry.json["ips"][0]["address"].split("/")[0], netns))
                    case.recovery_s = max(case.recovery_s or 0.0, failed_after + took)
                allocations = cluster.allocations()
                assert_one_address_per_container_and_none_twice(allocations)
                for cid, address, netns in pods:
                    assert [a["address"] for a in allocations if a["containerID"] == cid] == [address]
                    assert pod_addresses(netns) == [f"{address}/32"]
                assert any(r.startswith("relay frozen") and ": 11 after" in r for r in results), "no freeze landed in an ADD"
                affinities = {b["spec"]["affinity"] for b in cluster.blocks()}
                assert affinities == {f"host:{cluster.node}"}
                case.detail = f"one ADD sends the API {add_chunks} chunks; " + "; ".join(results)
            residents.record(case)
    finally:
        reap(procs)
        relay.stop()

