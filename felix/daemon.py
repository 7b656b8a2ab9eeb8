"""felix's wiring and main loop: datastore -> calculation -> dataplane managers.

The main loop sleeps until something happens (a datastore change, a link or route event, the
periodic resync timer, the end of a tunnel teardown grace, stop), gathers a burst of such
wake-ups for ``debounce`` seconds, and reconciles: desired state is recalculated when the datastore
changed, the kernel's state comes from the route manager's view (a full dump at start and every
``route_refresh_interval``, netlink events in between), and only differences are written.
Nothing is programmed before every watched resource has been listed once, and while the API is
unreachable the datastore keeps its last contents, so the dataplane stays as it is. On stop
felix leaves the dataplane untouched.

Two background chores for the CNI plugin run beside the loop when configured: keeping its
kubeconfig's token fresh (``cni_kubeconfig``) and IPAM block garbage collection
(``ipam_gc_interval``; see :mod:`calyx.cni.gc`).
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import kubernetes.client
from prometheus_client import CollectorRegistry

from calyx import model
from calyx.cni import blocks as cni_blocks
from calyx.cni import gc as cni_gc
from calyx.cni import token as cni_token
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyx.kube.datastore import Datastore, WatchSpec
from calyx.kube.events import EventRecorder
from calyx.naming import MTU_FILE, TUNNEL_DEVICE
from calyx.netlink import LinkMonitor, RouteMonitor, RouteTable
from calyx.observability import Check, HealthServer, Heartbeat, get_logger
from calyx.route import Route
from felix.calc import DesiredDataplane, LocalFacts, TunnelPlan, TunnelSpec, desired_dataplane, plan_tunnel
from felix.config import FelixConfig
from felix.dataplane.routes import RouteManager
from felix.dataplane.tunnel import TunnelManager
from felix.metrics import FelixMetrics

HEARTBEAT_PERIOD = 10.0      # the main loop wakes at least this often to prove it is alive
DEFAULT_UNDERLAY_MTU = 1500


@dataclass(frozen=True)
class _LinkEvent:
    name: str
    present: bool


@dataclass(frozen=True)
class _RouteEvent:
    route: Route
    present: bool


class _Overflow:
    """Events were lost: the next pass re-reads the kernel."""


def watch_specs(node_name: str) -> list[WatchSpec]:
    return [
        WatchSpec(resources.PODS, field_selector=f"spec.nodeName={node_name}"),
        WatchSpec(resources.NODES),
        WatchSpec(resources.IPPOOLS),
        WatchSpec(resources.IPAMBLOCKS),
    ]


class Felix:
    """One node agent. :meth:`run` blocks until :meth:`stop` is called (from any thread or a
    signal handler)."""

    def __init__(self, config: FelixConfig, api: kubernetes.client.ApiClient | None = None):
        self.config = config
        self.registry = CollectorRegistry()
        self.metrics = FelixMetrics.create(self.registry)
        self._log = get_logger("felix")
        self._api = api or kube_client.load(config.kubeconfig)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._api_changed = threading.Event()
        self._snapshot_taken = threading.Event()
        self._ready = False
        self._heartbeat = Heartbeat(max_age=6 * HEARTBEAT_PERIOD)
        self._underlay: tuple[IPv4Address | None, int] | None = None
        self._problems: tuple[str, ...] = ()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # --- health --------------------------------------------------------------------------

    def readiness(self) -> Check:
        if self._ready:
            return Check(True, "")
        return Check(False, "waiting for the first full sync of datastore and dataplane")

    # --- event intake (monitor threads) --------------------------------------------------

    def _on_link(self, name: str, _index: int, present: bool) -> None:
        self._events.put(_Overflow() if not name else _LinkEvent(name, present))
        self._wake.set()

    def _on_route(self, route: Route | None, present: bool) -> None:
        self._events.put(_Overflow() if route is None else _RouteEvent(route, present))
        self._wake.set()

    def _watch_datastore(self, datastore: Datastore, stop: threading.Event) -> None:
        while not stop.is_set():
            if datastore.wait_for_change(1.0):
                self._api_changed.set()
                self._wake.set()
                self._snapshot_taken.wait(1.0)
                self._snapshot_taken.clear()

    # --- main loop -----------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.config
        stop = self._stop
        events = EventRecorder(self._api, component="felix", host=cfg.nodename)
        datastore = Datastore(self._api, watch_specs(cfg.nodename), events=events, namespace=cfg.namespace,
                              registry=self.registry)
        servers = [HealthServer(cfg.health_host, cfg.health_port, self.registry, liveness=self._heartbeat,
                                readiness=self.readiness)]
        if cfg.metrics_port is not None and cfg.metrics_port != cfg.health_port:
            servers.append(HealthServer(cfg.health_host, cfg.metrics_port, self.registry,
                                        liveness=self._heartbeat, readiness=self.readiness))
        table = RouteTable()
        routes = RouteManager(table, self.metrics)
        tunnel = TunnelManager(table, self.metrics)
        monitors = [LinkMonitor(self._on_link), RouteMonitor(self._on_route)]
        watcher = threading.Thread(target=self._watch_datastore, args=(datastore, stop), name="datastore-watch",
                                   daemon=True)
        chores = self._cni_chores(stop)
        self._log.info("felix starting", node=cfg.nodename, route_refresh_interval=cfg.route_refresh_interval,
                       mtu_override=cfg.mtu, run_dir=str(cfg.run_dir))
        try:
            for server in servers:
                server.start()
            for monitor in monitors:    # subscribed before the first dump: no change goes unseen
                monitor.start()
            datastore.start()
            watcher.start()
            for chore in chores:
                chore.start()
            tunnel.probe()
            while not stop.is_set() and not datastore.wait_synced(timeout=1.0):
                self._heartbeat.tick()
            if not stop.is_set():
                self._log.info("datastore synced", node=cfg.nodename)
                self._loop(stop, datastore, table, routes, tunnel)
        finally:
            self._wake.set()
            datastore.stop(timeout=1.0)     # reflector threads are daemons: no need to wait long
            for monitor in monitors:
                monitor.stop()
            for server in servers:
                server.stop()
            table.close()
            self._log.info("felix stopped; dataplane left as it is", node=cfg.nodename)

    def _loop(self, stop: threading.Event, datastore: Datastore, table: RouteTable, routes: RouteManager,
              tunnel: TunnelManager) -> None:
        cfg = self.config
        next_resync = 0.0
        snapshot = model.Snapshot()
        desired: DesiredDataplane | None = None
        plan = TunnelPlan(None)
        while not stop.is_set():
            started = time.monotonic()
            resync = started >= next_resync
            recalc = desired is None
            for event in self._drain():
                if isinstance(event, _Overflow):
                    resync = True
                elif isinstance(event, _LinkEvent):
                    routes.link_event(event.name, event.present)
                else:
                    routes.route_event(event.route, event.present)
            if resync:
                routes.resync()
                next_resync = started + cfg.route_refresh_interval
            if self._api_changed.is_set() or desired is None:   # the first pass always reads the API
                self._api_changed.clear()
                snapshot = datastore.snapshot()
                self._snapshot_taken.set()
                recalc = True
            facts = self._local_facts(table, snapshot, refresh=resync)
            if recalc or resync or desired is None:
                desired = desired_dataplane(snapshot, facts)
                self._report_problems(desired)
            with self.metrics.reconcile_seconds.time():
                routes.reconcile(desired.routes, desired.reasons, desired.settling_devices)
                try:
                    plan = self._reconcile_tunnel(tunnel, desired.tunnel, plan)
                except OSError as exc:
                    self.metrics.errors.labels("tunnel").inc()
                    self._log.error("tunnel update failed", error=str(exc), reason=desired.tunnel.reason)
                self._write_mtu(desired.pod_mtu)
            if not self._ready:
                self._ready = True
                self._log.info("felix ready: first full sync done", routes=len(desired.routes))
            self._heartbeat.tick()
            wake_at = min(next_resync, plan.teardown_at) if plan.teardown_at is not None else next_resync
            timeout = max(0.0, min(wake_at - time.monotonic(), HEARTBEAT_PERIOD))
            if self._wake.wait(timeout) and not stop.is_set():
                stop.wait(cfg.debounce)     # let the rest of a burst arrive
            self._wake.clear()

    def _reconcile_tunnel(self, tunnel: TunnelManager, want: TunnelSpec, previous: TunnelPlan) -> TunnelPlan:
        """Program tunl0 as :func:`plan_tunnel` decides (teardown grace); returns the new plan."""
        decapsulating = not want.enabled and tunnel.decapsulating()
        plan = plan_tunnel(want, decapsulating, previous.teardown_since, time.monotonic(),
                           self.config.ipip_teardown_grace)
        if plan.draining and not previous.draining:
            self._log.info("tunnel teardown deferred: still decapsulating for peers that have not switched yet",
                           device=TUNNEL_DEVICE, grace_seconds=self.config.ipip_teardown_grace, reason=want.reason)
        elif previous.draining and want.enabled:
            self._log.info("tunnel teardown cancelled", device=TUNNEL_DEVICE, reason=want.reason)
        if plan.spec is not None:
            tunnel.reconcile(plan.spec)
        return plan

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
        return chores

    def _drain(self) -> list:
        drained = []
        while True:
            try:
                drained.append(self._events.get_nowait())
            except queue.Empty:
                return drained

    # --- local facts, problems, MTU file -------------------------------------------------

    def _local_facts(self, table: RouteTable, snapshot: model.Snapshot, refresh: bool) -> LocalFacts:
        node = snapshot.nodes.get(self.config.nodename)
        address = None
        if node is not None:
            address = node.bgp_address.ip if node.bgp_address is not None else node.internal_ip
        if refresh or self._underlay is None or self._underlay[0] != address:
            self._underlay = (address, self._detect_underlay_mtu(table, address))
        return LocalFacts(self.config.nodename, underlay_mtu=self._underlay[1], mtu_override=self.config.mtu)

    def _detect_underlay_mtu(self, table: RouteTable, address: IPv4Address | None) -> int:
        found = table.interface_of(address) if address is not None else None
        if found is None:
            self._log.warning("underlay MTU unknown: no local interface holds the node address; assuming "
                              "the default", address=str(address) if address else None, mtu=DEFAULT_UNDERLAY_MTU)
            return DEFAULT_UNDERLAY_MTU
        link = table.link(found[0])
        return link.mtu if link is not None else DEFAULT_UNDERLAY_MTU

    def _report_problems(self, desired: DesiredDataplane) -> None:
        for problem in desired.problems:
            if problem not in self._problems:
                self._log.warning("input not honoured", problem=problem)
        self._problems = desired.problems

    def _write_mtu(self, mtu: int) -> None:
        path = Path(self.config.run_dir) / MTU_FILE
        text = f"{mtu}\n"
        try:
            if path.read_text() == text:
                return
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{MTU_FILE}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
        self._log.info("pod MTU written", path=str(path), mtu=mtu)
