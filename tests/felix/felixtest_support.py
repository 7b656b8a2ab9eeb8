"""A one-node test bed for felix: a scratch namespace joined to the root namespace by a veth
pair, the session's Kubernetes API (which listens on every host address) dialled through the
veth's root side, and felix running inside the namespace as a real process. Everything is
removed on exit, even when a test fails; the ``kube`` fixture deletes the API objects."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import kubernetes.client

from calyx.kube import client as kube_client
from calyx.naming import cali_interface_name
from calyxlab.controlplane.pytest_plugin import KubeAccess
from podpings import NetnsPingMatrix, PodEnd, wire_pod

sys.path.insert(0, str(Path(__file__).parents[1] / "netlink"))
from scratch import ip, scratch_netns, unique_name  # noqa: E402

REPO = Path(__file__).parents[2]
FELIX = REPO / ".venv" / "bin" / "felix"
NODE = "node-1"
POD_CIDR = "10.244.1.0/24"


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
             detail: Callable[[], Any] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; last seen: {detail()!r}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{seen}")
        time.sleep(interval)


def pod_line(pod: str, pod_ip: str) -> str:
    """How `ip route show proto 80` lists a pod route."""
    return f"{pod_ip} dev {cali_interface_name('default', pod)} scope link"


# The fault cases' pods: two that only have a route (web-1 is deleted while felix cannot hear of
# it), and two that run (Bed.add_running_pod) and ping each other throughout.
ROUTED_PODS = {"web-1": "10.244.1.5", "web-2": "10.244.1.6"}
RUNNING_PODS = {"res-1": "10.244.1.7", "res-2": "10.244.1.8"}


def routes_once_web1_is_gone() -> set[str]:
    """felix's routes once it has heard that web-1 was deleted."""
    return {pod_line("web-2", ROUTED_PODS["web-2"]), f"blackhole {POD_CIDR}",
            *(pod_line(pod, pod_ip) for pod, pod_ip in RUNNING_PODS.items())}


