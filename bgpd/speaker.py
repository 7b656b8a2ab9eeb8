"""The BGP speaker of one node: the loop that ties bgpd's parts together.

I/O orchestration around the pure modules. One thread (:meth:`Speaker.run`) runs a
:class:`calyx.loop.Loop` named ``bgpd-speaker`` whose events come from the datastore (new
snapshots), the ExaBGP API channel (state, open, update, notification), the kernel's route and
link changes (a :class:`calyx.kernelwatch.KernelWatch`) and its timers (a one-second tick for
graceful-restart timers, hold-downs and MD5 counters; the end of an IPIP settle delay; a full
read of the kernel's routes every ``route_refresh_interval``). Each concern has its own module:
sessions and the Adj-RIB-In (:mod:`bgpd.sessions`), best path, export and install decisions for
what changed (:mod:`bgpd.propagation`), the IPIP settle delay (:mod:`bgpd.settling`), kernel
routes (:mod:`bgpd.installer`), MD5 hints (:mod:`bgpd.md5`) and the operator's views
(:mod:`bgpd.status`). After each batch the speaker reconciles: ExaBGP's configuration (reloaded
only when the peer set changed), what changed for each established peer, and the kernel routes
whose decision changed. Status and route listings are served under a lock. The loop ticks its
own heartbeat, so a speaker stuck in an iteration fails ``/livez``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any, Callable

from calyx.kernelwatch import KernelResyncWanted, KernelWatch
from calyx.loop import Batch, Clock, Event, Loop, MonotonicClock
from calyx.model import Snapshot, node_pod_cidrs, node_tunnel_address
from calyx.logs import get_logger
from calyx.observability import Liveness

from bgpd import importer
from bgpd import status as status_view
from bgpd.bfd.service import BFD_EVENTS, Bfd
from bgpd.exabgp import config as exaconfig
from bgpd.exabgp import messages as msg
from bgpd.exabgp.process import ExaBGPProcess, bridge_argv
from bgpd.endofrib import EndOfRibRule
from bgpd.export import ExportPolicy, exportable_pools, own_prefixes
from bgpd.installer import Installer
from bgpd.md5 import Md5Diagnosis, read_md5_counters
from bgpd.metrics import SpeakerMetrics
from bgpd.peers import LocalSpeaker, PeerSetError, local_speaker, nodes_without_address, peer_set
from bgpd.propagation import Propagation
from bgpd.rib import Rib
from bgpd.services import ServiceAdvertisement, service_advertisement
from bgpd.sessions import Actions, Sessions
from bgpd.settling import Settling

log = get_logger("bgpd.speaker")

TICK_TIMER = "tick"
SETTLE_TIMER = "ipip-settle"
RESYNC_TIMER = "route-resync"
TICK_INTERVAL = 1.0
HEARTBEAT_MAX_AGE = 30.0
MAX_BATCH = 5000
SERVICE_LOG_DETAIL = 20     # more Service /32s changing at once are logged as one line

@dataclass(frozen=True)
class SnapshotChanged(Event):
    snapshot: Snapshot


@dataclass(frozen=True)
class ExaBGPLine(Event):
    """One line from ExaBGP's API channel."""

    line: str


@dataclass(frozen=True)
class ExaBGPConnected(Event):
    """ExaBGP's API channel (re)connected."""


@dataclass(frozen=True)
class ExaBGPExited(Event):
    code: int


@dataclass(frozen=True)
class SpeakerSettings:
    node: str
    namespace: str = "calyx-system"
    run_dir: Path = Path("/var/run/calyx")
    max_prefixes: int | None = 10000          # per peer; exceeded -> cease NOTIFICATION
    graceful_restart: int = exaconfig.DEFAULT_GRACEFUL_RESTART
    max_prefix_hold_down: float = 300.0       # seconds a peer stays down after exceeding max_prefixes
    ipip_enable_delay: float = 5.0            # seconds before installed direct routes move to IPIP
    netns: str | None = None                  # run ExaBGP and netlink in this namespace
    exabgp_bin: str | None = None
    route_refresh_interval: float = 90.0      # seconds between full reads of the kernel's routes
    bfdd_bin: str = "/usr/lib/frr/bfdd"       # FRR's BFD daemon, run while some peer wants BFD


