"""calyx.loop with a fake clock: coalescing, timers, debounce, the heartbeat the loop ticks
itself, and /livez naming a stuck loop over real HTTP."""
from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

import pytest
from prometheus_client import CollectorRegistry

from calyx.loop import Batch, Coalescing, Event, FakeClock, Loop, TimerFired
from calyx.observability import HealthServer, Liveness


@dataclass(frozen=True)
class Thing(Event):
    n: int


@dataclass(frozen=True)
class ResyncWanted(Coalescing):
    what: str = "kernel"


def eventually(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


class Harness:
    """A loop running in a thread with a fake clock; batches are recorded."""

    def __init__(self, **kwargs) -> None:
        self.clock = FakeClock()
        self.batches: list[Batch] = []
        self.block = threading.Event()
        self.block.set()
        self.in_handler = threading.Event()
        self.liveness = Liveness()
        self.loop = Loop("test", self._handle, clock=self.clock, liveness=self.liveness, **kwargs)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)

    def _handle(self, batch: Batch) -> None:
        self.in_handler.set()
        self.block.wait()
        self.batches.append(batch)

    def __enter__(self) -> "Harness":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.block.set()
        self.loop.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()


def test_events_posted_between_iterations_form_one_batch_and_flags_collapse():
    with Harness() as h:
        h.block.clear()
        h.loop.post(Thing(0))                  # first iteration starts and blocks
        assert h.in_handler.wait(5)
        for n in range(1, 4):
            h.loop.post(Thing(n))
            h.loop.post(ResyncWanted())
        h.loop.post(ResyncWanted("other"))
        h.block.set()
        eventually(lambda: len(h.batches) == 2)
        assert h.batches[0].events == (Thing(0),)
        second = h.batches[1]
        assert second.of(Thing) == [Thing(1), Thing(2), Thing(3)]
        assert second.of(ResyncWanted) == [ResyncWanted(), ResyncWanted("other")]
        assert second.events[1] == ResyncWanted()       # kept at its first arrival
        h.loop.post(ResyncWanted())                     # collapsed only within a batch
        eventually(lambda: len(h.batches) == 3)
        assert h.batches[2].events == (ResyncWanted(),)


def test_max_batch_leaves_the_rest_for_the_next_iteration():
    with Harness(max_batch=2) as h:
        h.block.clear()
        h.loop.post(Thing(0))
        assert h.in_handler.wait(5)
        for n in range(1, 6):
            h.loop.post(Thing(n))
        h.block.set()
        eventually(lambda: len(h.batches) == 4)
        assert [len(b.events) for b in h.batches] == [1, 2, 2, 1]


def test_periodic_timer_fires_every_interval_of_the_injected_clock():
    with Harness() as h:
        h.loop.every("resync", 30.0)
        time.sleep(0.05)
        assert h.batches == []                  # real time passing does not fire it
        h.clock.advance(29.0)
        time.sleep(0.05)
        assert h.batches == []
        h.clock.advance(1.0)
        eventually(lambda: len(h.batches) == 1)
        assert h.batches[0].fired("resync") and h.batches[0].events == (TimerFired("resync"),)
        h.clock.advance(30.0)
        eventually(lambda: len(h.batches) == 2)
        assert h.batches[1].fired("resync")


def test_immediate_timer_restart_and_one_shot_wake_at():
    with Harness() as h:
        h.loop.every("resync", 10.0, immediately=True)
        eventually(lambda: len(h.batches) == 1)
        h.clock.advance(5.0)
        h.loop.every("resync", 10.0)             # restarted: due 10 s from now, not 5
        h.clock.advance(6.0)
        time.sleep(0.05)
        assert len(h.batches) == 1
        h.loop.wake_at("grace", h.clock.now() + 2.0)
        h.loop.wake_at("gone", h.clock.now() + 1.0)
        h.loop.cancel("gone")
        h.clock.advance(2.0)
        eventually(lambda: len(h.batches) == 2)
        assert h.batches[1].events == (TimerFired("grace"),)
        h.clock.advance(2.0)                     # resync due now (restarted 10 s ago)
        eventually(lambda: len(h.batches) == 3)
        assert h.batches[2].events == (TimerFired("resync"),)
        h.clock.advance(100.0)                   # the one shot does not come back
        eventually(lambda: len(h.batches) >= 4)
        assert all(not b.fired("grace") for b in h.batches[3:])


def test_debounce_gathers_a_burst_for_the_configured_time():
    with Harness(debounce=1.0) as h:
        h.loop.post(Thing(1))
        time.sleep(0.05)
        assert h.batches == []                   # waiting out the debounce (fake time)
        h.loop.post(Thing(2))
        h.clock.advance(0.5)
        h.loop.post(Thing(3))
        time.sleep(0.05)
        assert h.batches == []
        h.clock.advance(0.5)
        eventually(lambda: len(h.batches) == 1)
        assert h.batches[0].of(Thing) == [Thing(1), Thing(2), Thing(3)]


def test_timers_are_not_debounced():
    with Harness(debounce=5.0) as h:
        h.loop.wake_at("soon", h.clock.now() + 1.0)
        h.clock.advance(1.0)
        eventually(lambda: len(h.batches) == 1)


def test_heartbeat_ticks_while_idle_and_goes_stale_when_the_handler_blocks():
    with Harness(heartbeat_max_age=30.0, idle_tick=5.0) as h:
        for _ in range(20):                      # idle for 100 s of fake time: still alive
            h.clock.advance(5.0)
            time.sleep(0.02)
        assert h.liveness().ok, h.liveness().reason
        h.block.clear()
        h.loop.post(Thing(1))
        assert h.in_handler.wait(5)
        h.clock.advance(31.0)
        time.sleep(0.2)                          # nothing else may keep it fresh meanwhile
        check = h.liveness()
        assert not check.ok
        assert "test" in check.reason and "31.0s" in check.reason
        h.block.set()
        eventually(lambda: h.liveness().ok)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_livez_names_the_stuck_loop_over_http():
    clock = FakeClock()
    liveness = Liveness()
    release = threading.Event()
    stuck = Loop("speaker", lambda batch: release.wait(), clock=clock, heartbeat_max_age=30.0,
                 liveness=liveness)
    fine = Loop("datastore", lambda batch: None, clock=clock, heartbeat_max_age=30.0, idle_tick=5.0,
                liveness=liveness)
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in (stuck, fine)]
    for thread in threads:
        thread.start()
    try:
        with HealthServer("127.0.0.1", 0, CollectorRegistry(), liveness=liveness) as server:
            assert _get(server.url + "/livez")[0] == 200
            stuck.post(Thing(1))
            time.sleep(0.05)
            for _ in range(8):
                clock.advance(5.0)
                time.sleep(0.02)
            status, body = _get(server.url + "/livez")
            assert status == 503
            assert "speaker" in body and "datastore" not in body
            release.set()
            eventually(lambda: _get(server.url + "/livez")[0] == 200)
    finally:
        release.set()
        for loop in (stuck, fine):
            loop.stop()
        for thread in threads:
            thread.join(5)


def test_a_handler_error_ends_run_and_liveness_registration_is_unique():
    liveness = Liveness()

    def broken(batch: Batch) -> None:
        raise RuntimeError("boom")

    loop = Loop("x", broken, clock=FakeClock(), liveness=liveness)
    loop.post(Thing(1))
    with pytest.raises(RuntimeError, match="boom"):
        loop.run()
    with pytest.raises(ValueError, match="registered already"):
        Loop("x", broken, liveness=liveness)
