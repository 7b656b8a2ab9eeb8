"""BFD for the speaker: runs bfdd while some peer wants BFD, keeps its sessions equal to the
wanted ones, and tells the speaker which BGP sessions BFD declared dead.

I/O orchestration around the pure :class:`bgpd.bfd.tracker.BfdTracker`: the bfdd child
(:mod:`bgpd.bfd.process`) and its control connection (:mod:`bgpd.bfd.control`), whose events
the speaker's loop hands to :meth:`Bfd.handle`. bfdd is started when the first peer wants BFD
and stopped (by PID) when none does any more.
"""
from __future__ import annotations

import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Callable, Mapping

from calyx.loop import Event
from calyx.logs import get_logger

from bgpd.bfd import protocol
from bgpd.bfd.control import BfdChannelDown, BfdChannelUp, BfdControl, BfdNotified, BfdRefused
from bgpd.bfd.process import DEFAULT_BFDD, BfddProcess
from bgpd.bfd.tracker import BfdDown, BfdTracker
from bgpd.peers import Peer

log = get_logger("bgpd.bfd")

BFD_EVENTS = (BfdChannelUp, BfdChannelDown, BfdNotified, BfdRefused)


class Bfd:
    def __init__(self, work_dir: Path, post: Callable[[Event], None], netns: str | None = None,
                 bfdd_bin: str = DEFAULT_BFDD) -> None:
        self.tracker = BfdTracker()
        self.process = BfddProcess(work_dir, on_exit=lambda code: None, bfdd_bin=bfdd_bin, netns=netns)
        self.control = BfdControl(self.process.control_path, post)
        self._first = True

    def set_peers(self, peers: Mapping[IPv4Address, Peer]) -> None:
        self.tracker.set_peers(peers)
        first, self._first = self._first, False
        if first and not self.tracker.wanted:
            self.process.stop_leftover()
        if self.tracker.wanted and not self.process.running:
            log.info("bfd_wanted", peers=[str(a) for a in self.tracker.desired])
            self.process.start()
            self.control.start()
        elif not self.tracker.wanted and self.process.running:
            log.info("bfd_not_wanted", why="no peer has failureDetectionMode BFDIfDirectlyConnected in reach")
            self.stop()

    def handle(self, event: Event) -> BfdDown | None:
        if isinstance(event, BfdChannelUp):
            self.tracker.channel_up()
        elif isinstance(event, BfdChannelDown):
            self.tracker.channel_down()
        elif isinstance(event, BfdRefused):
            log.warning("bfdd_request_refused", request=event.request_id, error=event.error)
        elif isinstance(event, BfdNotified):
            notice = event.notice
            if isinstance(notice, protocol.StatusNotice):
                log.info("bfd_state", peer=str(notice.peer), state=notice.state.value,
                         diagnostics=notice.diagnostics, remote_diagnostics=notice.remote_diagnostics)
            return self.tracker.notice(notice)
        return None

    def reconcile(self) -> None:
        """Send bfdd the adds and deletes that make its sessions the wanted ones."""
        wanted = self.tracker.requests()
        for p in wanted.adds:
            log.info("bfd_session_add", peer=str(p.peer), local=str(p.local), min_rx_ms=p.min_rx_ms,
                     min_tx_ms=p.min_tx_ms, multiplier=p.multiplier)
            self.control.send(protocol.add_request(self.control.next_id(), p))
        for peer, local in wanted.deletes:
            log.info("bfd_session_delete", peer=str(peer), local=str(local))
            self.control.send(protocol.delete_request(self.control.next_id(), peer, local))

    def state(self, address: IPv4Address) -> str:
        return self.tracker.state(address)

    def info(self, address: IPv4Address) -> str:
        return self.tracker.info(address)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def stop(self) -> None:
        """Tell the peers BFD stops on purpose (AdminDown, which RFC 5882 peers do not act on,
        so graceful restart keeps our routes at peers while bgpd restarts), then end bfdd."""
        sessions = self.tracker.sent() if self.control.connected else []
        for p in sessions:
            self.control.send(protocol.shutdown_request(self.control.next_id(), p))
        if sessions:
            log.info("bfd_admin_down", peers=[str(p.peer) for p in sessions])
            time.sleep(min(1.0, 3 * max(p.min_tx_ms for p in sessions) / 1000))    # a few packets out
        self.control.stop()
        self.process.stop()
        self.tracker.channel_down()
