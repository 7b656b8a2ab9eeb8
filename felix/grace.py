"""The teardown grace of a tunnel device (``tunl0``, ``vxlan.calico``): pure.

Each node reacts to an IPPool change on its own watch, so for a moment a peer may still send
this node encapsulated traffic after its pools stopped wanting that encapsulation. A device is
therefore brought up (or updated) at once when wanted, and taken down only ``grace`` seconds
after it stopped being wanted; being wanted again within the grace cancels the teardown. A
felix restarted during a grace starts it again (it never tears down early).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

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


class DeviceGrace(Generic[Spec]):
    """A device's grace carried from one pass to the next, with the log lines that say when a
    teardown is deferred or cancelled (``log`` is the manager's logger method, ``what`` names
    the device in them: "tunnel", "VXLAN")."""

    def __init__(self, what: str, device: str, grace: float, log: Callable[..., None]) -> None:
        self._what, self._device, self._log = what, device, log
        self._grace = grace
        self.plan: DevicePlan[Spec] = DevicePlan(None)

    @property
    def teardown_at(self) -> float | None:
        """When the running teardown grace ends (None: none running)."""
        return self.plan.teardown_at

    @property
    def seconds(self) -> float:
        return self._grace

    @property
    def teardown_since(self) -> float | None:
        return self.plan.teardown_since

    def note(self, plan: DevicePlan[Spec], wanted: bool, reason: str) -> None:
        """Log the change ``plan`` (this pass's) makes to the grace: a teardown deferred or
        cancelled. The caller programs the plan's ``spec``, then commits it (:meth:`commit`), so a
        failed write leaves the previous plan in force."""
        previous = self.plan
        if plan.draining and not previous.draining:
            self._log(f"{self._what} teardown deferred: still decapsulating for peers that have not switched yet",
                      device=self._device, grace_seconds=self._grace, reason=reason)
        elif previous.draining and wanted:
            self._log(f"{self._what} teardown cancelled", device=self._device, reason=reason)

    def commit(self, plan: DevicePlan[Spec]) -> None:
        self.plan = plan
