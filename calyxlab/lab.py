"""A running lab: deploy a topology, drive its nodes, destroy it without leftovers.

:class:`Lab` is both what the ``calyx-lab`` CLI uses and the Python API for tests::

    with Lab.deploy("containerlab/two-nodes.clab.yml", name="t1", mgmt_subnet="172.31.7.0/24",
                    kernel="host") as lab:
        lab.exec("node1", ["ping", "-c1", "10.0.0.2"], check=True)

Deploy order: (UML kernel), wiring (:mod:`calyxlab.netplan`), the Kubernetes control plane and
Calyx's CRDs when the topology has cluster nodes (:mod:`calyxlab.controlplane`), router daemons
(a container's entrypoint), every node's ``exec`` lines in order, then each cluster node
registers itself as a Node (with its own kubelet credentials) and its felix/bgpd are started. Each step is recorded in the state file first, and a failed deploy destroys what it
made. :func:`destroy` works from the state file and from the lab's derived names.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from calyx import naming
from calyxlab import agentauth, kubeproxy, manifests, netplan, nodeview, procs, roles, uml
from calyxlab.backend import Backend, HostBackend, ProcHandle, Result
from calyxlab.state import LabNames, StateFile, remove_state
from calyxlab.topology import MGMT_INTERFACE, Node, Role, Topology, load

API_PORT = 6443
API_READY_TIMEOUT = 120.0
ROUTER_READY_TIMEOUT = 30.0
EXEC_TIMEOUT = 120.0
CALYX_PODS_TIMEOUT = 120.0
CALYX_SERVICE_ACCOUNT = "calyx"
CNI_SERVICE_ACCOUNT = "calyx-cni-plugin"
SERVICE_ACCOUNT_TOKEN_SECONDS = 48 * 3600
DAEMON_SETTLE = 0.5      # a cluster daemon still running this long after its start is reported up
REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "charts" / "calyx" / "crds"
KERNELS = ("host", "uml", "auto")

Printer = Callable[[str], None]


class LabError(RuntimeError):
    """The lab could not be deployed or driven; the message says what and where."""


@dataclass(frozen=True)
class NodeStatus:
    """A node as the lab sees it (a row of ``inspect``)."""

    name: str
    namespace: str
    kind: str
    image: str
    role: str
    mgmt_ipv4: str
    mgmt_prefixlen: int


def _quiet(_: str) -> None:
    pass


def host_supports_ipip() -> bool:
    """Whether this kernel can create an ipip device (tried in a scratch namespace)."""
    ns = f"calyx-ipip-probe-{os.getpid()}-{time.monotonic_ns() % 100000}"
    host = HostBackend()
    if host.run(["ip", "netns", "add", ns]).returncode != 0:
        return False
    try:
        return host.run(["ip", "-n", ns, "link", "add", "probe0", "type", "ipip",
                         "remote", "192.0.2.1"]).returncode == 0
    finally:
        host.run(["ip", "netns", "del", ns])


def resolve_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise LabError(f"--kernel {kernel!r}: choose one of {', '.join(KERNELS)}")
    if kernel == "auto":
        return "host" if host_supports_ipip() else "uml"
    return kernel


def subnet_in_use(subnet) -> str | None:
    """The host interface already holding an address in ``subnet``, if any."""
    res = HostBackend().run(["ip", "-j", "-4", "addr", "show"])
    for link in json.loads(res.stdout or "[]"):
        for addr in link.get("addr_info", []):
            if IPv4Address(addr["local"]) in subnet:
                return f"{link['ifname']} ({addr['local']}/{addr['prefixlen']})"
    return None


class Lab:
    """A deployed lab (see module docstring)."""

    def __init__(self, topology: Topology, kernel: str, backend: Backend, state: StateFile,
                 printer: Printer = _quiet):
        self.topology = topology
        self.kernel = kernel
        self.backend = backend
        self.state = state
        self.names = state.names
        self.print = printer

    # ----------------------------------------------------------------- construction
    @classmethod
    def deploy(cls, topology: str | os.PathLike[str] | Topology, *, name: str | None = None,
               mgmt_subnet: str | None = None, kernel: str = "auto",
               uml_memory: str = uml.DEFAULT_MEMORY, printer: Printer = _quiet,
               daemons: Iterable[str] | None = None) -> "Lab":
        """Build the lab; on any failure destroy what was built and re-raise.

        ``daemons`` overrides every cluster node's CALYX_LAB_DAEMONS (``()`` starts none, so a
        test can start them itself with :meth:`start_daemons` or :meth:`spawn`).
        """
        topo = topology if isinstance(topology, Topology) else load(
            topology, name=name, mgmt_subnet=mgmt_subnet)
        names = LabNames(topo.name)
        if names.state_file.exists() or _lab_namespaces(HostBackend(), names):
            raise LabError(f"lab {topo.name!r} is already deployed (or left over): run "
                           f"'calyx-lab destroy --name {topo.name}' first")
        used = subnet_in_use(topo.mgmt.subnet)
        if used:
            raise LabError(f"{topo.file}: /mgmt/ipv4-subnet: {topo.mgmt.subnet} is already in "
                           f"use on this machine by {used}")
        kernel = resolve_kernel(kernel)
        if kernel == "uml" and (why := uml.uml_available()):
            raise LabError(f"cannot use the UML kernel: {why}")
        if topo.has_cluster_nodes:
            from calyxlab.controlplane import binaries
            try:
                binaries.locate()
            except binaries.BinariesMissing as exc:
                raise LabError(str(exc)) from None
        remove_state(names)      # logs of an earlier run of this lab name
        state = StateFile(names)
        state.data.update({
            "topology": str(topo.file), "kernel": kernel, "mgmt_subnet": str(topo.mgmt.subnet),
            "bridge": names.bridge, "tap": names.tap if kernel == "uml" else None,
            "namespaces": [], "deploying": True, "cli_pid": os.getpid(),
            "cli_start_time": procs.start_time(os.getpid()),
            "nodes": [_node_row(topo, n).__dict__ for n in topo.nodes]})
        state.save()
        lab = cls(topo, kernel, HostBackend(), state, printer)
        try:
            lab._build(uml_memory, None if daemons is None else tuple(daemons))
        except BaseException:
            printer(f"deploy of lab {topo.name!r} failed; cleaning up")
            destroy(topo.name, printer=printer)
            raise
        state.set("deploying", False)
        return lab

    @classmethod
    def attach(cls, name: str, *, printer: Printer = _quiet) -> "Lab":
        """A handle on an already deployed lab (from its state file)."""
        names = LabNames(name)
        state = StateFile.load(names)
        if state is None:
            raise LabError(f"lab {name!r} is not deployed (no {names.state_file})")
        topo = load(state.data["topology"], name=name, mgmt_subnet=state.data["mgmt_subnet"])
        return cls(topo, state.data["kernel"], _backend_for(state, topo), state, printer)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    # ----------------------------------------------------------------- build steps
    def _build(self, uml_memory: str, daemons: tuple[str, ...] | None) -> None:
        topo, names = self.topology, self.names
        # The scenario's cluster.yaml is checked before anything is created.
        manifest_file = manifests.scenario_manifest(topo.file) if topo.has_cluster_nodes else None
        manifest_docs = manifests.load(manifest_file) if manifest_file else []
        try:      # which cluster nodes run kube-proxy, in which mode: checked once, here
            proxy_modes = {n.name: m for n in topo.nodes
                           if n.role is Role.CLUSTER and (m := kubeproxy.mode(n, self.kernel))}
        except kubeproxy.KubeProxyConfigError as exc:
            raise LabError(f"{topo.file}: {exc}") from None
        self.print(f"Creating lab {topo.name!r} ({len(topo.nodes)} nodes, {len(topo.links)} "
                   f"links, {self.kernel} kernel, mgmt {topo.mgmt.subnet})")
        if self.kernel == "uml":
            self._boot_uml(uml_memory, uml.KUBE_PROXY_MODULES if proxy_modes else ())
        bridge_address = None if self.kernel == "uml" else \
            f"{topo.mgmt.gateway}/{topo.mgmt.subnet.prefixlen}"
        self.state.set("namespaces", [names.namespace(n.name) for n in topo.nodes])
        self.backend.run(["ip", "-batch", "-"], input=netplan.root_batch(
            topo, names, bridge_address=bridge_address, create_bridge=self.kernel != "uml"),
            timeout=EXEC_TIMEOUT).check_returncode("wiring the lab")
        for node in topo.nodes:
            self.backend.run(["ip", "netns", "exec", names.namespace(node.name), "sh", "-c",
                              netplan.node_script(topo, node.name)], timeout=EXEC_TIMEOUT
                             ).check_returncode(f"node {node.name}: bringing interfaces up")
        if topo.has_cluster_nodes:
            self._start_api()
        for node in topo.nodes:
            if node.role in netplan.ROUTER_ROLES:
                self._start_router(node)
        for node in topo.nodes:
            for line in node.exec:
                self._run_exec_line(node, line)
        cluster_nodes = [n for n in topo.nodes if n.role is Role.CLUSTER]
        for node in cluster_nodes:
            self._register(node)
        if cluster_nodes:
            # The release namespace first: the scenario's Secrets live there.
            namespace = self.node_env(cluster_nodes[0].name).get("CALYX_NAMESPACE",
                                                                naming.DEFAULT_NAMESPACE)
            for line in manifests.apply(str(self.kubeconfig),
                                        [manifests.namespace(namespace), *manifest_docs]):
                self.print(f"API: {line}")
            self._install_chart(namespace, manifest_docs)
        self.state.set("kubelet_nodes", [n.name for n in cluster_nodes
                                         if daemons is None and roles.DAEMONS_ENV not in n.env])
        started: list[ProcHandle] = []
        for node in cluster_nodes:
            if self.runs_kubelet(node.name):
                self.start_kubelet(node.name)
            else:
                started += self.start_daemons(node.name, daemons)
        if self.kubelet_nodes:
            self._wait_calyx_pods(self.kubelet_nodes)
        for node, proxy_mode in proxy_modes.items():   # once the pod network runs, as after kubeadm's CNI step
            self.start_kube_proxy(node, proxy_mode, kubeproxy.cluster_cidr(manifest_docs))
        if started:
            time.sleep(DAEMON_SETTLE)
            for h in started:
                if not self.alive(h):
                    tail = self.daemon_log(h.node, h.name).strip().splitlines()[-1:]
                    self.print(f"warning: node {h.node}: {h.name} exited right after its start "
                               f"(log {h.log}): {tail[0] if tail else 'no output'}")

    def start_kube_proxy(self, node: str, proxy_mode: str, pod_cidrs: str) -> ProcHandle:
        """Start kube-proxy (``proxy_mode``) in ``node`` as a node service with the
        ``system:kube-proxy`` identity (:mod:`calyxlab.kubeproxy`)."""
        from calyxlab.controlplane import binaries, pki
        directory = self.names.state_dir / "nodes" / node / "kube-proxy"
        directory.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.credentials().kubeconfig_for(pki.KUBE_PROXY, directory / "kubeconfig")
        config = directory / "config.yaml"
        config.write_text(kubeproxy.configuration(node, proxy_mode, str(kubeconfig), pod_cidrs))
        try:
            binary = binaries.locate().kube_proxy
        except binaries.BinariesMissing as exc:
            raise LabError(str(exc)) from None
        links = directory / "bin"
        links.mkdir(exist_ok=True)
        for command, target in kubeproxy.command_links(self.kernel).items():
            (links / command).unlink(missing_ok=True)
            (links / command).symlink_to(target)
        handle = self.spawn(node, [str(binary), f"--config={config}", "--v=1"], name="kube-proxy",
                            env={"PATH": f"{links}:{os.environ.get('PATH', '')}"})
        self.print(f"Node {node}: kube-proxy started ({proxy_mode} mode, log {handle.log})")
        return handle

    def _boot_uml(self, memory: str, extra_modules: tuple[str, ...] = ()) -> None:
        topo, names, host = self.topology, self.names, HostBackend()
        self.print(f"Booting user-mode Linux ({memory}) behind tap {names.tap}")
        host.run(["ip", "tuntap", "add", "dev", names.tap, "mode", "tap"]).check_returncode(
            "creating the UML tap")
        host.run(["ip", "addr", "add", f"{topo.mgmt.gateway}/{topo.mgmt.subnet.prefixlen}",
                  "dev", names.tap]).check_returncode("addressing the UML tap")
        host.run(["ip", "link", "set", names.tap, "up"]).check_returncode("raising the UML tap")
        module_dir = uml.uml_module_dir()
        modules = uml.module_load_order((module_dir / "modules.dep").read_text(),
                                        uml.UML_MODULES + extra_modules)
        key = agentauth.create_key_file(names.uml_agent_key)
        init = names.state_dir / "uml-init.sh"
        init.write_text(uml.init_script(bridge=names.bridge, agent=topo.mgmt.agent_address,
                                        subnet=topo.mgmt.subnet, python=uml.python_for_uml(),
                                        module_dir=module_dir, modules=modules,
                                        key_file=names.uml_agent_key, host=topo.mgmt.gateway))
        init.chmod(0o755)
        console = names.state_dir / "uml-console.log"
        pid, started = host.spawn(uml.uml_command(memory=memory, init=str(init), tap=names.tap),
                                  log=str(console))
        self.state.set("uml", {"pid": pid, "start_time": started})
        backend = uml.UmlBackend(topo.mgmt.agent_address, key)
        uml.wait_for_agent(backend, uml_alive=lambda: host.alive(pid, started),
                           console_log=console)
        self.backend = backend

    def _start_api(self) -> None:
        """Start the lab's Kubernetes control plane on the management gateway (the host kernel
        in both modes), write the admin kubeconfig and install Calyx's CRDs."""
        from calyxlab.controlplane import cluster, pki   # only cluster labs need the API
        topo, names = self.topology, self.names
        names.kubeconfig.unlink(missing_ok=True)
        self.print(f"Starting the Kubernetes control plane (etcd, kube-apiserver, "
                   f"kube-controller-manager, kube-scheduler) on {topo.mgmt.gateway}:{API_PORT}")
        started = time.monotonic()
        try:
            control_plane = cluster.start(
                names.control_plane_dir, address=str(topo.mgmt.gateway), port=API_PORT,
                on_spawn=lambda h: self.state.append("control_plane", h.to_json()))
        except (cluster.ControlPlaneError, OSError) as exc:
            raise LabError(f"the Kubernetes control plane did not start: {exc}") from None
        control_plane.kubeconfig_for(pki.ADMIN, names.kubeconfig)
        self.state.set("api_url", control_plane.url)
        self.print(f"API server ready at {self.api_url} ({time.monotonic() - started:.1f} s)")
        for line in manifests.install_crds(str(names.kubeconfig), CRD_DIR):
            self.print(f"API: {line}")

    def _install_chart(self, namespace: str, scenario_docs: list[dict]) -> None:
        """``helm install calyx charts/calyx -n NAMESPACE --create-namespace`` into the lab's API."""
        from calyxlab import chart
        values = chart.lab_values(str(self.topology.mgmt.gateway), API_PORT, scenario_docs)
        self.print(f"Installing the Calyx chart (helm install {chart.RELEASE} charts/calyx "
                   f"-n {namespace} --create-namespace)")
        try:
            extra = chart.scenario_values(self.topology.file)
            chart.install(str(self.kubeconfig), namespace, values,
                          self.names.state_dir / "chart-values.yaml", [extra] if extra else [])
        except (chart.ChartError, OSError) as exc:
            raise LabError(f"the Calyx chart did not install: {exc}") from None
        self.state.set("chart_namespace", namespace)

    def _wait_calyx_pods(self, nodes: Sequence[str], timeout: float = CALYX_PODS_TIMEOUT) -> None:
        """Until the DaemonSet's pod runs on every node in ``nodes`` (the lab's kubelets run them)."""
        from kubernetes import client as k8s

        from calyx.kube import client as kube_client
        from calyxlab.chart import RELEASE
        core = k8s.CoreV1Api(kube_client.load(str(self.kubeconfig)))
        namespace = self.state.data.get("chart_namespace", naming.DEFAULT_NAMESPACE)
        deadline = time.monotonic() + timeout
        waiting = set(nodes)
        pods = []
        while waiting:
            pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
            for pod in pods:
                if pod.spec.node_name in waiting and pod.status and pod.status.phase == "Running":
                    waiting.discard(pod.spec.node_name)
                    names = ", ".join(c.name for c in pod.spec.containers)
                    self.print(f"Node {pod.spec.node_name}: pod {namespace}/{pod.metadata.name} "
                               f"Running ({names})")
            if waiting and time.monotonic() > deadline:
                seen = "; ".join(f"{p.metadata.name} on {p.spec.node_name}: "
                                 f"{p.status.phase if p.status else '?'}" for p in pods) or "no pods"
                tails = " | ".join(f"{n}: {(self.daemon_log(n, 'kubelet').strip().splitlines() or ['no log'])[-1]}"
                                   for n in sorted(waiting))
                raise LabError(f"the calyx DaemonSet's pods did not run on {', '.join(sorted(waiting))} "
                               f"within {timeout:.0f} s ({seen}); kubelet: {tails}")
            if waiting:
                time.sleep(0.5)

    # ----------------------------------------------------------------- the lab's kubelets
    @property
    def kubelet_nodes(self) -> list[str]:
        """Cluster nodes whose Calyx runs from the chart's DaemonSet, under the lab's kubelet."""
        return list(self.state.data.get("kubelet_nodes", []))

    def runs_kubelet(self, node: str) -> bool:
        return node in self.kubelet_nodes

    def _kubelet_handles(self, node: str) -> list[ProcHandle]:
        return [ProcHandle.from_json(k) for k in self.state.data.get("kubelets", [])
                if k.get("node") == node]

    def start_kubelet(self, node: str) -> ProcHandle:
        """Start ``node``'s kubelet (a host process, in both kernels); it adopts the containers
        a previous kubelet of the node left running."""
        for handle in self._kubelet_handles(node):
            if procs.alive(handle.pid, handle.start_time):
                return handle
        argv = [sys.executable, "-m", "calyxlab.kubelet", "--lab", self.name, "--node", node]
        log = str(self.names.log_dir(node) / "kubelet.log")
        pid, started = procs.spawn(argv, log=log)
        if started < 0:
            raise LabError(f"node {node}: the kubelet exited at once; see {log}")
        handle = ProcHandle(pid, started, tuple(argv), log, node, "kubelet")
        self.state.set("kubelets", [k for k in self.state.data.get("kubelets", [])
                                    if k.get("node") != node] + [handle.to_json()])
        return handle

    def stop_kubelet(self, node: str, *, containers: bool = True, grace: float = 5.0) -> None:
        """Stop ``node``'s kubelet and (``containers``) the containers it runs: the node's
        Calyx is down, as when its kubelet and container runtime stop."""
        from calyxlab.kubelet.records import Records
        for handle in self._kubelet_handles(node):
            procs.terminate(handle.pid, handle.start_time, grace=grace)
        if containers:
            records = Records(self.names.kubelet_records(node))
            for record in records.containers.values():
                self.backend.terminate(record.pid, record.start_time, grace=grace)

    def _run_exec_line(self, node: Node, line: str) -> None:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise LabError(f"node {node.name}: exec {line!r}: {exc}") from None
        res = self.exec(node.name, argv, timeout=EXEC_TIMEOUT)
        self.print(f"Executed command {line!r} on node {node.name}. stdout:\n{res.stdout}"
                   if res.stdout.strip() else f"Executed command {line!r} on node {node.name}")
        if res.returncode != 0:
            raise LabError(f"node {node.name}: exec {line!r} exited {res.returncode}: "
                           f"{(res.stderr or res.stdout).strip()}")

    def _start_router(self, node: Node) -> None:
        specs = roles.router_daemons(node)
        for spec in specs:
            self.spawn(node.name, list(spec.argv), name=spec.name,
                       log=str(self.names.log_dir(node.name) / f"{spec.name}.log"))
            if spec.ready:
                self._wait_ready(node, spec)
        if node.role is Role.FRR:
            res = self.exec(node.name, list(roles.FRR_APPLY_CONFIG), timeout=EXEC_TIMEOUT)
            if res.returncode != 0:
                raise LabError(f"node {node.name}: FRR rejected its configuration "
                               f"(vtysh -b exited {res.returncode}): "
                               f"{(res.stdout + res.stderr).strip()}")
        self.print(f"Node {node.name}: started {', '.join(s.name for s in specs)}")

    def _wait_ready(self, node: Node, spec: roles.DaemonSpec) -> None:
        deadline = time.monotonic() + ROUTER_READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.exec(node.name, list(spec.ready), timeout=10).returncode == 0:
                return
            handle = self._process(node.name, spec.name)
            if handle is None or not self.backend.alive(handle.pid, handle.start_time):
                raise LabError(f"node {node.name}: {spec.name} exited at start:\n"
                               + self.daemon_log(node.name, spec.name)[-2000:])
            time.sleep(0.1)
        raise LabError(f"node {node.name}: {spec.name} not ready within "
                       f"{ROUTER_READY_TIMEOUT:.0f} s ({' '.join(spec.ready)} keeps failing)")

    def internal_ip(self, node: str) -> str | None:
        """NODE_IP from the node's env, else its first global IPv4 not on eth0."""
        if ip := self.topology.node(node).env.get("NODE_IP"):
            return ip
        res = self.exec(node, ["ip", "-j", "-4", "addr", "show", "scope", "global"], check=True)
        for link in json.loads(res.stdout or "[]"):
            if link.get("ifname") == MGMT_INTERFACE:
                continue
            for addr in link.get("addr_info", []):
                return addr["local"]
        return None

    def credentials(self):
        """Issues kubeconfigs for the lab's API, signed by its cluster CA."""
        from calyxlab.controlplane import cluster, pki
        if not self.api_url:
            raise LabError(f"lab {self.name!r} has no Kubernetes API")
        return cluster.Credentials(pki.ClusterPKI(self.names.control_plane_dir / "pki"), self.api_url)

    def stop_api_server(self, *, grace: float = 10.0) -> None:
        """Stop the lab's kube-apiserver (etcd and the controllers keep running): an API outage."""
        for entry in self.state.data.get("control_plane", []):
            if entry.get("name") == "kube-apiserver":
                procs.terminate(entry["pid"], entry["start_time"], grace=grace)

    def pause_control_plane(self, name: str, *, paused: bool = True) -> None:
        """Freeze (SIGSTOP) or thaw (SIGCONT) the lab's control-plane process ``name`` (``etcd``,
        ``kube-apiserver``, ...): a stalled component, as a hung disk or a stopped VM makes one."""
        entries = [e for e in self.state.data.get("control_plane", []) if e.get("name") == name]
        if not entries:
            raise LabError(f"lab {self.name!r} has no control-plane process {name!r}")
        for entry in entries:
            if not procs.send_signal(entry["pid"], entry["start_time"],
                                     signal.SIGSTOP if paused else signal.SIGCONT):
                raise LabError(f"lab {self.name!r}: {name} (pid {entry['pid']}) is not running")

    def start_api_server(self, *, timeout: float = API_READY_TIMEOUT) -> None:
        """Start the lab's kube-apiserver again, as it was started at deploy, and wait until it
        is ready."""
        from calyxlab.controlplane import cluster
        entries = self.state.data.get("control_plane", [])
        old = next((e for e in entries if e.get("name") == "kube-apiserver"), None)
        if old is None:
            raise LabError(f"lab {self.name!r} has no kube-apiserver")
        if not procs.alive(old["pid"], old["start_time"]):
            pid, started = procs.spawn(old["argv"], log=old["log"])
            handle = ProcHandle(pid, started, tuple(old["argv"]), old["log"], None, "kube-apiserver")
            self.state.set("control_plane", [e for e in entries if e is not old] + [handle.to_json()])
        deadline = time.monotonic() + timeout
        while not cluster.api_ready(self.kubeconfig):
            if time.monotonic() > deadline:
                raise LabError(f"kube-apiserver not ready within {timeout:.0f} s (log {old['log']})")
            time.sleep(0.2)

    def node_kubeconfig(self, node: str) -> Path:
        """The kubelet credentials of cluster node ``node`` (made at registration)."""
        return self.names.node_kubeconfig(node)

    def _register(self, node: Node) -> None:
        """Register the Node as its kubelet does: with the node's own identity."""
        from calyxlab import kubenode   # the kubernetes client is only needed for cluster labs
        ip = self.internal_ip(node.name)
        kubeconfig = self.credentials().node_kubeconfig(node.name, self.node_kubeconfig(node.name))
        kubenode.register(str(kubeconfig), node.name, node.labels, ip)
        self.print(f"Node {node.name}: registered in the API as system:node:{node.name} "
                   f"(InternalIP {ip or 'none'})")

    # ----------------------------------------------------------------- driving nodes
    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def kubeconfig(self) -> Path:
        return self.names.kubeconfig

    @property
    def api_url(self) -> str | None:
        return self.state.data.get("api_url")

    @property
    def nodes(self) -> dict[str, NodeStatus]:
        return {n.name: _node_row(self.topology, n) for n in self.topology.nodes}

    def calyxctl_reach(self) -> list[str]:
        """``calyxctl trace`` options that reach every node's felix and bgpd at the node's
        management address (the chart's health ports; the scenario's values listen on every
        address): how calyxctl on this host, as on an operator's workstation, reads each node."""
        from calyxctl.trace.bgpdclient import DEFAULT_BGPD_PORT
        from calyxctl.trace.felixclient import DEFAULT_FELIX_PORT
        out = []
        for name, node in sorted(self.nodes.items()):
            out += ["--felix", f"{name}={node.mgmt_ipv4}:{DEFAULT_FELIX_PORT}",
                    "--bgpd", f"{name}={node.mgmt_ipv4}:{DEFAULT_BGPD_PORT}"]
        return out

    def service_account_kubeconfig(self, account: str) -> Path:
        """A kubeconfig holding a token of ServiceAccount ``account`` of the chart's namespace
        (made once per lab through the TokenRequest API, valid for 48 hours): what daemons the
        lab starts itself run with, so they have exactly the chart's permissions."""
        path = self.names.state_dir / "service-accounts" / f"{account}.kubeconfig"
        if path.exists():
            return path
        from kubernetes import client as k8s

        from calyx.cni.install import render_kubeconfig, write_atomically
        from calyx.kube import client as kube_client
        namespace = self.state.data.get("chart_namespace", naming.DEFAULT_NAMESPACE)
        core = k8s.CoreV1Api(kube_client.load(str(self.kubeconfig)))
        token = core.create_namespaced_service_account_token(account, namespace, k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=SERVICE_ACCOUNT_TOKEN_SECONDS)))
        ca = (self.names.control_plane_dir / "pki" / "ca.crt").read_bytes()
        write_atomically(str(path), json.dumps(render_kubeconfig(self.api_url, ca, token.status.token)), 0o600)
        return path

    def node_env(self, node: str) -> dict[str, str]:
        """Environment of processes the lab starts in a cluster node: once the chart is
        installed, KUBECONFIG holds the token of its felix/bgpd ServiceAccount."""
        n = self.topology.node(node)
        kubeconfig = (self.service_account_kubeconfig(CALYX_SERVICE_ACCOUNT)
                      if self.state.data.get("chart_namespace") else self.kubeconfig)
        return {"NODENAME": n.name, "KUBECONFIG": str(kubeconfig),
                "CALYX_RUN_DIR": nodeview.calyx_run_dir(self.names, n.name),
                "CALYX_NAMESPACE": naming.DEFAULT_NAMESPACE, **n.env}

    def exec(self, node: str, argv: str | Sequence[str], *, check: bool = False,
             timeout: float | None = EXEC_TIMEOUT, env: Mapping[str, str] | None = None,
             input: str | None = None) -> Result:
        """Run ``argv`` (a list, or a string split like a shell would) inside ``node``."""
        args = shlex.split(argv) if isinstance(argv, str) else list(argv)
        res = self.backend.run(nodeview.enter_argv(self.names, self.topology.node(node), args),
                               input=input, timeout=timeout, env=env)
        res = Result(tuple(args), res.returncode, res.stdout, res.stderr)
        if check:
            res.check_returncode(f"node {node}")
        return res

    def run_root(self, argv: Sequence[str], *, check: bool = False,
                 timeout: float | None = EXEC_TIMEOUT) -> Result:
        """Run in the root namespace of the lab's kernel (the UML instance in UML mode)."""
        res = self.backend.run(list(argv), timeout=timeout)
        return res.check_returncode("lab kernel") if check else res

    def spawn(self, node: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log: str | os.PathLike[str] | None = None, name: str | None = None) -> ProcHandle:
        """Start a background process in ``node``; it is recorded and killed by destroy."""
        name = name or Path(argv[0]).name
        log = str(log or self.names.log_dir(node) / f"{name}.log")
        full = nodeview.enter_argv(self.names, self.topology.node(node), list(argv))
        pid, started = self.backend.spawn(full, env=env, log=log)
        if started < 0:
            raise LabError(f"node {node}: {name} exited at once; see {log}")
        handle = ProcHandle(pid, started, tuple(argv), log, node, name)
        self.state.append("processes", handle.to_json())
        return handle

    def alive(self, handle: ProcHandle) -> bool:
        return self.backend.alive(handle.pid, handle.start_time)

    def kill(self, handle: ProcHandle, *, grace: float = 5.0) -> None:
        """SIGTERM (then SIGKILL after ``grace``) a process started by :meth:`spawn`."""
        self.backend.terminate(handle.pid, handle.start_time, grace=grace)
        self.state.remove_process(handle.pid, handle.start_time)

    def processes(self, node: str | None = None) -> list[ProcHandle]:
        return [ProcHandle.from_json(p) for p in self.state.data.get("processes", [])
                if node is None or p.get("node") == node]

    def _process(self, node: str, name: str) -> ProcHandle | None:
        found = [p for p in self.processes(node) if p.name == name]
        return found[-1] if found else None

    def start_daemons(self, node: str, which: Iterable[str] | None = None, *,
                      env: Mapping[str, str] | None = None) -> list[ProcHandle]:
        """Start a cluster node's daemons (default: its CALYX_LAB_DAEMONS) not yet running.

        ``env`` adds to (or overrides) :meth:`node_env` for these processes.
        """
        n = self.topology.node(node)
        if n.role is not Role.CLUSTER:
            raise LabError(f"node {node}: image {n.image!r} is not a calyx/node image")
        if self.runs_kubelet(node):
            if which is not None or env:
                raise LabError(f"node {node}: Calyx runs there from the DaemonSet; start its "
                               f"kubelet (all daemons), not single daemons")
            self.start_kubelet(node)
            return []
        wanted = tuple(which) if which is not None else roles.cluster_daemons(n)
        unknown = [d for d in wanted if d not in roles.CLUSTER_DAEMONS]
        if unknown:
            raise LabError(f"node {node}: unknown daemon(s) {', '.join(unknown)} "
                           f"(choose from {', '.join(roles.CLUSTER_DAEMONS)})")
        bindir = Path(sys.executable).parent
        started = []
        for daemon in wanted:
            handle = self._process(node, daemon)
            if handle and self.alive(handle):
                continue
            if handle:                               # it has exited: forget it
                self.state.remove_process(handle.pid, handle.start_time)
            exe = bindir / daemon
            if not exe.exists():
                self.print(f"Node {node}: {daemon} is not installed yet (no {exe}); not started")
                continue
            started.append(self.spawn(node, [str(exe)], env={**self.node_env(node), **(env or {})},
                                      name=daemon,
                                      log=self.names.log_dir(node) / f"{daemon}.log"))
        if started:
            self.print(f"Node {node}: started {', '.join(h.name for h in started)}")
        return started

    def stop_daemons(self, node: str, which: Iterable[str] | None = None, *,
                     grace: float = 5.0) -> None:
        """Stop daemons the lab started in ``node`` (all of them by default). On a node whose
        Calyx runs from the DaemonSet this stops its kubelet and every container it runs."""
        if self.runs_kubelet(node) and which is None:
            self.stop_kubelet(node, grace=grace)
        wanted = set(which) if which is not None else None
        for handle in self.processes(node):
            if wanted is None or handle.name in wanted:
                self.kill(handle, grace=grace)

    def daemon_pid(self, node: str, name: str) -> int:
        """PID (in the lab's kernel) of daemon ``name`` on ``node``: the process the lab
        started, or on a node whose Calyx runs from the DaemonSet the container's process (the
        only child of the kubelet's wrapper shell)."""
        if not self.runs_kubelet(node):
            handle = self._process(node, name)
            if handle is None or not self.alive(handle):
                raise LabError(f"node {node}: daemon {name} is not running")
            return handle.pid
        from calyxlab.kubelet.records import Records
        records = Records(self.names.kubelet_records(node))
        wrappers = [r.pid for r in records.containers.values() if r.container == name]
        if not wrappers:
            raise LabError(f"node {node}: no container {name} in the kubelet's records")
        wrapper = wrappers[-1]
        res = self.run_root(["cat", f"/proc/{wrapper}/task/{wrapper}/children"])
        children = res.stdout.split()
        if res.returncode != 0 or len(children) != 1:
            raise LabError(f"node {node}: container {name} (wrapper {wrapper}) has children "
                           f"{children or '(none)'}, expected exactly the daemon")
        return int(children[0])

    def daemon_log(self, node: str, name: str) -> str:
        """The log of daemon ``name`` on ``node``: a process the lab started, else the newest
        log of a container of that name the node's kubelet ran."""
        path = self.names.log_dir(node) / f"{name}.log"
        if not path.exists():
            found = sorted(self.names.log_dir(node).glob(f"*_{name}.log"),
                           key=lambda p: p.stat().st_mtime)
            path = found[-1] if found else path
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def inspect(self) -> list[dict]:
        """Rows like ``containerlab inspect``: state is 'running' if the namespace exists."""
        present = set(_lab_namespaces(self.backend, self.names)) if self._reachable() else set()
        return [{"name": s.namespace, "kind": s.kind, "image": s.image,
                 "state": "running" if s.namespace in present else "missing",
                 "ipv4_address": f"{s.mgmt_ipv4}/{s.mgmt_prefixlen}", "role": s.role,
                 "lab_name": self.name}
                for s in self.nodes.values()]

    def _reachable(self) -> bool:
        return not isinstance(self.backend, uml.UmlBackend) or self.backend.ping()

    def destroy(self, *, cleanup: bool = False) -> None:
        """Remove the lab; ``cleanup`` also removes its logs."""
        destroy(self.name, printer=self.print, cleanup=cleanup)


