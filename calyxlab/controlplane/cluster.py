"""A real Kubernetes control plane on this machine: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler as separate processes, configured as a kubeadm cluster is (TLS everywhere a
client meets the API, ``--authorization-mode=Node,RBAC``, NodeRestriction admission,
service-account tokens signed by the API server).

:class:`ControlPlane` starts them in order and waits until each can do its work, writes the
admin kubeconfig, issues node credentials (``system:node:NAME``), and stops or restarts single
components (an API server outage) and the whole. Every process is identified by PID and start
time and only ever signalled by PID. etcd listens on the loopback only, without TLS: no client
but the API server ever reaches it.

The lab runs no kubelet, so the node-lifecycle controller is off by default: it would mark every
lab node NotReady for want of kubelet heartbeats and evict the pods the tests create.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import kubernetes.client
from kubernetes.client.rest import ApiException

from calyx.kube import client as kube_client
from calyxlab import procs
from calyxlab.backend import ProcHandle
from calyxlab.controlplane import binaries as binaries_mod
from calyxlab.controlplane import kubeconfig as kubeconfig_mod
from calyxlab.controlplane import pki as pki_mod

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
API_READY_TIMEOUT = 120.0
CONTROLLERS_READY_TIMEOUT = 60.0
ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)
# Every controller kube-controller-manager runs by default but node lifecycle (see module doc).
DEFAULT_CONTROLLERS = ("*", "-node-lifecycle-controller")


class ControlPlaneError(RuntimeError):
    """A component did not start or stop as it should; the message says which and shows its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def first_service_ip(cidr: str) -> str:
    """The ClusterIP of the ``kubernetes`` Service: the first address of the Service range."""
    from ipaddress import ip_network
    return str(next(ip_network(cidr).hosts()))


T = TypeVar("T")
SERVICE_ACCOUNT_WAIT = 30.0


def create_once_admitted(create: Callable[[], T], timeout: float = SERVICE_ACCOUNT_WAIT) -> T:
    """Call ``create`` (a Pod create) until admission stops refusing it for a missing
    ServiceAccount: in a namespace made a moment ago the controller-manager has not yet made
    the ``default`` account, and the ServiceAccount admission plugin answers 403 until it has.
    Any other error, or the same one after ``timeout`` seconds, is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return create()
        except ApiException as exc:
            waiting = exc.status == 403 and "serviceaccount" in str(exc.body or "").lower()
            if not waiting or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def api_ready(kubeconfig: str | os.PathLike[str]) -> bool:
    """Whether the API server that ``kubeconfig`` names answers ``/readyz`` with ``ok``."""
    try:
        api = kube_client.load(str(kubeconfig))
    except kube_client.ClientConfigError:
        return False
    try:
        response = api.call_api("GET", f"{api.configuration.host}/readyz", _request_timeout=5)
        return response.status == 200 and response.read().strip() == b"ok"
    except Exception:       # refused, TLS not up yet, 500 while post-start hooks run
        return False
    finally:
        api.close()


@dataclass(frozen=True)
class ControlPlaneSpec:
    """What a control plane looks like; ``port=0`` picks a free port for the API server."""

    directory: Path
    address: str = "127.0.0.1"
    port: int = 0
    service_cidr: str = DEFAULT_SERVICE_CIDR
    serving_ips: tuple[str, ...] = ()          # more addresses the serving certificate names
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
    extra_apiserver_args: tuple[str, ...] = ()


@dataclass
class _Ports:
    api: int
    etcd_client: int
    etcd_peer: int


@dataclass(frozen=True)
class Credentials:
    """Issues kubeconfigs for the API at ``url``, signed by the cluster CA in ``pki``."""

    pki: pki_mod.ClusterPKI
    url: str

    def kubeconfig_for(self, identity: pki_mod.ClientIdentity, path: str | os.PathLike[str], *,
                       namespace: str = "default") -> Path:
        """Write a kubeconfig for ``identity`` (a fresh client certificate) at ``path``."""
        pair = self.pki.client(identity)
        return kubeconfig_mod.write(path, kubeconfig_mod.kubeconfig(
            self.url, self.pki.ca.cert, pair, identity.user, namespace=namespace))

    def node_kubeconfig(self, node: str, path: str | os.PathLike[str]) -> Path:
        """Credentials of ``node``'s kubelet (``system:node:NODE`` in ``system:nodes``)."""
        return self.kubeconfig_for(pki_mod.node_identity(node), path)


