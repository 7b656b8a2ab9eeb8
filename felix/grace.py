"""The teardown grace of a tunnel device (``tunl0``, ``vxlan.calico``): pure.

Each node reacts to an IPPool change on its own watch, so for a moment a peer may still send
this node encapsulated traffic after its pools stopped wanting that encapsulation. A device is
therefore brought up (or updated) at once when wanted, and taken down only ``grace`` seconds
after it stopped being wanted; being wanted again within the grace cancels the teardown. A
felix restarted during a grace starts it again (it never tears down early).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

Spec = TypeVar("Spec")


@dataclass(frozen=True)
class DevicePlan(Generic[Spec]):
    """What to do with a device now, and the grace state to carry to the next pass."""

    spec: Spec | None                    # what to program; None: leave the device as it is
    teardown_since: float | None = None  # when the grace began (None: no grace running)
    teardown_at: float | None = None     # when the device is torn down unless wanted again

    @property
    def draining(self) -> bool:
        """A grace is running: the device is kept although no pool wants it."""
        return self.teardown_at is not None


def plan_device(desired: Spec, wanted: bool, present: bool, teardown_since: float | None, now: float,
                grace: float) -> DevicePlan[Spec]:
    """Program ``desired`` at once when ``wanted`` or when the device is not ``present`` (up and
    working) anyway; otherwise keep the device as it is until ``grace`` seconds after
    ``teardown_since`` (the previous plan's; None: the grace starts ``now``)."""
    if wanted or not present:
        return DevicePlan(desired)
    since = now if teardown_since is None else min(teardown_since, now)
    at = since + grace
    if now >= at:
        return DevicePlan(desired)
    return DevicePlan(None, teardown_since=since, teardown_at=at)
