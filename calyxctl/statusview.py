"""``calyxctl node status`` as text: a header saying whether the node's BGP daemon runs and
what it is (router ID, AS, route reflector), then the peers in calicoctl's table (PEER ADDRESS,
PEER TYPE, STATE, SINCE, INFO), from the JSON ``bgpd status -o json`` prints.

Pure code: the status and the current time in, text out.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from calyxctl.tables import boxed_table

PEER_COLUMNS = ("PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO")


def since(timestamp: float | None, now: float, local: bool = True) -> str:
    """When a session last changed state: a time of day within the last day, else the date."""
    if not timestamp:
        return "-"
    convert = time.localtime if local else time.gmtime
    if now - timestamp < 86400:
        return time.strftime("%H:%M:%S", convert(timestamp))
    return time.strftime("%Y-%m-%d", convert(timestamp))


def peer_rows(status: Mapping[str, Any], now: float, local_time: bool = True) -> list[list[str]]:
    rows = []
    for peer in status.get("peers") or []:
        rows.append([str(peer.get("peer_address", "")), str(peer.get("peer_type", "")), str(peer.get("state", "")),
                     since(peer.get("since"), now, local_time), str(peer.get("info") or peer.get("state") or "")])
    return rows


def format_status(status: Mapping[str, Any], now: float, local_time: bool = True) -> str:
    node = status.get("node") or "?"
    head = f"Calyx bgpd is running on node {node}"
    facts = []
    if status.get("router_id"):
        facts.append(f"router ID {status['router_id']}")
    if status.get("as_number"):
        facts.append(f"AS {status['as_number']}")
    if status.get("cluster_id"):
        facts.append(f"route reflector, cluster ID {status['cluster_id']}")
    lines = [head + (f" ({', '.join(facts)})." if facts else ".")]
    if status.get("error"):
        lines.append(f"Configuration error: {status['error']}")
    rows = peer_rows(status, now, local_time)
    lines += ["", "IPv4 BGP status", boxed_table(PEER_COLUMNS, rows) if rows else "No IPv4 peers found.",
              "", "IPv6 BGP status", "No IPv6 peers found."]
    return "\n".join(lines)


def not_running(where: str, reason: str) -> str:
    return f"Calyx bgpd is not running {where}: {reason}"
