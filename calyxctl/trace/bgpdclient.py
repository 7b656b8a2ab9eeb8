"""Reads one node's BGP sessions from its bgpd: the read-only ``/status`` view on bgpd's health
port (what ``bgpd status -o json`` shows). I/O only."""
from __future__ import annotations

from calyxctl.daemonviews import ViewUnavailable, fetch_json
from calyxctl.trace.facts import BgpSessions

DEFAULT_BGPD_PORT = 9098       # the chart's bgpd.healthPort


def read_sessions(node: str, base_url: str, timeout: float) -> BgpSessions:
    """``node``'s sessions, or a BgpSessions carrying why they could not be read."""
    url = f"{base_url}/status"
    try:
        return BgpSessions.from_status(node, fetch_json(url, timeout))
    except ViewUnavailable as exc:
        return BgpSessions(node, error=str(exc))
    except (KeyError, TypeError, ValueError) as exc:
        return BgpSessions(node, error=f"{url}: not a bgpd status: {exc}")
