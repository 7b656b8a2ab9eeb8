"""How long bgpd waits before restarting a child process (ExaBGP, bfdd) that exited.

Pure code. 1 s after the first exit, doubling while the child keeps dying, never more than
the maximum; a child that ran for a minute starts again from 1 s.
"""
from __future__ import annotations

STABLE_UPTIME = 60.0    # seconds up after which an exit counts as the first again


class RestartBackoff:
    def __init__(self, maximum: float) -> None:
        self._maximum = maximum
        self._next = 1.0

    def after_exit(self, uptime: float) -> float:
        """The delay before the next start, given how long the child ran."""
        if uptime > STABLE_UPTIME:
            self._next = 1.0
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay
