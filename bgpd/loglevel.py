"""bgpd's log level follows BGPConfiguration ``logSeverityScreen``, while bgpd runs.

Calico sets its BGP daemon's log level from the ``default`` BGPConfiguration; bgpd does the
same for its own logs: Debug, Info, Warning, Error, Fatal become debug, info, warning, error and
critical (nothing below critical is written: bgpd then logs nothing at all, as BIRD logs almost
nothing at Fatal). Without a ``default`` object, bgpd's own ``log_level`` setting holds. The
change is applied to the running process as soon as a snapshot carries it; no restart.
ExaBGP's level is not changed with it: ExaBGP reads its level only when it starts, and
restarting it would reset every session; its log keeps warnings and errors.

Pure apart from the injected setter (:func:`calyx.logs.set_level` in the daemon).
"""
from __future__ import annotations

from typing import Callable

from calyx.logs import get_logger
from calyx.model import BGPConfiguration

log = get_logger("bgpd.loglevel")

SEVERITY_LEVELS = {"Debug": "debug", "Info": "info", "Warning": "warning", "Error": "error", "Fatal": "critical"}
_ORDER = ("debug", "info", "warning", "error", "critical")


def wanted_level(config: BGPConfiguration, configured: str) -> str:
    """The level bgpd logs at: the BGPConfiguration's, else ``configured`` (bgpd's log_level)."""
    if config.log_severity_screen is None:
        return configured.lower()
    return SEVERITY_LEVELS[config.log_severity_screen]


class LogLevelFollower:
    """Applies :func:`wanted_level` when it changes, saying so in the log."""

    def __init__(self, configured: str, set_level: Callable[[str], None]) -> None:
        self._configured = configured.lower()
        self._set_level = set_level
        self.level = self._configured

    def follow(self, config: BGPConfiguration) -> bool:
        """Set the level ``config`` asks for; True when it changed."""
        level = wanted_level(config, self._configured)
        if level == self.level:
            return False
        previous = self.level
        why = ("BGPConfiguration logSeverityScreen" if config.log_severity_screen is not None
               else "no BGPConfiguration default: bgpd's log_level")
        fields = dict(previous=previous, now=level, why=why, logSeverityScreen=config.log_severity_screen)
        # Said at info: after the change when the new level shows info (so every line after it
        # is of the new level), else just before it.
        shown_after = _ORDER.index(level) <= _ORDER.index("info")
        if not shown_after:
            log.info("log_level_changed", **fields)
        self._set_level(level)
        self.level = level
        if shown_after:
            log.info("log_level_changed", **fields)
        return True