class Speaker:
    def __init__(self, settings: SpeakerSettings, table: Any, metrics: SpeakerMetrics,
                 clock: Callable[[], float] = time.time, liveness: Liveness | None = None,
                 loop_clock: Clock | None = None, kernel_watch: KernelWatch | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._loop = Loop("bgpd-speaker", self._iterate, clock=loop_clock or MonotonicClock(),
                          max_batch=MAX_BATCH, heartbeat_max_age=HEARTBEAT_MAX_AGE, idle_tick=TICK_INTERVAL,
                          liveness=liveness)
        self._loop.every(TICK_TIMER, TICK_INTERVAL)
        self._loop.every(RESYNC_TIMER, settings.route_refresh_interval)
        self._kernel_watch = kernel_watch
        self._lock = threading.RLock()
        self._metrics = metrics
        self._table = table
        self._installer = Installer(table, table.route_to)
        self._sessions = Sessions(Rib(), clock, settings.max_prefixes, settings.max_prefix_hold_down)
        self._snapshot: Snapshot | None = None
        self._local: LocalSpeaker | None = None
        self._ctx: importer.ImportContext | None = None
        self._policy: ExportPolicy | None = None
        self._services = ServiceAdvertisement()
        self._propagation = Propagation()
        self._settling = Settling(settings.ipip_enable_delay)
        self._end_of_rib = EndOfRibRule(deferral=settings.graceful_restart / 2)
        self._started = clock()
        self._adoption_done = False
        self._md5 = Md5Diagnosis()
        self._addressless: frozenset[str] = frozenset()    # other nodes reported without a BGP address
        self.error: str | None = None
        self.ready = False
        work = settings.run_dir / "bgpd"
        self._exabgp = ExaBGPProcess(
            work, on_line=lambda line: self._loop.post(ExaBGPLine(line)),
            on_connected=lambda: self._loop.post(ExaBGPConnected()),
            on_exit=lambda code: self._loop.post(ExaBGPExited(code)),
            exabgp_bin=settings.exabgp_bin, netns=settings.netns)
        self._bfd = Bfd(work / "bfd", self._loop.post, netns=settings.netns, bfdd_bin=settings.bfdd_bin)
        self._thread: threading.Thread | None = None

    # --- inputs ---------------------------------------------------------------------------

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self._loop.post(SnapshotChanged(snapshot))

    def start(self) -> "Speaker":
        if self._kernel_watch is not None:
            self._kernel_watch.start(self._loop.post)
            self._loop.post(KernelResyncWanted())   # what changed before the watch started
        self._thread = threading.Thread(target=self.run, name=f"bgpd-{self.settings.node}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._loop.stop()
        if self._thread is not None:
            self._thread.join(15)
        if self._kernel_watch is not None:
            self._kernel_watch.stop()
        self._exabgp.stop()
        self._bfd.stop()

    @property
    def exabgp(self) -> ExaBGPProcess:
        return self._exabgp

    @property
    def metrics(self) -> SpeakerMetrics:
        return self._metrics

    @property
    def loop(self) -> Loop:
        return self._loop

    # --- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        self._loop.run()

    def _iterate(self, batch: Batch) -> None:
        with self._lock:
            kernel = self._installer.absorb(batch.events)
            if kernel.resync_wanted or batch.fired(RESYNC_TIMER):
                self._installer.resync()
            snapshot = None
            for event in batch.events:
                if isinstance(event, SnapshotChanged):
                    snapshot = event.snapshot
                else:
                    self._handle(event)
            if snapshot is not None:
                self._apply_snapshot(snapshot)
            if batch.fired(TICK_TIMER):
                self._tick()
            try:
                self._bfd.reconcile()
                self._reconcile()
            except Exception as exc:   # keep serving; what is programmed stays
                log.error("reconcile_failed", exc_info=True, error=str(exc))
            # The IPIP settle delay ends at a time of the speaker's clock; the loop's timer counts
            # on the loop's clock.
            wake_at = self._settling.wake_at
            self._loop.wake_at(SETTLE_TIMER, None if wake_at is None
                               else self._loop.clock.now() + max(0.0, wake_at - self._clock()))

    def _handle(self, received: Event) -> None:
        if isinstance(received, ExaBGPConnected):
            self._sessions.exabgp_connected()
        elif isinstance(received, ExaBGPExited):
            self._sessions.exabgp_exited(received.code)
            # Our speaking process restarts: what it learned stays in the kernel while the
            # sessions re-learn it, as after a restart of bgpd itself.
            self._installer.retain_installed()
            self._started, self._adoption_done = self._clock(), False
            log.info("adoption_window_opened", reason="ExaBGP exited", retained_routes=len(self._installer.installed))
        elif isinstance(received, BFD_EVENTS):
            dead = self._bfd.handle(received)
            if dead is not None:
                self._metrics.bfd_teardowns.inc()
                self._perform(self._sessions.peer_dead(dead.peer, dead.reason))
        elif isinstance(received, ExaBGPLine):
            try:
                event = msg.parse_line(received.line)
            except msg.MessageError as exc:
                log.warning("exabgp_message_invalid", error=str(exc))
                return
            if isinstance(event, msg.Ack):
                if not event.ok:
                    self._metrics.api_errors.inc()
                    log.warning("exabgp_command_refused")
            elif event is not None:
                self._perform(self._sessions.handle(event))

    def _perform(self, actions: Actions) -> None:
        if actions.lines:
            self._exabgp.send(actions.lines)
        if actions.max_prefix_teardowns:
            self._metrics.max_prefix_teardowns.inc(actions.max_prefix_teardowns)
        if actions.rewrite_config:
            self._write_config(force=actions.force_config)

    # --- snapshot -> peers / policy -----------------------------------------------------

    def _complete_local_prefix(self, snapshot: Snapshot) -> Snapshot:
        """A prefix-less own address (InternalIP) takes the prefix of the interface holding it."""
        node = snapshot.nodes.get(self.settings.node)
        if node is None or node.bgp_address is None or node.bgp_address.network.prefixlen != 32:
            return snapshot
        prefix = self._table.interface_prefix(node.bgp_address.ip)
        if prefix is None or prefix == 32:
            return snapshot
        nodes = dict(snapshot.nodes)
        nodes[node.name] = replace(node, bgp_address=IPv4Interface(f"{node.bgp_address.ip}/{prefix}"))
        return replace(snapshot, nodes=nodes)

    def _apply_snapshot(self, snapshot: Snapshot) -> None:
        snapshot = self._complete_local_prefix(snapshot)
        self._snapshot = snapshot
        name = self.settings.node
        try:
            local = local_speaker(snapshot, name)
            peers = peer_set(snapshot, name, self.settings.namespace)
        except (PeerSetError, ValueError) as exc:
            if self.error != str(exc):
                log.error("peer_set_invalid", error=str(exc))
            self.error = str(exc)
            return     # keep the last good configuration: nothing programmed is lost
        self.error = None
        self._report_nodes_without_address(snapshot)
        node = snapshot.nodes[name]
        own_networks = list(node_pod_cidrs(node, snapshot.blocks))
        tunnel = node_tunnel_address(node, snapshot.blocks)
        if tunnel is not None:
            own_networks.append(IPv4Network(f"{tunnel}/32"))
        local_if = node.bgp_address if node.bgp_address is not None else IPv4Interface(f"{local.address}/32")
        others = frozenset(n.bgp_address.ip for n in snapshot.nodes.values()
                           if n.bgp_address is not None and n.name != name)
        ctx = importer.ImportContext(local=local_if, own_networks=tuple(own_networks),
                                     pools=dict(snapshot.ippools), cluster_next_hops=others)
        services = service_advertisement(snapshot, name)
        self._log_service_changes(services)
        policy = ExportPolicy(local, peers, frozenset(own_prefixes(snapshot, name)),
                              services.prefixes, frozenset(exportable_pools(snapshot)))
        if local != self._local or peers != self._sessions.peers():
            self._sessions.set_peers(peers)
            self._bfd.set_peers(peers)
            self._local = local
            self._write_config()
        if (policy, ctx) == (self._policy, self._ctx):
            return      # nothing this node's routing depends on changed (another node's pods, ...)
        previous = self._policy
        if previous is not None and ctx == self._ctx and \
                replace(previous, own=policy.own, services=policy.services) == policy:
            # Only what this node originates changed (a Service endpoint came or went): announce
            # or withdraw those prefixes alone; nothing received needs judging again.
            self._policy = policy
            self._sessions.dirty.touch(previous.originated() ^ policy.originated())
            return
        self._local, self._ctx, self._policy = local, ctx, policy
        # Policy changed (pools, own CIDRs, peers): everything received is judged again.
        self._sessions.set_import_policy(local, ctx)

    def _report_nodes_without_address(self, snapshot: Snapshot) -> None:
        """Log each other node that gets no session for want of a BGP address, once, and when it
        has one again."""
        missing = nodes_without_address(snapshot, self.settings.node)
        for other in sorted(missing.keys() - self._addressless):
            log.warning("node_without_address", node=other, error=missing[other])
        for other in sorted(self._addressless - missing.keys()):
            if other in snapshot.nodes:
                log.info("node_address_found", node=other, why="it can be peered with now")
        self._addressless = frozenset(missing)

    def _log_service_changes(self, services: ServiceAdvertisement) -> None:
        """Log each Service /32 this node starts or stops originating, naming the Services (one
        summary line when many change at once, as at start)."""
        before, after = self._services.addresses, services.addresses
        for event, prefixes, owners, why in (
                ("service_address_advertised", sorted(set(after) - set(before)), after,
                 "ready local endpoint, or a single-address range entry"),
                ("service_address_withdrawn", sorted(set(before) - set(after)), before,
                 "no ready local endpoint any more, or the Service or its address is gone")):
            if len(prefixes) > SERVICE_LOG_DETAIL:
                log.info(event, count=len(prefixes), first=[str(p) for p in prefixes[:SERVICE_LOG_DETAIL]], why=why)
                continue
            for prefix in prefixes:
                log.info(event, prefix=str(prefix), services=["/".join(key) for key in owners[prefix]], why=why)
        if services.ranges != self._services.ranges:
            log.info("service_ranges", ranges=[str(r) for r in sorted(services.ranges)])
        self._services = services

    def _write_config(self, force: bool = False) -> None:
        local = self._local
        if local is None:
            return
        settings = exaconfig.ExaBGPSettings(bridge_argv=bridge_argv(self._exabgp.socket_path),
                                            listen_port=self._snapshot.bgp_configuration.listen_port
                                            if self._snapshot else 179,
                                            graceful_restart=self.settings.graceful_restart)
        peers = self._sessions.config_peers(self._clock())
        text = exaconfig.render(local, peers, settings)
        self._exabgp.configure(text, exaconfig.environment(local, settings), force=force)

    # --- timers -----------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self._clock()
        self._perform(self._sessions.tick())
        self._md5.observe(read_md5_counters(self._exabgp.pid))
        for s in self._sessions.table.values():
            hint = None if s.established else self._md5.hint(s.peer.password is not None)
            if hint is not None:
                s.md5_hint = hint
        if not self._adoption_done and (now - self._started >= self.settings.graceful_restart
                                        or self._sessions.all_up_with_end_of_rib()):
            self._adoption_done = True
            log.info("adoption_window_closed", stale_routes_removable=True)

    # --- outputs ----------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Send each peer what changed for it, and install what changed; the work follows what
        the events of this batch touched (:mod:`bgpd.propagation`)."""
        if self._local is None or self._policy is None:
            return
        sessions = self._sessions
        announced = {a: s.announced for a, s in sessions.table.items()}
        changes = self._propagation.compute(sessions.rib, sessions.table.keys(), self._policy, self._ctx,
                                            sessions.established(), announced, sessions.take_dirty())
        lines = msg.update_lines({a: c.announce for a, c in changes.peers.items()},
                                 {a: c.withdraw for a, c in changes.peers.items()})
        if lines:
            if self._exabgp.send(lines):
                for address, change in changes.peers.items():
                    s = sessions[address]
                    s.announced = change.applied_to(s.announced)
            else:
                sessions.dirty.peers.update(changes.peers)    # sent again once the channel is back
        self._send_end_of_rib()
        installs, newly = self._settling.update(self._propagation.decisions,
                                                None if changes.full else changes.decisions,
                                                self._installed_state, self._clock())
        if newly:
            log.info("ipip_move_delayed", prefixes=len(newly), first=str(newly[0]),
                     delay_seconds=self.settings.ipip_enable_delay,
                     why="peers' felix may not have raised tunl0 yet")
        result = self._installer.sync(self._settling.decisions, remove_stale=self._adoption_done,
                                      changed=None if changes.full else installs)
        if result.writes:
            self._metrics.route_writes.inc(result.writes)
        if result.errors:
            self._metrics.install_errors.inc(len(result.errors))
        self.ready = self._exabgp.connected
        self._metrics.observe(self._sessions_status())

    def _send_end_of_rib(self) -> None:
        """End-of-RIB to the peers that now have everything from us (:mod:`bgpd.endofrib`)."""
        sessions, policy = self._sessions, self._policy
        assert policy is not None
        due = self._end_of_rib.due(sessions.table, sessions.dirty.peers, policy.passes_learned, self._clock())
        if due and self._exabgp.send([msg.end_of_rib_line(due)]):
            for address in due:
                sessions[address].eor_sent = True
            log.info("end_of_rib_sent", peers=[str(a) for a in due],
                     why="the whole Adj-RIB-Out of these sessions is handed to ExaBGP")

    def _installed_state(self, prefix: IPv4Network) -> importer.Installed | None:
        """How ``prefix`` is routed in the kernel now, for the IPIP settle delay."""
        route = self._installer.installed.get(prefix)
        if route is None:
            if self._installer.carried_by_felix(prefix):
                return importer.Installed(mode=importer.InstallMode.VXLAN, next_hop=None)
            return None
        previous = self._settling.decisions.get(prefix)
        known = previous is not None and prefix not in self._installer.errors
        return importer.Installed(
            mode=importer.InstallMode.IPIP if route.dev == self._installer.tunnel_device
            else importer.InstallMode.DIRECT,
            next_hop=previous.next_hop if known else None)

    def _sessions_status(self) -> list[dict[str, Any]]:
        return status_view.session_rows(self._sessions.table, self._sessions.rib, self._bfd.state, self._bfd.info)

    def status(self) -> dict[str, Any]:
        with self._lock:
            shown = status_view.status(self.settings.node, self._local, self.error, self._exabgp.pid,
                                       self._exabgp.restarts, self._sessions_status())
            shown["bfdd_pid"] = self._bfd.pid
            return shown

    def routes(self) -> dict[str, Any]:
        with self._lock:
            return status_view.routes(self._sessions.table, self._sessions.verdict, self._settling.decisions,
                                      self._installer.installed, self._installer.errors, self._clock())
