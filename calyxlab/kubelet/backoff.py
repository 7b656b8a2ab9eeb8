"""kubelet's restart back-off for a container that keeps exiting (pure).

The first restart waits 10 s, each further one twice as long, at most 5 minutes; a container
that then runs for 10 minutes is forgiven and starts again from 10 s.
"""
from __future__ import annotations

from dataclasses import dataclass

INITIAL = 10.0
MAXIMUM = 300.0
FORGIVE_AFTER = 2 * MAXIMUM


@dataclass(frozen=True)
class Backoff:
    delay: float = 0.0          # the wait before the next restart (0: none yet)

    def after_exit(self, ran_for: float) -> "Backoff":
        """The back-off once a container that ran ``ran_for`` seconds has exited."""
        if ran_for >= FORGIVE_AFTER or self.delay == 0.0:
            return Backoff(INITIAL)
        return Backoff(min(self.delay * 2, MAXIMUM))
