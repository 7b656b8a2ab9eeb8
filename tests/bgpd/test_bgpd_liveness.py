"""bgpd's /livez follows the loop that drives the speaker: a speaker stuck in an iteration makes
/livez answer 503 naming it, over the real HealthServer (no ExaBGP, no namespace needed)."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry

from bgpd.metrics import SpeakerMetrics
from bgpd.speaker import HEARTBEAT_MAX_AGE, Speaker, SpeakerSettings
from calyx.loop import FakeClock
from calyx.memroutes import MemoryRouteWriter
from calyx.observability import HealthServer, Liveness


def _livez(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + "/livez", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _wait(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class _EmptyTable(MemoryRouteWriter):
    """No kernel: an empty in-memory table, and no route to any next hop."""

    def route_to(self, _address) -> tuple[None, None]:
        return None, None


def test_a_stuck_speaker_loop_fails_livez(tmp_path: Path) -> None:
    clock = FakeClock()
    liveness = Liveness()
    speaker = Speaker(SpeakerSettings(node="node1", run_dir=tmp_path), table=_EmptyTable(), metrics=SpeakerMetrics(),
                      liveness=liveness, loop_clock=clock)
    assert liveness.names == ("bgpd-speaker",)
    speaker.start()
    try:
        with HealthServer("127.0.0.1", 0, CollectorRegistry(), liveness=liveness) as health:
            for _ in range(int(HEARTBEAT_MAX_AGE) * 2):     # idle but ticking: alive
                clock.advance(1.0)
                time.sleep(0.005)
            assert _livez(health.url)[0] == 200
            # Something holds the speaker's lock (here: the test) and never lets go: the next
            # one-second tick blocks inside the speaker's iteration.
            with speaker._lock:
                done = speaker.loop.iterations
                clock.advance(1.0)
                time.sleep(0.1)
                assert speaker.loop.iterations == done
                clock.advance(HEARTBEAT_MAX_AGE + 1)
                time.sleep(1.5)     # longer than any tick from outside the loop would take
                status, body = _livez(health.url)
                assert status == 503, body
                assert "bgpd-speaker" in body and "has not ticked" in body
            _wait(lambda: _livez(health.url)[0] == 200)
    finally:
        speaker.stop()
    assert not speaker._thread.is_alive()
