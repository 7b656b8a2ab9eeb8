"""A pod's status from what its containers are doing (pure): phase, conditions and container
statuses, shaped as kubelet writes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calyxlab.kubelet.podspec import PodPlan


@dataclass(frozen=True)
class Exit:
    exit_code: int
    started_at: str
    finished_at: str

    @property
    def reason(self) -> str:
        return "Completed" if self.exit_code == 0 else "Error"

    def as_state(self) -> dict[str, Any]:
        return {"terminated": {"exitCode": self.exit_code, "reason": self.reason,
                               "startedAt": self.started_at, "finishedAt": self.finished_at}}


@dataclass(frozen=True)
class ContainerState:
    """One container as the kubelet sees it right now."""

    name: str
    image: str
    restart_count: int = 0
    running_since: str | None = None       # RFC 3339 start of the running process
    started: bool = False                  # running and past its startup probe
    container_id: str | None = None
    ready: bool = False
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    last_exit: Exit | None = None
    completed: Exit | None = None          # an init container that has finished

    def as_status(self) -> dict[str, Any]:
        if self.running_since is not None:
            state: dict[str, Any] = {"running": {"startedAt": self.running_since}}
        elif self.completed is not None:
            state = self.completed.as_state()
        else:
            state = {"waiting": {"reason": self.waiting_reason,
                                 **({"message": self.waiting_message} if self.waiting_message else {})}}
        out: dict[str, Any] = {"name": self.name, "image": self.image, "imageID": "",
                               "ready": self.ready, "restartCount": self.restart_count,
                               "started": self.started, "state": state,
                               "lastState": self.last_exit.as_state() if self.last_exit else {}}
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def _condition(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
    if not ok and reason:
        out["reason"] = reason
    return out


def pod_status(plan: PodPlan, init: list[ContainerState], main: list[ContainerState],
               host_ip: str, start_time: str) -> dict[str, Any]:
    """The ``status`` a kubelet would write for ``plan`` (without transition times)."""
    initialized = all(s.completed is not None and s.completed.exit_code == 0 for s in init)
    running = initialized and any(s.running_since is not None for s in main)
    ready = initialized and bool(main) and all(s.ready for s in main)
    return {
        "phase": "Running" if running else "Pending",
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": host_ip, "podIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "conditions": [
            _condition("PodReadyToStartContainers", True),
            _condition("Initialized", initialized, "ContainersNotInitialized"),
            _condition("ContainersReady", ready, "ContainersNotReady"),
            _condition("Ready", ready, "ContainersNotReady"),
        ],
        "initContainerStatuses": [s.as_status() for s in init],
        "containerStatuses": [s.as_status() for s in main],
    }