@dataclass
class ControlPlane:
    """A running (or stopped) control plane; see the module docstring."""

    spec: ControlPlaneSpec
    on_spawn: Callable[[ProcHandle], None] = lambda handle: None   # the lab records each process
    handles: dict[str, ProcHandle] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = Path(self.spec.directory)
        self.bins = binaries_mod.locate()
        self.pki = pki_mod.ClusterPKI(self.dir / "pki")
        self.ports = _Ports(self.spec.port or free_port(self._bind_probe_host),
                            free_port(), free_port())
        self.admin_kubeconfig = self.dir / "admin.kubeconfig"

    # ------------------------------------------------------------------ addresses
    @property
    def _bind_probe_host(self) -> str:
        return "0.0.0.0" if self.spec.address in ("0.0.0.0", "::") else self.spec.address

    @property
    def advertise_address(self) -> str:
        return "127.0.0.1" if self.spec.address in ("0.0.0.0", "::") else self.spec.address

    def url_for(self, address: str | None = None) -> str:
        """The API URL as a client at ``address`` (default: the advertised one) dials it."""
        return f"https://{address or self.advertise_address}:{self.ports.api}"

    @property
    def url(self) -> str:
        return self.url_for()

    # ------------------------------------------------------------------ credentials
    def credentials(self, address: str | None = None) -> Credentials:
        """Issues kubeconfigs for clients that reach the API at ``address`` (default: the
        advertised address)."""
        return Credentials(self.pki, self.url_for(address))

    def kubeconfig_for(self, identity: pki_mod.ClientIdentity, path: str | os.PathLike[str], *,
                       address: str | None = None, namespace: str = "default") -> Path:
        return self.credentials(address).kubeconfig_for(identity, path, namespace=namespace)

    def node_kubeconfig(self, node: str, path: str | os.PathLike[str], *,
                        address: str | None = None) -> Path:
        return self.credentials(address).node_kubeconfig(node, path)

    def admin_client(self) -> kubernetes.client.ApiClient:
        return kube_client.load(str(self.admin_kubeconfig))

    # ------------------------------------------------------------------ argv (pure)
    def _argv(self, component: str) -> list[str]:
        pki, d = self.pki, self.dir
        if component == ETCD:
            return [str(self.bins.etcd), "--name", "calyx-lab", "--data-dir", str(d / "etcd"),
                    "--listen-client-urls", f"http://127.0.0.1:{self.ports.etcd_client}",
                    "--advertise-client-urls", f"http://127.0.0.1:{self.ports.etcd_client}",
                    "--listen-peer-urls", f"http://127.0.0.1:{self.ports.etcd_peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.ports.etcd_peer}",
                    "--initial-cluster", f"calyx-lab=http://127.0.0.1:{self.ports.etcd_peer}",
                    "--listen-metrics-urls", "", "--log-level", "warn"]
        if component == APISERVER:
            serving, sa = self._serving_certificate(), self.pki.service_account_keys()
            return [str(self.bins.kube_apiserver),
                    f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
                    f"--bind-address={self.spec.address}", f"--secure-port={self.ports.api}",
                    f"--advertise-address={self.advertise_address}",
                    f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
                    f"--client-ca-file={pki.ca.cert}",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--service-account-key-file={sa.cert}",
                    f"--service-account-signing-key-file={sa.key}",
                    f"--service-cluster-ip-range={self.spec.service_cidr}",
                    "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                    "--allow-privileged=true", "--profiling=false",
                    f"--cert-dir={d / 'apiserver-certs'}", *self._endpoint_reconciler,
                    *self.spec.extra_apiserver_args]
        if component == CONTROLLER_MANAGER:
            sa = self.pki.service_account_keys()
            return [str(self.bins.kube_controller_manager),
                    f"--kubeconfig={self._component_kubeconfig(pki_mod.CONTROLLER_MANAGER)}",
                    "--leader-elect=false", "--secure-port=0", "--use-service-account-credentials",
                    f"--service-account-private-key-file={sa.key}", f"--root-ca-file={pki.ca.cert}",
                    f"--cluster-signing-cert-file={pki.ca.cert}",
                    f"--cluster-signing-key-file={pki.ca.key}",
                    f"--controllers={','.join(self.spec.controllers)}"]
        if component == SCHEDULER:
            return [str(self.bins.kube_scheduler),
                    f"--kubeconfig={self._component_kubeconfig(pki_mod.SCHEDULER)}",
                    "--leader-elect=false", "--secure-port=0"]
        raise ValueError(f"unknown control-plane component {component!r}")

    @property
    def _endpoint_reconciler(self) -> list[str]:
        """The ``kubernetes`` Service's endpoint cannot be a loopback address: a control plane
        reached only through the loopback publishes none."""
        return ["--endpoint-reconciler-type=none"] if self.advertise_address.startswith("127.") else []

    def _serving_certificate(self) -> pki_mod.KeyPair:
        pair = pki_mod.KeyPair(self.pki.dir / "apiserver.crt", self.pki.dir / "apiserver.key")
        if pair.cert.exists() and pair.key.exists():
            return pair
        ips = {"127.0.0.1", self.advertise_address, first_service_ip(self.spec.service_cidr),
               *self.spec.serving_ips}
        return self.pki.serving("apiserver", "kube-apiserver", sorted(ips), [
            kubeconfig_mod.SERVER_NAME, "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local", "localhost"])

    def _component_kubeconfig(self, identity: pki_mod.ClientIdentity) -> Path:
        path = self.dir / f"{identity.file_stem}.kubeconfig"
        if not path.exists():
            self.kubeconfig_for(identity, path, address="127.0.0.1"
                                if self.spec.address in ("0.0.0.0", "::") else None)
        return path

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ControlPlane":
        """Start every component not running; returns once the API serves and controllers act."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.admin_kubeconfig.exists():
            self.kubeconfig_for(pki_mod.ADMIN, self.admin_kubeconfig)
        try:
            for component in COMPONENTS:
                if not self.running(component):
                    self.start_component(component)
                    if component == APISERVER:
                        self.wait_api_ready()
            self._wait_controllers()
        except BaseException:
            self.stop()
            raise
        return self

    def start_component(self, component: str) -> ProcHandle:
        log = self.dir / "logs" / f"{component}.log"
        argv = self._argv(component)
        pid, started = procs.spawn(argv, log=str(log))
        handle = ProcHandle(pid, started, tuple(argv), str(log), None, component)
        self.handles[component] = handle
        self.on_spawn(handle)
        if started < 0:
            raise ControlPlaneError(f"{component} exited at once:\n{self.log_tail(component)}")
        return handle

    def running(self, component: str) -> bool:
        h = self.handles.get(component)
        return h is not None and procs.alive(h.pid, h.start_time)

    def stop_component(self, component: str, *, grace: float = 10.0) -> None:
        h = self.handles.pop(component, None)
        if h is not None:
            procs.terminate(h.pid, h.start_time, grace=grace)

    def stop(self) -> None:
        """Stop every component (the reverse of the start order); the files stay."""
        for component in reversed(COMPONENTS):
            self.stop_component(component)

    def log_tail(self, component: str, lines: int = 30) -> str:
        try:
            text = (self.dir / "logs" / f"{component}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ readiness
    def api_ready(self) -> bool:
        return api_ready(self.admin_kubeconfig)

    def wait_api_ready(self, timeout: float = API_READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.api_ready():
            for component in (ETCD, APISERVER):
                if not self.running(component):
                    raise ControlPlaneError(f"{component} exited before the API was ready:\n"
                                            f"{self.log_tail(component)}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"the API at {self.url} was not ready within {timeout:.0f} s:\n"
                                        f"{self.log_tail(APISERVER)}")
            time.sleep(0.2)

    def _wait_controllers(self, timeout: float = CONTROLLERS_READY_TIMEOUT) -> None:
        """The service-account controller has made ``default/default``: pods can be created."""
        api = self.admin_client()
        core = kubernetes.client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    core.read_namespaced_service_account("default", "default")
                    return
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                if not self.running(CONTROLLER_MANAGER):
                    raise ControlPlaneError(f"{CONTROLLER_MANAGER} exited:\n"
                                            f"{self.log_tail(CONTROLLER_MANAGER)}")
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"{CONTROLLER_MANAGER} made no default ServiceAccount "
                                            f"within {timeout:.0f} s:\n{self.log_tail(CONTROLLER_MANAGER)}")
                time.sleep(0.2)
        finally:
            api.close()

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(directory: str | os.PathLike[str], *, on_spawn: Callable[[ProcHandle], None] | None = None,
          **spec: Any) -> ControlPlane:
    """Start a control plane in ``directory``; ``spec`` holds :class:`ControlPlaneSpec`'s other
    fields (``address``, ``port``, ...)."""
    plane = ControlPlane(ControlPlaneSpec(Path(directory), **spec))
    if on_spawn is not None:
        plane.on_spawn = on_spawn
    return plane.start()
