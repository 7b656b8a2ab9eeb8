"""``ip monitor route`` in a lab node, recording every route event while a test acts, so a test
can show that routes were replaced in place (no ``Deleted`` line) rather than taken down."""
from __future__ import annotations

import time
from pathlib import Path

from calyxlab.lab import Lab, ProcHandle
from calyxlab.pytest_plugin import wait_for


class RouteMonitor:
    """``ip monitor route`` in a node, started by the lab and killed by PID. A canary route,
    added and removed in the node, proves it listens (before the caller acts, and at the end)."""

    CANARY = "192.0.2.255"

    def __init__(self, lab: Lab, node: str, log: Path) -> None:
        self.lab, self.node, self.log = lab, node, log
        self.handle: ProcHandle = lab.spawn(node, ["ip", "-4", "monitor", "route"], log=str(log),
                                            name=f"route-monitor-{int(time.time() * 1000)}")
        wait_for("the route monitor listening", self._canary, timeout=60, interval=0.1)

    def _canary(self) -> bool:
        for verb in ("add", "del"):
            self.lab.exec(self.node, ["ip", "route", verb, "blackhole", f"{self.CANARY}/32"], check=True)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if sum(self.CANARY in line for line in self._all_lines()) > 0:
                return True
            time.sleep(0.1)
        return False

    def _all_lines(self) -> list[str]:
        try:
            return [line for line in self.log.read_text().splitlines() if line.strip()]
        except OSError:
            return []

    def lines(self) -> list[str]:
        return [line for line in self._all_lines() if self.CANARY not in line]

    def stop(self) -> list[str]:
        """Stop and return the events seen (the monitor must still see a last canary)."""
        seen = sum(self.CANARY in line for line in self._all_lines())
        for verb in ("add", "del"):
            self.lab.exec(self.node, ["ip", "route", verb, "blackhole", f"{self.CANARY}/32"], check=True)
        wait_for("the route monitor sees the last canary",
                 lambda: sum(self.CANARY in line for line in self._all_lines()) >= seen + 2, timeout=90)
        self.lab.kill(self.handle)
        return self.lines()