@dataclass
class FelixProcess:
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@dataclass
class Bed:
    netns: str
    host_ip: str            # root side of the veth: felix dials the API here
    node_ip: str            # namespace side: the node's address, felix's health port
    kubeconfig: Path
    run_dir: Path
    api: kubernetes.client.ApiClient       # the cluster admin (the node's podCIDR is the controllers' to set)
    kubelet: kubernetes.client.ApiClient   # the node's kubelet (system:node:node-1): node and pod status
    kube: KubeAccess
    workdir: Path
    felixes: list[FelixProcess] = field(default_factory=list)
    pod_namespaces: list[str] = field(default_factory=list)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def kubelet_core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.kubelet)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    # --- API objects ---------------------------------------------------------------------

    def create_node(self, pod_cidr: str = POD_CIDR) -> None:
        self.core.create_node({"metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
                               "spec": {"podCIDRs": [pod_cidr]}})
        self.kubelet_core.patch_node_status(NODE, {"status": {"addresses": [
            {"type": "InternalIP", "address": self.node_ip}]}})

    def put_pool(self, ipip_mode: str = "Never", cidr: str = "10.244.0.0/16", **extra: Any) -> None:
        body = {"apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": "default"},
                "spec": {"cidr": cidr, "ipipMode": ipip_mode, **extra}}
        try:
            current = self.custom.get_cluster_custom_object("calyx.dev", "v1", "ippools", "default")
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
            self.custom.create_cluster_custom_object("calyx.dev", "v1", "ippools", body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.custom.replace_cluster_custom_object("calyx.dev", "v1", "ippools", "default", body)

    def create_pod(self, name: str, pod_ip: str, phase: str = "Running") -> None:
        """A pod bound to the node (as the scheduler binds it), its status then written by the
        node's kubelet."""
        self.core.create_namespaced_pod("default", {
            "metadata": {"name": name},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]}})
        self.set_pod_status(name, {"phase": phase, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]})

    def set_pod_status(self, name: str, status: dict[str, Any]) -> None:
        """Write a pod's status as the kubelet of the node it is bound to does."""
        self.kubelet_core.patch_namespaced_pod_status(name, "default", {"status": status})

    def delete_pod(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, "default", grace_period_seconds=0)

    # --- the node's kernel ---------------------------------------------------------------

    def add_pod_link(self, pod: str) -> str:
        """The host side of a pod's veth, as the CNI plugin would name it (peer stays in the ns)."""
        name, peer = cali_interface_name("default", pod), unique_name("pe")
        ip("link", "add", name, "type", "veth", "peer", "name", peer, netns=self.netns)
        ip("link", "set", peer, "up", netns=self.netns)
        ip("link", "set", name, "up", netns=self.netns)
        return name

    def add_running_pod(self, pod: str, pod_ip: str) -> PodEnd:
        """A pod with a network namespace of its own wired as the CNI plugin wires it (cali veth,
        /32, gateway; :mod:`calyx.cni.netsetup`), in the API and Running: traffic to and from it
        crosses felix's routes. The namespace is removed with the bed."""
        netns = unique_name("cxpod")
        ip("netns", "add", netns)
        self.pod_namespaces.append(netns)
        end = wire_pod(self.netns, netns, cali_interface_name("default", pod), pod_ip, mtu=1450)
        self.create_pod(pod, pod_ip)
        return end

    def pings(self, pods: dict[str, PodEnd]) -> NetnsPingMatrix:
        """A continuous ping between ``pods`` (from :meth:`add_running_pod`), every ordered pair."""
        return NetnsPingMatrix(pods, self.workdir)

    def routes(self, *selector: str) -> list[str]:
        out = ip("route", "show", *selector, netns=self.netns).stdout
        return [line.strip() for line in out.splitlines()]

    def felix_routes(self) -> list[str]:
        return self.routes("proto", "80")

    # --- felix ---------------------------------------------------------------------------

    def start_felix(self, **env: str) -> FelixProcess:
        log_path = self.workdir / f"felix-{len(self.felixes)}.log"
        environ = {**os.environ, "NODENAME": NODE, "KUBECONFIG": str(self.kubeconfig),
                   "CALYX_RUN_DIR": str(self.run_dir), "CALYX_HEALTH_HOST": "0.0.0.0",
                   "CALYX_LOG_LEVEL": "info", "FELIX_ROUTEREFRESHINTERVAL": "3600", **env}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", self.netns, str(FELIX)], env=environ,
                                    stdout=log, stderr=subprocess.STDOUT)
        felix = FelixProcess(proc, log_path)
        self.felixes.append(felix)
        return felix

    def http(self, path: str, port: int = 9099) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.node_ip}:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, felix: FelixProcess, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if felix.proc.poll() is not None:
                raise AssertionError(f"felix exited with {felix.proc.returncode}:\n{felix.log()[-3000:]}")
            return self.http("/readyz")[0] == 200
        wait_for("felix /readyz", ready, timeout)

    def metric(self, name: str, port: int = 9099, labels: str = "") -> float:
        """The sum of every sample of ``name`` whose labels start with ``labels`` (e.g.
        ``object="nat"``); 0 when the metric has no such sample yet."""
        status, text = self.http("/metrics", port)
        assert status == 200, f"/metrics answered {status}"
        total = 0.0
        prefix = f"{name}{{{labels}" if labels else name
        for line in text.splitlines():
            if line.startswith(prefix) and (labels or line[len(name):len(name) + 1] in (" ", "{")):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextmanager
def felix_bed(tmp_path: Path, kube: KubeAccess) -> Iterator[Bed]:
    subnet = f"10.{random.randint(200, 249)}.{random.randint(0, 255)}"
    host_ip, node_ip = f"{subnet}.1", f"{subnet}.2"
    with ExitStack() as stack:
        netns = stack.enter_context(scratch_netns("cxfx"))
        root_end = unique_name("cxf")
        ip("link", "add", root_end, "type", "veth", "peer", "name", "eth0", "netns", netns)
        stack.callback(ip, "link", "del", root_end, check=False)
        ip("addr", "add", f"{host_ip}/24", "dev", root_end)
        ip("link", "set", root_end, "up")
        ip("addr", "add", f"{node_ip}/24", "dev", "eth0", netns=netns)
        ip("link", "set", "eth0", "mtu", "1450", "up", netns=netns)
        ip("route", "add", "default", "via", host_ip, netns=netns)
        # a fresh veth can lose the first ARP exchange; start once the API's address answers
        wait_for("the namespace reaching the root side", lambda: subprocess.run(
            ["ip", "netns", "exec", netns, "ping", "-c1", "-W1", host_ip], capture_output=True).returncode == 0)
        kubeconfig = kube.kubeconfig_at(host_ip, "felix.kubeconfig")
        api = kube_client.load(str(kubeconfig))
        stack.callback(api.close)
        kubelet = kube_client.load(str(kube.node_kubeconfig(NODE)))
        stack.callback(kubelet.close)
        bed = Bed(netns=netns, host_ip=host_ip, node_ip=node_ip, kubeconfig=kubeconfig,
                  run_dir=tmp_path / "run", api=api, kubelet=kubelet, kube=kube, workdir=tmp_path)
        stack.callback(lambda: [ip("netns", "del", n, check=False) for n in bed.pod_namespaces])
        stack.callback(lambda: [f.stop() for f in bed.felixes])
        yield bed
