"""bgpd's daemon: configuration, datastore watch, speaker, control socket and health server.

I/O wiring only; the behaviour lives in :mod:`bgpd.speaker` and the pure modules. The main
thread feeds the speaker settled snapshots; ``/livez`` follows the speaker's loop (its heartbeat
is ticked by that loop, not by this thread).
"""
from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path

from calyx.config import ConfigError, DaemonConfig, setting
from calyx.kernelwatch import KernelWatch
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyx.kube.datastore import Datastore, WatchSpec
from calyx.kube.events import EventRecorder
from calyx.model import Snapshot
from calyx.naming import BGPD_SOCKET
from calyx.netlink import RouteTable
from calyx.logs import get_logger, set_level
from calyx.observability import Check, HealthServer, Heartbeat, Liveness

from bgpd.control import ControlServer
from bgpd.loglevel import LogLevelFollower
from bgpd.metrics import SpeakerMetrics
from bgpd.peers import referenced_secrets
from bgpd.speaker import Speaker, SpeakerSettings

log = get_logger("bgpd.daemon")


@dataclasses.dataclass(frozen=True)
class BgpdConfig(DaemonConfig):
    health_port: int = setting(9098, env="CALYX_BGPD_HEALTH_PORT",
                               help="port serving /livez, /readyz and /metrics (0: any free port)")
    max_prefixes: int = setting(10000, env="CALYX_BGPD_MAX_PREFIXES",
                                help="prefixes a peer may send before its session is torn down (0: no limit)")
    graceful_restart: int = setting(120, env="CALYX_BGPD_GRACEFUL_RESTART",
                                    help="graceful-restart time advertised to peers, and how long routes "
                                         "adopted at start wait for re-learning (seconds)")
    max_prefix_hold_down: float = setting(300.0, env="CALYX_BGPD_MAX_PREFIX_HOLD_DOWN",
                                          help="seconds a peer that exceeded max_prefixes stays down before "
                                               "its session may come up again")
    ipip_enable_delay: float = setting(5.0, env="CALYX_BGPD_IPIP_ENABLE_DELAY",
                                       help="seconds an installed direct route waits before moving to IPIP "
                                            "after its pool starts wanting IPIP (every node's felix raises "
                                            "tunl0 meanwhile); routes learned fresh are installed at once")
    exabgp: str | None = setting(None, env="CALYX_BGPD_EXABGP", help="ExaBGP executable (default: next to python)")
    bfdd: str = setting("/usr/lib/frr/bfdd", env="CALYX_BGPD_BFDD",
                        help="FRR's BFD daemon, run while some peer wants BFD")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_prefixes < 0:
            raise ConfigError(f"config field max_prefixes: {self.max_prefixes!r}: must be 0 or more")
        if not 0 <= self.ipip_enable_delay <= 300:
            raise ConfigError(f"config field ipip_enable_delay: {self.ipip_enable_delay!r}: "
                              "must be between 0 and 300 seconds")
        if self.max_prefix_hold_down < 0:
            raise ConfigError(f"config field max_prefix_hold_down: {self.max_prefix_hold_down!r}: "
                              "must be 0 or more")


# How long a snapshot waits for the Secrets it has just started watching to be listed, so that a
# session is not configured without its password for the moment a new Secret takes to arrive.
SECRET_SETTLE_TIMEOUT = 5.0
FEEDER_MAX_AGE = 60.0      # the feeder ticks every second; a snapshot waits at most SECRET_SETTLE_TIMEOUT


def watch_specs() -> list[WatchSpec]:
    """The resources bgpd watches whole. Secrets are not among them: bgpd watches each Secret
    its configuration refers to by name (:func:`settled_snapshot`)."""
    return [
        WatchSpec(resources.NODES),
        WatchSpec(resources.IPPOOLS),
        WatchSpec(resources.IPAMBLOCKS),
        WatchSpec(resources.BGPCONFIGURATIONS),
        WatchSpec(resources.BGPPEERS),
    ]


