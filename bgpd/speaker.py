"""The BGP speaker of one node: sessions, RIB, advertisements and installs, driven by events.

I/O orchestration around the pure modules. One thread (:meth:`Speaker.run`) runs a
:class:`calyx.loop.Loop` named ``bgpd-speaker`` whose events come from the datastore (new
snapshots), the ExaBGP API channel (state, open, update, notification) and its timers (a
one-second tick for graceful-restart timers and MD5 counters, the end of an IPIP settle delay),
the kernel's route and link changes (a :class:`calyx.kernelwatch.KernelWatch`, and a full read
every ``route_refresh_interval``); after each batch it reconciles: ExaBGP configuration (reload only when the peer set changed),
Adj-RIB-Out per established peer (only the difference is sent), kernel routes (only the
difference is written). Status and route listings are served from copies taken under a lock.
The loop ticks its own heartbeat, so a speaker stuck in an iteration fails ``/livez``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any, Callable

from calyx.kernelwatch import KernelResyncWanted, KernelWatch
from calyx.loop import Batch, Clock, Event, Loop, MonotonicClock
from calyx.model import Snapshot, node_pod_cidrs, node_tunnel_address
from calyx.observability import Liveness, get_logger

from bgpd import importer
from bgpd import status as status_view
from bgpd.exabgp import config as exaconfig
from bgpd.exabgp import messages as msg
from bgpd.exabgp.process import ExaBGPProcess, bridge_argv
from bgpd.export import ExportPolicy, own_prefixes, service_prefixes
from bgpd.installer import Installer
from bgpd.md5 import Md5Diagnosis, read_md5_counters
from bgpd.metrics import SpeakerMetrics
from bgpd.peers import LocalSpeaker, Peer, PeerSetError, local_speaker, peer_set
from bgpd.propagation import Dirty, Propagation
from bgpd.rib import Path as BgpPath, Rib, loop_reason
from bgpd.session import Session, describe_notification
from bgpd.settling import Settling

log = get_logger("bgpd.speaker")

TICK_TIMER = "tick"
SETTLE_TIMER = "ipip-settle"
RESYNC_TIMER = "route-resync"
TICK_INTERVAL = 1.0
HEARTBEAT_MAX_AGE = 30.0
MAX_BATCH = 5000

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
        self._rib = Rib()
        self._sessions: dict[IPv4Address, Session] = {}
        self._snapshot: Snapshot | None = None
        self._local: LocalSpeaker | None = None
        self._ctx: importer.ImportContext | None = None
        self._policy: ExportPolicy | None = None
        self._propagation = Propagation()
        self._settling = Settling(settings.ipip_enable_delay)
        self._dirty = Dirty()
        self._started = clock()
        self._adoption_done = False
        self._md5 = Md5Diagnosis()
        self._pending_acks = 0
        self.error: str | None = None
        self.ready = False
        work = settings.run_dir / "bgpd"
        self._exabgp = ExaBGPProcess(
            work, on_line=lambda line: self._loop.post(ExaBGPLine(line)),
            on_connected=lambda: self._loop.post(ExaBGPConnected()),
            on_exit=lambda code: self._loop.post(ExaBGPExited(code)),
            exabgp_bin=settings.exabgp_bin, netns=settings.netns)
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
            for s in self._sessions.values():
                s.announced = {}
            self._dirty.peers.update(self._sessions)
            return
        if isinstance(received, ExaBGPExited):
            for address, s in self._sessions.items():
                self._session_down(address, s, f"ExaBGP exited with code {received.code}; restarting")
            return
        if not isinstance(received, ExaBGPLine):
            return
        try:
            event = msg.parse_line(received.line)
        except msg.MessageError as exc:
            log.warning("exabgp_message_invalid", error=str(exc))
            return
        if event is None:
            return
        if isinstance(event, msg.Ack):
            if not event.ok:
                self._metrics.api_errors.inc()
                log.warning("exabgp_command_refused")
            return
        s = self._sessions.get(event.peer)
        if s is None:
            return
        if isinstance(event, msg.StateEvent):
            if event.state == "up" and s.held_until is not None:
                # Held down for max-prefix but ExaBGP reconnected: close it again and make sure
                # the neighbor is out of ExaBGP's configuration.
                self._exabgp.send([msg.teardown_line(event.peer, msg.CEASE_MAX_PREFIXES)])
                self._write_config(force=True)
            elif event.state == "up":
                s.state, s.since, s.info, s.md5_hint = "Established", self._clock(), "", ""
                s.eor, s.refreshed, s.announced = False, set(), {}
                self._dirty.peers.add(event.peer)
                log.info("session_established", peer=str(event.peer), type=s.peer.peer_type.value)
            elif event.state == "connected":
                if s.state != "Established":
                    s.state = "Connect"
            elif event.state == "down":
                self._session_down(event.peer, s, event.reason)
                if s.held_until is not None and s.held_in_config:
                    self._write_config()     # out of ExaBGP's configuration before it reconnects
        elif isinstance(event, msg.OpenEvent):
            s.router_id = event.router_id
            s.peer_restart_time = event.graceful_restart
        elif isinstance(event, msg.NotificationEvent):
            what = describe_notification(event.code, event.subcode)
            s.info = f"NOTIFICATION {event.direction}: {what}"
            log.warning("bgp_notification", peer=str(event.peer), direction=event.direction,
                        code=event.code, subcode=event.subcode)
        elif isinstance(event, msg.UpdateEvent):
            self._update(event, s)

    def _session_down(self, address: IPv4Address, s: Session, reason: str) -> None:
        was_up = s.state == "Established"
        s.state, s.announced = "Active", {}
        if reason and s.held_until is None:
            s.info = s.info if s.info.startswith("NOTIFICATION") and reason == "closing connection" else reason
        if was_up:
            s.since = self._clock()
            log.info("session_down", peer=str(address), reason=reason)
        restart = s.peer_restart_time or 0
        if was_up and restart > 0 and s.received:
            s.stale_until = self._clock() + restart
            log.info("graceful_restart_helper", peer=str(address), keep_seconds=restart)
        elif s.stale_until is None:
            self._forget_peer(address, s)

    def _forget_peer(self, address: IPv4Address, s: Session) -> None:
        s.received.clear()
        s.refreshed.clear()
        s.stale_until = None
        self._dirty.touch(self._rib.drop_peer(address))

    def _update(self, event: msg.UpdateEvent, s: Session) -> None:
        peer = s.peer
        if s.held_until is not None:
            return      # torn down for max-prefix; what it still sends is ignored
        if event.end_of_rib:
            s.eor = True
            if s.stale_until is not None:
                for prefix in s.stale_prefixes():
                    del s.received[prefix]
                    self._rib.withdraw(peer.address, prefix)
                    self._dirty.prefixes.add(prefix)
                s.stale_until = None
            return
        for prefix in event.withdrawn:
            s.received.pop(prefix, None)
            s.refreshed.discard(prefix)
            self._rib.withdraw(peer.address, prefix)
            self._dirty.prefixes.add(prefix)
        router_id = s.router_id or peer.address
        for prefix, attrs in event.announced:
            path = BgpPath(prefix=prefix, attrs=attrs, peer=peer.address, peer_router_id=router_id,
                           ebgp=peer.ebgp, peer_as=peer.peer_as)
            s.received[prefix] = path
            s.refreshed.add(prefix)
            self._consider(s, path)
        limit = self.settings.max_prefixes
        if importer.max_prefix_exceeded(len(s.received), limit):
            count = len(s.received)
            log.error("max_prefixes_exceeded", peer=str(peer.address), received=count, limit=limit)
            self._exabgp.send([msg.teardown_line(peer.address, msg.CEASE_MAX_PREFIXES)])
            self._forget_peer(peer.address, s)
            s.held_until = self._clock() + self.settings.max_prefix_hold_down
            s.held_in_config = True     # removed from ExaBGP's configuration at the next tick
            s.info = (f"maximum prefixes exceeded ({count} > {limit}); session torn down, held down "
                      f"for {int(self.settings.max_prefix_hold_down)}s")
            self._metrics.max_prefix_teardowns.inc()

    def _verdict(self, s: Session, path: BgpPath) -> str | None:
        local, ctx = self._local, self._ctx
        if local is None or ctx is None:
            return "bgpd is not configured yet"
        why = loop_reason(path.attrs, local.router_id, local.cluster_id, local.as_number, path.ebgp)
        if why is not None:
            return why
        return importer.refusal(path, s.peer.is_cluster_node, ctx)

    def _consider(self, s: Session, path: BgpPath) -> None:
        if self._verdict(s, path) is None:
            changed = self._rib.update(path)
        else:
            changed = self._rib.withdraw(path.peer, path.prefix)
        if changed:
            self._dirty.prefixes.add(path.prefix)

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
        policy = ExportPolicy(local, peers, frozenset(own_prefixes(snapshot, name)),
                              frozenset(service_prefixes(snapshot)))
        if local != self._local or peers != {a: s.peer for a, s in self._sessions.items()}:
            self._set_peers(local, peers)
        if (policy, ctx) == (self._policy, self._ctx):
            return      # nothing this node's routing depends on changed (another node's pods, ...)
        self._local, self._ctx, self._policy = local, ctx, policy
        # Policy changed (pools, own CIDRs, peers): re-evaluate everything received.
        self._dirty.everything = True
        for s in self._sessions.values():
            for path in s.received.values():
                self._consider(s, path)

    def _set_peers(self, local: LocalSpeaker, peers: dict[IPv4Address, Peer]) -> None:
        for address in list(self._sessions):
            if address not in peers:
                log.info("peer_removed", peer=str(address))
                self._dirty.touch(self._rib.drop_peer(address))
                del self._sessions[address]
        for address, peer in peers.items():
            s = self._sessions.get(address)
            if s is None:
                self._sessions[address] = Session(peer=peer, since=self._clock(),
                                                   info=peer.error or "")
                log.info("peer_added", peer=str(address), type=peer.peer_type.value, source=peer.source,
                         asn=peer.peer_as)
            else:
                s.peer = replace(peer)
                if peer.error:
                    s.info = peer.error
                    s.state = "Idle"
        self._local = local
        self._write_config()

    def _write_config(self, force: bool = False) -> None:
        local = self._local
        if local is None:
            return
        settings = exaconfig.ExaBGPSettings(bridge_argv=bridge_argv(self._exabgp.socket_path),
                                            listen_port=self._snapshot.bgp_configuration.listen_port
                                            if self._snapshot else 179,
                                            graceful_restart=self.settings.graceful_restart)
        now = self._clock()
        peers = {a: s.peer for a, s in self._sessions.items() if s.held_until is None or s.held_until <= now}
        for s in self._sessions.values():
            s.held_in_config = s.peer.address in peers
        text = exaconfig.render(local, peers, settings)
        self._exabgp.configure(text, exaconfig.environment(local, settings), force=force)

    # --- timers -----------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self._clock()
        rewrite = False
        for s in self._sessions.values():
            if s.held_until is not None and s.held_until <= now:
                log.info("max_prefix_hold_down_over", peer=str(s.peer.address))
                s.held_until, s.info = None, ""
                rewrite = True
            elif s.held_until is not None and s.held_in_config:
                rewrite = True
        if rewrite:
            self._write_config()
        for address, s in self._sessions.items():
            if s.stale_until is not None and now >= s.stale_until and s.state != "Established":
                log.info("graceful_restart_expired", peer=str(address))
                self._forget_peer(address, s)
            elif s.stale_until is not None and now >= s.stale_until:
                for prefix in s.stale_prefixes():
                    del s.received[prefix]
                    self._rib.withdraw(address, prefix)
                    self._dirty.prefixes.add(prefix)
                s.stale_until = None
        self._md5.observe(read_md5_counters(self._exabgp.pid))
        for s in self._sessions.values():
            hint = None if s.established else self._md5.hint(s.peer.password is not None)
            if hint is not None:
                s.md5_hint = hint
        if not self._adoption_done:
            configured = [s for s in self._sessions.values() if s.peer.error is None]
            if now - self._started >= self.settings.graceful_restart or (
                    configured and all(s.state == "Established" and s.eor for s in configured)):
                self._adoption_done = True
                log.info("adoption_window_closed", stale_routes_removable=True)

    # --- outputs ----------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Send each peer what changed for it, and install what changed; the work follows what
        the events of this batch touched (:mod:`bgpd.propagation`)."""
        if self._local is None or self._policy is None:
            return
        dirty, self._dirty = self._dirty, Dirty(everything=False)
        established = {a for a, s in self._sessions.items() if s.state == "Established"}
        announced = {a: s.announced for a, s in self._sessions.items()}
        changes = self._propagation.compute(self._rib, self._sessions.keys(), self._policy, self._ctx,
                                            established, announced, dirty)
        lines: list[str] = []
        for address, change in changes.peers.items():
            lines += msg.withdraw_lines(address, list(change.withdraw))
            lines += msg.announce_lines(address, change.announce)
        if lines:
            if self._exabgp.send(lines):
                for address, change in changes.peers.items():
                    s = self._sessions[address]
                    s.announced = change.applied_to(s.announced)
            else:
                self._dirty.peers.update(changes.peers)    # sent again once the channel is back
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

    def _installed_state(self, prefix: IPv4Network) -> importer.Installed | None:
        """How ``prefix`` is routed in the kernel now, for the IPIP settle delay."""
        route = self._installer.installed.get(prefix)
        if route is None:
            return None
        previous = self._settling.decisions.get(prefix)
        known = previous is not None and prefix not in self._installer.errors
        return importer.Installed(
            mode=importer.InstallMode.IPIP if route.dev == self._installer.tunnel_device
            else importer.InstallMode.DIRECT,
            next_hop=previous.next_hop if known else None)

    def _sessions_status(self) -> list[dict[str, Any]]:
        return status_view.session_rows(self._sessions, self._rib)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return status_view.status(self.settings.node, self._local, self.error, self._exabgp.pid,
                                      self._exabgp.restarts, self._sessions_status())

    def routes(self) -> dict[str, Any]:
        with self._lock:
            return status_view.routes(self._sessions, self._verdict, self._settling.decisions,
                                      self._installer.installed, self._installer.errors, self._clock())
