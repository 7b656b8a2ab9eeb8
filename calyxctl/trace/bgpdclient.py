"""Reads one node's BGP sessions from its bgpd: the read-only ``/status`` view on bgpd's health
port (what ``bgpd status -o json`` shows). I/O only."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from calyxctl.trace.facts import BgpSessions

DEFAULT_BGPD_PORT = 9098       # the chart's bgpd.healthPort


def read_sessions(node: str, base_url: str, timeout: float) -> BgpSessions:
    """``node``'s sessions, or a BgpSessions carrying why they could not be read."""
    url = f"{base_url}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return BgpSessions.from_status(node, json.loads(reply.read()))
    except urllib.error.HTTPError as exc:
        return BgpSessions(node, error=f"{url}: HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        return BgpSessions(node, error=f"{url}: {getattr(exc, 'reason', exc)}")