def _node_row(topo: Topology, node: Node) -> NodeStatus:
    return NodeStatus(node.name, topo.namespace(node.name), node.kind, node.image,
                      node.role.value, str(topo.mgmt_addresses[node.name]),
                      topo.mgmt.subnet.prefixlen)


def _backend_for(state: StateFile, topo: Topology) -> Backend:
    if state.data.get("kernel") == "uml":
        try:
            key = agentauth.read_key_file(state.names.uml_agent_key)
        except agentauth.AgentKeyError as exc:
            raise LabError(f"lab {state.names.lab!r}: {exc}") from None
        return uml.UmlBackend(topo.mgmt.agent_address, key)
    return HostBackend()


def _lab_namespaces(backend: Backend, names: LabNames) -> list[str]:
    res = backend.run(["ip", "netns", "list"])
    return [line.split()[0] for line in res.stdout.splitlines()
            if line.split() and line.split()[0].startswith(names.namespace_prefix)]


def _find_host_processes(match: Callable[[list[str]], bool]) -> list[tuple[int, int]]:
    """(pid, start time) of host processes whose argv satisfies ``match``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if match(argv) and (started := procs.start_time(int(entry.name))) is not None:
            out.append((int(entry.name), started))
    return out


def _find_uml_instances(names: LabNames) -> list[tuple[int, int]]:
    """The lab's UML kernel: the process leading the group of all its host processes."""
    def leader(pid: int) -> bool:
        try:
            return os.getpgid(pid) == pid
        except ProcessLookupError:
            return False
    return [(pid, started) for pid, started in _find_host_processes(
        lambda a: bool(a) and Path(a[0]).name == uml.UML_BINARY
        and f"vec0:transport=tap,ifname={names.tap}" in a) if leader(pid)]


