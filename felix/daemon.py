"""felix's wiring and main loop: datastore -> calculation -> dataplane managers.

The main loop (a :class:`calyx.loop.Loop` named ``felix``) sleeps until something happens (a
datastore change, a link or route event, the periodic resync timer, the end of a tunnel or VXLAN
teardown grace or of a released route's grace, a retry of a failed VTEP annotation patch, stop),
gathers a burst of such events for ``debounce`` seconds, and reconciles: desired state is
recalculated when the datastore changed, the kernel's state comes from the route manager's view
(a full dump at start and every ``route_refresh_interval``, netlink events in between), and only
differences are written. With VXLAN, felix also keeps its own Node's VTEP annotations current
(:mod:`felix.vtep`).
Nothing is programmed before every watched resource has been listed once, and while the API is
unreachable the datastore keeps its last contents, so the dataplane stays as it is. On stop
felix leaves the dataplane untouched.

Background chores for the CNI plugin run beside the loop when configured: keeping its
kubeconfig's token fresh (``cni_kubeconfig``), IPAM block garbage collection and the release of
this node's leaked addresses (``ipam_gc_interval``; see :mod:`calyx.cni.gc` and
:mod:`calyx.cni.leakgc`).

The health port also answers read-only questions about this node's forwarding for ``calyxctl
trace`` (:mod:`felix.inspect`) and about the NetworkPolicy of its pods (:mod:`felix.policyview`),
and serves ``calyxctl trace --probe``: one echo request from a local pod, watched for on every
device of the node (:mod:`felix.probeview`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import kubernetes.client
from prometheus_client import CollectorRegistry

from calyx import model
from calyx.cni import blocks as cni_blocks
from calyx.cni import gc as cni_gc
from calyx.cni import ipam as cni_ipam
from calyx.cni import leakgc as cni_leakgc
from calyx.cni import token as cni_token
from calyx.cni.ipam import node_ipam_records
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyx.kube.datastore import Datastore, WatchSpec
from calyx.kube.events import EventRecorder
from calyx.kernelwatch import KernelWatch
from calyx.netlink import RouteTable
from calyx.vxlanlink import VxlanLinks
from calyx.loop import Batch, Clock, Coalescing, Loop, MonotonicClock
from calyx.logs import get_logger
from calyx.observability import Check, HealthServer, Liveness
from felix.calc import DesiredDataplane, LocalFacts, desired_dataplane
from felix.config import FelixConfig
from felix.dataplane.mtufile import PodMtuFile
from felix.dataplane import policynft
from felix.dataplane.nat import NatManager
from felix.dataplane.policy import PolicyManager
from felix.dataplane.policynft import NO_POLICY, PolicyTable
from felix.dataplane.nfttable import LibNftables
from felix.dataplane.routes import RouteManager
from felix.dataplane.tunnel import TunnelManager
from felix.dataplane.vxlan import VxlanManager
from felix.inspect import NodeInspector
from felix.metrics import FelixMetrics
from felix.nat import NO_NAT, NatState, desired_nat
from felix.policycalc import endpoint_devices
from felix.policyindex import PolicyIndex
from felix.policyview import PolicyView
from felix.probecapture import capture as probe_capture
from felix.probesend import send_from_pod
from felix.probeview import ProbeEndpoints, local_pod_addresses
from felix.vtep import KubeNodeAnnotator, VtepPublisher

HEARTBEAT_PERIOD = 10.0      # the main loop wakes at least this often to prove it is alive
RESYNC_TIMER = "route-resync"
TEARDOWN_TIMER = "tunnel-teardown"
RELEASE_TIMER = "route-release"
VXLAN_TEARDOWN_TIMER = "vxlan-teardown"
VTEP_RETRY_TIMER = "vtep-publish-retry"
VTEP_RETRY_DELAY = 5.0       # seconds before a failed VTEP annotation patch is tried again


@dataclass(frozen=True)
class DatastoreChanged(Coalescing):
    """A cache changed (or a reflector synced) since the last snapshot."""


def watch_specs() -> list[WatchSpec]:
    return [
        WatchSpec(resources.PODS),                # every pod: NetworkPolicy peers are anywhere
        WatchSpec(resources.NAMESPACES),          # their labels, for namespaceSelectors
        WatchSpec(resources.NETWORKPOLICIES),
        WatchSpec(resources.NODES),
        WatchSpec(resources.IPPOOLS),
        WatchSpec(resources.IPAMBLOCKS),
        WatchSpec(resources.BGPCONFIGURATIONS),   # serviceClusterIPs: pools overlapping them are refused
    ]


@dataclass
class _LoopState:
    """What the main loop carries from one pass to the next."""

    datastore: Datastore
    table: RouteTable
    routes: RouteManager
    tunnel: TunnelManager
    mtu_file: PodMtuFile
    nat: NatManager
    policy: PolicyManager
    vxlan: VxlanManager
    vtep: VtepPublisher
    policy_index: PolicyIndex      # NetworkPolicy of the node's pods, following each snapshot
    synced: bool = False
    snapshot: model.Snapshot = field(default_factory=model.Snapshot)
    desired: DesiredDataplane | None = None
    nat_desired: NatState = NO_NAT
    policy_desired: PolicyTable = NO_POLICY


class Felix:
    """One node agent. :meth:`run` blocks until :meth:`stop` is called (from any thread or a
    signal handler)."""

    def __init__(self, config: FelixConfig, api: kubernetes.client.ApiClient | None = None,
                 clock: Clock | None = None):
        self.config = config
        self.registry = CollectorRegistry()
        self.metrics = FelixMetrics.create(self.registry)
        self._log = get_logger("felix")
        self._api = api or kube_client.load(config.kubeconfig)
        self._stop = threading.Event()
        self._snapshot_taken = threading.Event()
        self._ready = False
        self.liveness = Liveness()
        self._loop = Loop("felix", self._iterate, clock=clock or MonotonicClock(), debounce=config.debounce,
                          heartbeat_max_age=6 * HEARTBEAT_PERIOD, idle_tick=HEARTBEAT_PERIOD,
                          liveness=self.liveness)
        self._state: _LoopState | None = None
        self.policy_view = PolicyView()
        self._problems: tuple[str, ...] = ()

    def stop(self) -> None:
        self._stop.set()
        self._loop.stop()

    # --- health --------------------------------------------------------------------------

    def readiness(self) -> Check:
        if self._ready:
            return Check(True, "")
        return Check(False, "waiting for the first full sync of datastore and dataplane")

    # --- event intake -------------------------------------------------------------------

    def _watch_datastore(self, datastore: Datastore, stop: threading.Event) -> None:
        while not stop.is_set() and not datastore.wait_synced(timeout=1.0):
            pass        # the first pass waits for every list; the loop stays alive meanwhile
        while not stop.is_set():
            if datastore.wait_for_change(1.0):
                self._loop.post(DatastoreChanged())
                self._snapshot_taken.wait(1.0)
                self._snapshot_taken.clear()

    # --- main loop -----------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.config
        stop = self._stop
        events = EventRecorder(self._api, component="felix", host=cfg.nodename)
        datastore = Datastore(self._api, watch_specs(), events=events, namespace=cfg.namespace,
                              registry=self.registry)
        # /ipam: the node's address assignments (the CNI plugin's state), for `calyxctl ipam`;
        # /v1/route, /v1/link: the node's forwarding, for `calyxctl trace`; /v1/probe/*: its
        # --probe, a real echo request from a local pod, watched for on every device.
        servers = [HealthServer(cfg.health_host, cfg.health_port, self.registry, liveness=self.liveness,
                                readiness=self.readiness,
                                json_views={"/ipam": lambda: node_ipam_records(cfg.nodename, cfg.run_dir)},
                                handlers={**NodeInspector(cfg.nodename).handlers(),
                                          **self.policy_view.handlers(),
                                          **self._probe_endpoints().handlers()})]
        if cfg.metrics_port is not None and cfg.metrics_port != cfg.health_port:
            servers.append(HealthServer(cfg.health_host, cfg.metrics_port, self.registry,
                                        liveness=self.liveness, readiness=self.readiness))
        table = RouteTable()
        routes = RouteManager(table, self.metrics, release_grace=cfg.ipip_teardown_grace)
        tunnel = TunnelManager(table, self.metrics, grace=cfg.ipip_teardown_grace)
        vxlan_links = VxlanLinks()
        vxlan = VxlanManager(vxlan_links, self.metrics, grace=cfg.ipip_teardown_grace)
        vtep = VtepPublisher(KubeNodeAnnotator(self._api), cfg.nodename)
        kernel = KernelWatch()
        watcher = threading.Thread(target=self._watch_datastore, args=(datastore, stop), name="datastore-watch",
                                   daemon=True)
        chores = self._cni_chores(stop)
        self._log.info("felix starting", node=cfg.nodename, route_refresh_interval=cfg.route_refresh_interval,
                       mtu_override=cfg.mtu, run_dir=str(cfg.run_dir))
        try:
            for server in servers:
                server.start()
            kernel.start(self._loop.post)    # subscribed before the first dump: no change goes unseen
            datastore.start()
            watcher.start()
            for chore in chores:
                chore.start()
            tunnel.probe()
            self._state = _LoopState(datastore, table, routes, tunnel, PodMtuFile(cfg.run_dir),
                                     NatManager(LibNftables, self.metrics),
                                     PolicyManager(LibNftables, self.metrics), vxlan, vtep,
                                     PolicyIndex(cfg.nodename))
            if not stop.is_set():
                self._loop.run()
        finally:
            self._loop.stop()
            datastore.stop(timeout=1.0)     # reflector threads are daemons: no need to wait long
            kernel.stop()
            for server in servers:
                server.stop()
            table.close()
            vxlan_links.close()
            self._log.info("felix stopped; dataplane left as it is", node=cfg.nodename)

    def _probe_endpoints(self) -> ProbeEndpoints:
        nodename = self.config.nodename

        def local_pods() -> dict[str, IPv4Address]:
            state = self._state        # the loop replaces its snapshot whole: reading it is safe
            return local_pod_addresses(state.snapshot, nodename) if state is not None else {}
        return ProbeEndpoints(nodename, local_pods, probe_capture, send_from_pod,
                              enabled=self.config.packet_probe)

    def _iterate(self, batch: Batch) -> None:
        """One pass of the main loop: apply kernel events, re-read the kernel when due, recalculate
        when the datastore changed, write the differences, re-arm the tunnel teardown timer."""
        state = self._state
        assert state is not None
        cfg = self.config
        if not state.synced:
            if not state.datastore.synced:
                return      # nothing is programmed before every watched resource was listed once
            state.synced = True
            self._log.info("datastore synced", node=cfg.nodename)
        routes, tunnel = state.routes, state.tunnel
        kernel = routes.absorb(batch.events)
        resync = batch.fired(RESYNC_TIMER) or kernel.resync_wanted or state.desired is None
        recalc = state.desired is None
        if resync:
            routes.resync()
            self._loop.every(RESYNC_TIMER, cfg.route_refresh_interval)
        if batch.has(DatastoreChanged) or state.desired is None:   # the first pass always reads the API
            state.snapshot = state.datastore.snapshot()
            self._snapshot_taken.set()
            recalc = True
        facts = self._local_facts(tunnel, state.snapshot, refresh=resync)
        desired = state.desired
        if recalc or resync or desired is None:
            desired = state.desired = desired_dataplane(state.snapshot, facts)
            state.nat_desired = desired_nat(state.snapshot)
            state.policy_index.update(state.snapshot)       # only what changed since the last one
            node_policy = state.policy_index.policy
            self.policy_view.publish(node_policy)
            state.policy_desired = policynft.desired_table(node_policy, endpoint_devices(node_policy))
            self._report_problems(desired)
        with self.metrics.reconcile_seconds.time():
            # devices, VXLAN neighbours and FDB entries first: a route through vxlan.calico
            # carries nothing until its VTEP's entries are there
            try:
                tunnel.apply(desired.tunnel, self._loop.clock.now())
            except OSError as exc:
                self.metrics.errors.labels("tunnel").inc()
                self._log.error("tunnel update failed", error=str(exc), reason=desired.tunnel.reason)
            try:
                state.vxlan.apply(desired.vxlan, self._loop.clock.now())
            except OSError as exc:
                self.metrics.errors.labels("vxlan").inc()
                self._log.error("VXLAN update failed", error=str(exc), reason=desired.vxlan.reason)
            routes.reconcile(desired.routes, desired.reasons, desired.settling_devices, self._loop.clock.now())
            state.vtep.sync(state.snapshot.nodes.get(cfg.nodename), state.vxlan.annotations)
            state.nat.reconcile(state.nat_desired, reread=resync)    # a resync re-reads the NAT table
            state.policy.reconcile(state.policy_desired, reread=resync)
            state.mtu_file.write(desired.pod_mtu)
        if not self._ready:
            self._ready = True
            self._log.info("felix ready: first full sync done", routes=len(desired.routes))
        self._loop.wake_at(TEARDOWN_TIMER, tunnel.teardown_at)
        self._loop.wake_at(RELEASE_TIMER, routes.release_at)
        self._loop.wake_at(VXLAN_TEARDOWN_TIMER, state.vxlan.teardown_at)
        if state.vtep.retry_wanted:
            self._loop.wake_at(VTEP_RETRY_TIMER, self._loop.clock.now() + VTEP_RETRY_DELAY)

    def _cni_chores(self, stop: threading.Event) -> list[threading.Thread]:
        cfg = self.config
        chores = []
        if cfg.cni_kubeconfig:
            refresher = cni_token.KubeconfigRefresher(cfg.cni_kubeconfig, service_account_dir=cfg.cni_token_dir)
            chores.append(threading.Thread(target=refresher.run, args=(stop,), name="cni-token", daemon=True))
        if cfg.ipam_gc_interval > 0:
            collector = cni_gc.GarbageCollector(cni_blocks.Api(self._api), node_grace=cfg.ipam_gc_node_grace)
            chores.append(threading.Thread(target=collector.run, args=(stop, cfg.nodename, cfg.ipam_gc_interval),
                                           name="ipam-gc", daemon=True))
            leaks = cni_leakgc.LeakCollector(cni_blocks.Api(kube_client.clone(self._api)), cfg.nodename,
                                             cni_ipam.AddressStore(str(cfg.run_dir)), leak_grace=cfg.ipam_gc_leak_grace)
            chores.append(threading.Thread(target=leaks.run, args=(stop, cfg.ipam_gc_interval),
                                           name="ipam-leak-gc", daemon=True))
        return chores

    # --- local facts, problems, MTU file -------------------------------------------------

    def _local_facts(self, tunnel: TunnelManager, snapshot: model.Snapshot, refresh: bool) -> LocalFacts:
        node = snapshot.nodes.get(self.config.nodename)
        address = model.node_address(node) if node is not None else None
        underlay = tunnel.underlay(address, refresh)
        subnet = underlay.interface.network if underlay.interface is not None else None
        if node is not None and node.bgp_address is not None and node.bgp_address.network.prefixlen != 32:
            subnet = node.bgp_address.network     # the annotation's prefix decides CrossSubnet
        return LocalFacts(self.config.nodename, underlay_mtu=underlay.mtu, mtu_override=self.config.mtu,
                          subnet=subnet, underlay_device=underlay.device)

    def _report_problems(self, desired: DesiredDataplane) -> None:
        for problem in desired.problems:
            if problem not in self._problems:
                self._log.warning("input not honoured", problem=problem)
        self._problems = desired.problems
