"""Test support: uniquely named network namespaces that are always removed, a random private
subnet per test session (never the lab's management subnet), and a node namespace that reaches
the session's Kubernetes API over a veth."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from kubernetes import client as k8s

from calyx.kube import client as kube_client
from calyxlab.controlplane.pytest_plugin import KubeAccess


def unique_prefix() -> str:
    """A namespace-name prefix no concurrent run shares: 'cx' + pid + random."""
    return f"cx{os.getpid()}{random.randrange(16**4):04x}"


def random_session_subnet() -> IPv4Network:
    """A random 10.2XX.Y.0/24 for this test session."""
    return IPv4Network(f"10.{random.randrange(200, 250)}.{random.randrange(0, 256)}.0/24")


def sh(*argv: str, netns: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


@dataclass
class Namespaces:
    """Creates namespaces under one prefix and deletes every one of them on cleanup."""

    prefix: str = field(default_factory=unique_prefix)
    created: list[str] = field(default_factory=list)

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "link", "set", "lo", "up", netns=name)
        return name

    @staticmethod
    def path(name: str) -> str:
        return f"/var/run/netns/{name}"

    def cleanup(self) -> None:
        for name in reversed(self.created):
            sh("ip", "netns", "del", name, check=False)
        self.created.clear()


PLUGIN = [sys.executable, "-m", "calyx.cni.plugin"]


class Clock:
    """A clock the test sets by hand (``clock.t = 120``), for collectors' grace periods and caches' ages."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def reap(procs: list[subprocess.Popen]) -> None:
    """Kill (by PID) plugin processes still running when a test ends early, and wait for them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@dataclass
class PluginRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


@dataclass
class Cluster:
    """A node namespace that reaches the Kubernetes API over a veth, as a kubelet's node does:
    the API listens on every host address, so the plugin dials the veth's root side."""

    subnet: IPv4Network
    workdir: Path
    kube: KubeAccess
    node: str = "node-a"
    namespaces: Namespaces = field(default_factory=Namespaces)
    node_ns: str = ""
    kubeconfig: str = ""
    api: k8s.ApiClient | None = None

    def start(self) -> "Cluster":
        self.node_ns = self.namespaces.add("node")
        root_if, node_if = f"cxr{os.getpid() % 100000}{random.randrange(16**3):03x}", "uplink"
        root_ip, node_ip = self.subnet[1], self.subnet[2]
        sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", node_if, "netns", self.node_ns)
        sh("ip", "addr", "add", f"{root_ip}/{self.subnet.prefixlen}", "dev", root_if)
        sh("ip", "link", "set", root_if, "up")
        sh("ip", "addr", "add", f"{node_ip}/{self.subnet.prefixlen}", "dev", node_if, netns=self.node_ns)
        sh("ip", "link", "set", node_if, "up", netns=self.node_ns)
        self.kubeconfig = str(self.kube.kubeconfig_at(str(root_ip), "cni.kubeconfig"))
        self.api = kube_client.load(self.kubeconfig)
        self.create_node(self.node)
        return self

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        self.namespaces.cleanup()   # the veth goes with the node namespace; the kube fixture
                                    # deletes the API objects

    # --- API objects ---
    def create_node(self, name: str, pod_cidrs: list[str] | None = None, labels: dict | None = None) -> None:
        body: dict = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}}
        if pod_cidrs:
            body["spec"] = {"podCIDR": pod_cidrs[0], "podCIDRs": pod_cidrs}
        k8s.CoreV1Api(self.api).create_node(body)

    def create_pool(self, name: str, cidr: str, block_size: int = 26, **spec) -> None:
        k8s.CustomObjectsApi(self.api).create_cluster_custom_object(
            "calyx.dev", "v1", "ippools", {"apiVersion": "calyx.dev/v1", "kind": "IPPool",
                                           "metadata": {"name": name},
                                           "spec": {"cidr": cidr, "blockSize": block_size, **spec}})

    def blocks(self) -> list[dict]:
        return k8s.CustomObjectsApi(self.api).list_cluster_custom_object("calyx.dev", "v1", "ipamblocks")["items"]

    # --- the plugin, run in the node namespace like the container runtime would ---
    def netconf(self, **overrides) -> dict:
        conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calyx",
                "kubeconfig": self.kubeconfig, "nodename": self.node,
                "run_dir": str(self.workdir / "run")}
        conf.update(overrides)
        return {k: v for k, v in conf.items() if v is not None}

    def env(self, command: str, container_id: str, netns: str = "", pod: tuple[str, str] | None = None,
            ifname: str = "eth0") -> dict[str, str]:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname, "CNI_PATH": "/opt/cni/bin"}
        if pod:
            env["CNI_ARGS"] = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod[0]};K8S_POD_NAME={pod[1]}"
        return env

    def plugin(self, env: dict[str, str], conf: dict | str | None = None) -> PluginRun:
        res = subprocess.run(["ip", "netns", "exec", self.node_ns, *PLUGIN], input=self._stdin(conf),
                             capture_output=True, text=True, env=self._environ(env), timeout=120)
        return PluginRun(res.returncode, res.stdout, res.stderr)

    def spawn_plugin(self, env: dict[str, str], conf: dict | str | None = None, *,
                     feed: bool = True) -> subprocess.Popen:
        """The plugin started in the node namespace and left running (``ip netns exec`` execs it,
        so the process's PID is the plugin's own: it can be killed by PID). With ``feed`` its
        configuration is written and stdin closed at once; otherwise the caller does it (to start
        many at the same instant). Whoever spawns it reaps it (:func:`reap`)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.node_ns, *PLUGIN], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._environ(env))
        if feed:
            proc.stdin.write(self._stdin(conf))
            proc.stdin.close()
        return proc

    def _stdin(self, conf: dict | str | None) -> str:
        return conf if isinstance(conf, str) else json.dumps(conf if conf is not None else self.netconf())

    @staticmethod
    def _environ(env: dict[str, str]) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") and k not in ("KUBECONFIG", "NODENAME")}
        return {**clean, **env}

    def allocations(self) -> list[dict]:
        """The node's IPAM records (``state.json``'s allocations), read as an operator would."""
        path = self.workdir / "run" / "ipam" / "state.json"
        return json.loads(path.read_text())["allocations"] if path.exists() else []

    def add_pod(self, namespace: str, name: str, container_id: str | None = None) -> tuple[str, PluginRun]:
        pod_ns = self.namespaces.add(f"p{random.randrange(16**6):06x}")
        cid = container_id or f"c{random.randrange(16**12):012x}"
        run = self.plugin(self.env("ADD", cid, Namespaces.path(pod_ns), (namespace, name)))
        return pod_ns, run