def destroy(name: str, *, printer: Printer = _quiet, cleanup: bool = False) -> bool:
    """Remove everything lab ``name`` created. Idempotent; True if anything was found."""
    names = LabNames(name)
    host = HostBackend()
    state = StateFile.load(names)
    data = state.data if state else {}
    found = state is not None
    # A deploy still running for this lab must stop first, or it would keep creating things.
    if (cli := data.get("cli_pid")) and data.get("deploying") and cli != os.getpid():
        procs.terminate(cli, data.get("cli_start_time", -1), grace=2)
    # The UML instance: everything inside it goes with it.
    umls = ([(data["uml"]["pid"], data["uml"]["start_time"])] if data.get("uml") else [])
    umls += _find_uml_instances(names)
    for pid, started in set(umls):
        if procs.alive(pid, started):
            printer(f"Stopping the UML kernel (pid {pid})")
            procs.kill_now(pid, started, group=True)
            found = True
    # The lab's kubelets first (host processes in both kernels), or they restart containers.
    for pid, started in _kubelet_processes(name, data):
        found |= procs.terminate(pid, started, grace=3)
    # Processes on the host kernel: recorded ones, then whatever still runs in a lab namespace.
    for p in data.get("processes", []) if data.get("kernel") != "uml" else []:
        found |= procs.terminate(p["pid"], p["start_time"], grace=3)
    for pid, started in _control_plane_processes(names, data):
        found |= procs.terminate(pid, started, grace=5)
    for ns in _lab_namespaces(host, names):
        found = True
        pids = host.run(["ip", "netns", "pids", ns]).stdout.split()
        for pid in pids:
            if (started := procs.start_time(int(pid))) is not None:
                procs.terminate(int(pid), started, grace=3)
        res = host.run(["ip", "netns", "del", ns])
        if res.returncode != 0:
            printer(f"warning: cannot delete namespace {ns}: {res.stderr.strip()}")
        else:
            printer(f"Removed namespace {ns}")
    for link in (names.bridge, names.tap):
        if host.run(["ip", "link", "del", link]).returncode == 0:
            printer(f"Removed link {link}")
            found = True
    host.run(["rm", "-rf", str(names.run_dir)])
    _remove_kubelet_leftovers(names, printer)
    if cleanup:
        remove_state(names)
    else:
        for leftover in ("state.json", "kubeconfig", names.uml_agent_key.name):
            (names.state_dir / leftover).unlink(missing_ok=True)
    return found