def settled_snapshot(datastore: Datastore, namespace: str, settle_timeout: float = SECRET_SETTLE_TIMEOUT,
                     rounds: int = 3) -> Snapshot:
    """A snapshot, after making the datastore's Secret watches exactly the Secrets that
    snapshot's BGP configuration refers to (``namespace``: bgpd's), none when it refers to
    none. Secrets newly watched are waited for (listed, found missing or refused) and the
    snapshot is taken again (also after a watch was removed: its Secret leaves it); a later
    change of references is caught by the next call."""
    snapshot = datastore.snapshot()
    for _ in range(rounds):
        changes = datastore.set_named(resources.SECRETS, referenced_secrets(snapshot, namespace))
        if not changes:
            return snapshot
        if changes.added:
            datastore.wait_named_settled(settle_timeout)
        snapshot = datastore.snapshot()
    # References kept changing: keep the watches in step; their first lists wake the caller.
    datastore.set_named(resources.SECRETS, referenced_secrets(snapshot, namespace))
    return snapshot


def control_socket_path(run_dir: Path) -> Path:
    return run_dir / BGPD_SOCKET


def run(cfg: BgpdConfig) -> int:
    api = kube_client.load(cfg.kubeconfig)
    metrics = SpeakerMetrics()
    events = EventRecorder(api, component="bgpd", host=cfg.nodename)
    datastore = Datastore(api, watch_specs(), events=events, namespace=cfg.namespace,
                          registry=metrics.registry)
    settings = SpeakerSettings(node=cfg.nodename, namespace=cfg.namespace, run_dir=cfg.run_dir,
                               max_prefixes=cfg.max_prefixes or None, graceful_restart=cfg.graceful_restart,
                               max_prefix_hold_down=cfg.max_prefix_hold_down,
                               ipip_enable_delay=cfg.ipip_enable_delay,
                               exabgp_bin=cfg.exabgp, bfdd_bin=cfg.bfdd)
    liveness = Liveness()
    speaker = Speaker(settings, RouteTable(), metrics, liveness=liveness, kernel_watch=KernelWatch())
    log_level = LogLevelFollower(cfg.log_level, set_level)
    stop = threading.Event()

    def feed(snapshot: Snapshot) -> None:
        log_level.follow(snapshot.bgp_configuration)
        speaker.set_snapshot(snapshot)

    def readiness() -> Check:
        if not datastore.synced:
            return Check(False, "datastore not synced")
        if speaker.error:
            return Check(False, speaker.error)
        if not speaker.ready:
            return Check(False, "ExaBGP API channel not connected")
        return Check(True, "ok")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    control = ControlServer(control_socket_path(cfg.run_dir), {"status": speaker.status, "routes": speaker.routes})
    # /status: what `bgpd status -o json` shows, for `calyxctl node status NODE` from elsewhere.
    health = HealthServer(cfg.health_host, cfg.health_port, metrics.registry, liveness=liveness,
                          readiness=readiness, json_views={"/status": speaker.status})
    datastore.start()
    control.start()
    health.start()
    speaker.start()
    log.info("bgpd_started", node=cfg.nodename, control=str(control.path))
    # The thread feeding snapshots to the speaker has its own heartbeat: a feeder stuck (say, in
    # building a snapshot) would otherwise leave bgpd live but deaf to the API.
    feeder = Heartbeat(FEEDER_MAX_AGE, name="bgpd datastore feeder")
    liveness.register("bgpd-datastore-feeder", feeder)
    try:
        while not stop.is_set() and not datastore.wait_synced(1.0):
            feeder.tick()
        if not stop.is_set():
            feed(settled_snapshot(datastore, cfg.namespace))
        while not stop.is_set():
            feeder.tick()
            if datastore.wait_for_change(1.0):
                feed(settled_snapshot(datastore, cfg.namespace))
    finally:
        log.info("bgpd_stopping")
        speaker.stop()
        control.stop()
        health.stop()
        datastore.stop()
        events.close()
    return 0
