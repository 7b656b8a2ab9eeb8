"""The event loop every Calyx daemon runs its work on; its one responsibility is deciding *when*
the owner's iteration runs and *what* it is handed.

A :class:`Loop` has one owner callback, ``handler(batch)``. Other threads :meth:`Loop.post`
typed events (small frozen dataclasses deriving from :class:`Event`); the loop thread sleeps until
an event arrives or a named timer is due, then hands everything gathered since the previous
iteration to the handler as one :class:`Batch`:

* coalescing: all events posted between two iterations form one batch, in arrival order;
  events deriving from :class:`Coalescing` ("resync wanted", "datastore changed") collapse, so
  equal ones appear once however often they were posted;
* debounce: when an event (not a timer) wakes the loop, it keeps gathering for ``debounce``
  seconds first, so a burst is handled in one iteration;
* named timers: :meth:`Loop.every` (a periodic resync, re-armed from the moment it fires or is
  restarted) and :meth:`Loop.wake_at` (one shot at a given time); a due timer appears in the
  batch as :class:`TimerFired` with its name;
* an injected :class:`Clock` (:class:`MonotonicClock` in daemons, :class:`FakeClock` in tests);
* a heartbeat the loop ticks itself, after each iteration and while it waits idle, registered
  by the loop's name with a :class:`calyx.observability.Liveness` so ``/livez`` names a loop whose
  handler is stuck.

The loop keeps no global state; a handler that raises ends :meth:`Loop.run` with that error
(the heartbeat then goes stale, and ``/livez`` says so).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar

from calyx.observability import Heartbeat, Liveness

# --- events ------------------------------------------------------------------------------------


class Event:
    """Base of the events a loop carries. Subclasses are ``@dataclass(frozen=True)``."""


class Coalescing(Event):
    """An event whose equal copies collapse to one within a batch (a "something wanted" flag)."""


@dataclass(frozen=True)
class TimerFired(Coalescing):
    """The named timer came due."""

    name: str


E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Batch:
    """What one iteration is handed: the events gathered since the previous one, in arrival
    order (coalescing ones once, at their first arrival), and when the iteration started."""

    events: tuple[Event, ...]
    started: float

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def has(self, kind: type[Event]) -> bool:
        return any(isinstance(e, kind) for e in self.events)

    def fired(self, timer: str) -> bool:
        return TimerFired(timer) in self.events


# --- clocks ------------------------------------------------------------------------------------


class Clock(Protocol):
    """Monotonic seconds, and a way to wait on a condition for that many seconds."""

    def now(self) -> float: ...

    def wait(self, cond: threading.Condition, timeout: float) -> None:
        """Wait on ``cond`` (held by the caller) for at most ``timeout`` seconds of this clock;
        returning early is allowed (the caller re-checks)."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def wait(self, cond: threading.Condition, timeout: float) -> None:
        cond.wait(max(0.0, timeout))


class FakeClock:
    """Time that passes only through :meth:`advance`. A loop waiting on it re-checks the fake
    time every few real milliseconds, so advancing wakes it promptly."""

    POLL = 0.005

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def wait(self, cond: threading.Condition, timeout: float) -> None:
        if timeout > 0:
            cond.wait(self.POLL)


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class _Timer:
    due: float
    interval: float | None      # None: one shot