def leftovers(name: str) -> list[str]:
    """What of lab ``name`` still exists on this machine (empty after a clean destroy).

    Looks by name, not by state file: namespaces ``clab-<lab>-*``, the lab's bridge and tap,
    its UML instance and API server, and any process in a lab namespace. Zombies (finished
    processes whose parent has not collected them) do not count.
    """
    names, host = LabNames(name), HostBackend()
    found = [f"namespace {ns}" for ns in _lab_namespaces(host, names)]
    found += [f"link {link}" for link in (names.bridge, names.tap)
              if host.run(["ip", "link", "show", link]).returncode == 0]
    found += [f"UML process {pid}" for pid, _ in _find_uml_instances(names)]
    found += [f"control-plane process {pid}" for pid, started in _control_plane_processes(names, {})
              if procs.alive(pid, started)]
    found += [f"kubelet process {pid}" for pid, started in _kubelet_processes(name, {})
              if procs.alive(pid, started)]
    return found


def _kubelet_processes(lab: str, data: Mapping) -> list[tuple[int, int]]:
    """The lab's kubelets: recorded ones, and any host process running one for this lab."""
    found = {(k["pid"], k["start_time"]) for k in data.get("kubelets", [])}
    found |= set(_find_host_processes(
        lambda argv: "calyxlab.kubelet" in argv and "--lab" in argv
        and argv[argv.index("--lab") + 1:argv.index("--lab") + 2] == [lab]))
    return sorted(found)


def _remove_kubelet_leftovers(names: LabNames, printer: Printer) -> None:
    """The mount points the kubelets created on this machine that no other lab uses (empty
    ones), and the pods' volumes (tokens and Secrets) under the state directory."""
    from calyxlab import mountpoints
    for path in mountpoints.remove_empty_dirs(mountpoints.Registry().release(names.lab)):
        printer(f"Removed mount point {path}")
    for node_dir in names.state_dir.glob("nodes/*"):
        kubelet_dir = names.kubelet_dir(node_dir.name)
        shutil.rmtree(kubelet_dir / "pods", ignore_errors=True)
        names.kubelet_records(node_dir.name).unlink(missing_ok=True)


def _control_plane_processes(names: LabNames, data: Mapping) -> list[tuple[int, int]]:
    """The lab's etcd and Kubernetes components: recorded ones, and any host process whose
    arguments name the lab's control-plane directory (the record may be lost)."""
    found = {(p["pid"], p["start_time"]) for p in data.get("control_plane", [])}
    marker = str(names.control_plane_dir)
    found |= set(_find_host_processes(lambda argv: any(marker in a for a in argv)))
    return sorted(found)
