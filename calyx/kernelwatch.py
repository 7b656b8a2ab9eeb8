"""The kernel's route and link changes as typed loop events, and how a route sync takes them in.

I/O: a :class:`KernelWatch` runs :mod:`calyx.netlink`'s route and link monitors and posts what
they report to a daemon's :class:`calyx.loop.Loop`; on the loop's thread, :func:`absorb` folds a
batch's kernel events into a :class:`calyx.routesync.RouteSync`. felix and bgpd both start one
before their first dump, so no change goes unseen between the dump and the events.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from calyx.loop import Coalescing, Event
from calyx.netlink import LinkMonitor, RouteMonitor
from calyx.route import Route
from calyx.routesync import RouteSync


@dataclass(frozen=True)
class LinkChanged(Event):
    name: str
    present: bool


@dataclass(frozen=True)
class RouteChanged(Event):
    route: Route
    present: bool


@dataclass(frozen=True)
class KernelResyncWanted(Coalescing):
    """Netlink events were lost: the next pass re-reads the kernel."""


@dataclass(frozen=True)
class Absorbed:
    """What a batch's kernel events did to a route sync's view."""

    changed: bool = False         # the view changed: there may be something to write
    resync_wanted: bool = False   # events were lost: re-read the kernel


def absorb(sync: RouteSync, events: Iterable[Event]) -> Absorbed:
    changed = resync = False
    for event in events:
        if isinstance(event, RouteChanged):
            changed |= sync.route_event(event.route, event.present)
        elif isinstance(event, LinkChanged):
            changed |= sync.link_event(event.name, event.present)
        elif isinstance(event, KernelResyncWanted):
            resync = True
    return Absorbed(changed, resync)


class KernelWatch:
    """Route and link monitors of one network namespace, posting typed events."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._monitors: list[LinkMonitor | RouteMonitor] = []

    def start(self, post: Callable[[Event], None]) -> "KernelWatch":
        def on_link(name: str, _index: int, present: bool) -> None:
            post(KernelResyncWanted() if not name else LinkChanged(name, present))

        def on_route(route: Route | None, present: bool) -> None:
            post(KernelResyncWanted() if route is None else RouteChanged(route, present))

        self._monitors = [LinkMonitor(on_link, self._netns).start(), RouteMonitor(on_route, self._netns).start()]
        return self

    def stop(self) -> None:
        for monitor in self._monitors:
            monitor.stop()
        self._monitors = []