class Loop:
    """One daemon's event loop; see the module docstring. Thread-safe: :meth:`post`,
    :meth:`stop`, :meth:`every`, :meth:`wake_at` and :meth:`cancel` may be called from any
    thread (and from the handler); :meth:`run` runs the loop in the calling thread."""

    def __init__(self, name: str, handler: Callable[[Batch], None], *,
                 clock: Clock | None = None, debounce: float = 0.0, max_batch: int | None = None,
                 heartbeat_max_age: float = 60.0, idle_tick: float | None = None,
                 liveness: Liveness | None = None) -> None:
        if debounce < 0:
            raise ValueError(f"loop {name}: debounce {debounce!r} must be 0 or more")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"loop {name}: max_batch {max_batch!r} must be 1 or more")
        self.name = name
        self._handler = handler
        self.clock: Clock = clock or MonotonicClock()
        self._debounce = debounce
        self._max_batch = max_batch
        self._idle_tick = idle_tick if idle_tick is not None else heartbeat_max_age / 3
        self.heartbeat = Heartbeat(heartbeat_max_age, clock=self.clock.now, name=f"loop {name}")
        self._cond = threading.Condition()
        self._pending: list[Event] = []
        self._flags: set[Coalescing] = set()
        self._timers: dict[str, _Timer] = {}
        self._stopped = False
        self.iterations = 0
        if liveness is not None:
            liveness.register(name, self.heartbeat)

    # --- inputs (any thread) ---------------------------------------------------------------

    def post(self, event: Event) -> None:
        """Queue ``event`` for the next iteration and wake the loop."""
        with self._cond:
            if isinstance(event, Coalescing):
                if event in self._flags:
                    return
                self._flags.add(event)
            self._pending.append(event)
            self._cond.notify_all()

    def stop(self) -> None:
        """Make :meth:`run` return once the current iteration (if any) ends."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        with self._cond:
            return self._stopped

    def every(self, name: str, interval: float, immediately: bool = False) -> None:
        """(Re)arm the periodic timer ``name``: due ``interval`` seconds from now (or now, with
        ``immediately``), then every ``interval`` seconds after each firing."""
        if interval <= 0:
            raise ValueError(f"loop {self.name}: timer {name}: interval {interval!r} must be positive")
        with self._cond:
            now = self.clock.now()
            self._timers[name] = _Timer(now if immediately else now + interval, interval)
            self._cond.notify_all()

    def wake_at(self, name: str, when: float | None) -> None:
        """Set the one-shot timer ``name`` to fire at ``when`` (this loop's clock); ``None``
        cancels it."""
        with self._cond:
            if when is None:
                self._timers.pop(name, None)
            else:
                self._timers[name] = _Timer(when, None)
            self._cond.notify_all()

    def cancel(self, name: str) -> None:
        self.wake_at(name, None)

    # --- running ---------------------------------------------------------------------------

    def run(self) -> None:
        """Run iterations until :meth:`stop`."""
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._handler(batch)
            self.iterations += 1
            self.heartbeat.tick()

    def _due_timers(self, now: float) -> list[str]:
        fired = []
        for name, timer in list(self._timers.items()):
            if timer.due <= now:
                fired.append(name)
                if timer.interval is None:
                    del self._timers[name]
                else:
                    timer.due = now + timer.interval
        return fired

    def _wait(self, until: float) -> None:
        """Wait (lock held) until ``until``, a post or stop, at most one idle tick; alive meanwhile."""
        now = self.clock.now()
        self.clock.wait(self._cond, min(until - now, self._idle_tick))
        self.heartbeat.tick()

    def _next_batch(self) -> Batch | None:
        with self._cond:
            while not self._stopped:
                now = self.clock.now()
                if self._pending:
                    if self._debounce > 0:
                        settle = now + self._debounce
                        while not self._stopped and self.clock.now() < settle:
                            self._wait(settle)
                        if self._stopped:
                            break
                    return self._take(self.clock.now())
                if any(t.due <= now for t in self._timers.values()):
                    return self._take(now)
                until = min((t.due for t in self._timers.values()), default=now + self._idle_tick)
                self._wait(until)
            return None

    def _take(self, now: float) -> Batch:
        for name in self._due_timers(now):
            event = TimerFired(name)
            if event not in self._flags:
                self._flags.add(event)
                self._pending.append(event)
        limit = self._max_batch or len(self._pending)
        events, self._pending = self._pending[:limit], self._pending[limit:]
        for event in events:
            if isinstance(event, Coalescing):
                self._flags.discard(event)
        return Batch(tuple(events), now)
