"""The operator's views of a speaker: ``bgpd status`` (one row per session) and ``bgpd routes``
(what was learned and why it was accepted or refused, what is installed, what is advertised).

Pure code: the speaker hands its state in under its lock; these functions only shape it into
the JSON the control socket serves.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Mapping

from calyx.route import Route

from bgpd.importer import InstallDecision
from bgpd.peers import LocalSpeaker
from bgpd.rib import Path, Rib
from bgpd.session import Session


def session_rows(sessions: Mapping[IPv4Address, Session], rib: Rib,
                 bfd_state: Callable[[IPv4Address], str] = lambda a: "",
                 bfd_info: Callable[[IPv4Address], str] = lambda a: "") -> list[dict[str, Any]]:
    """One row per session; ``bfd`` is the BFD state ('' without BFD), and a BFD session that is
    not up says so first in ``info``."""
    out = []
    for address, s in sessions.items():
        info = s.peer.error or s.md5_hint or s.info or ("stale (graceful restart)" if s.stale_until else "")
        bfd_line = bfd_info(address) or s.peer.bfd_info
        out.append({
            "peer_address": str(address),
            "peer_type": s.peer.peer_type.value,
            "peer_as": s.peer.peer_as,
            "node": s.peer.node,
            "source": s.peer.source,
            "rr_client": s.peer.rr_client,
            "state": "Idle" if s.peer.error or s.held_until is not None else s.state,
            "since": s.since,
            "info": "; ".join(dict.fromkeys(i for i in (bfd_line, info) if i)) if not s.peer.error else info,
            "bfd": bfd_state(address),
            "prefixes_received": len(s.received),
            "prefixes_accepted": rib.count(address),
            "prefixes_advertised": len(s.announced),
            "end_of_rib_received": s.eor,    # the peer has sent us all its routes
            "end_of_rib_sent": s.eor_sent,   # ... and we have sent it all ours
        })
    return out


def status(node: str, local: LocalSpeaker | None, error: str | None, exabgp_pid: int | None,
           exabgp_restarts: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "node": node,
        "router_id": str(local.router_id) if local else None,
        "as_number": local.as_number if local else None,
        "cluster_id": str(local.cluster_id) if local and local.cluster_id else None,
        "error": error,
        "exabgp_pid": exabgp_pid,
        "exabgp_restarts": exabgp_restarts,
        "peers": rows,
    }


def routes(sessions: Mapping[IPv4Address, Session], verdict: Callable[[Session, Path], str | None],
           decisions: Mapping[IPv4Network, InstallDecision], installed: Mapping[IPv4Network, Route],
           errors: Mapping[IPv4Network, str], now: float) -> dict[str, Any]:
    learned = []
    for address, s in sessions.items():
        for prefix, path in sorted(s.received.items()):
            why = verdict(s, path)
            learned.append({
                "prefix": str(prefix), "peer": str(address), "next_hop": str(path.attrs.next_hop),
                "as_path": " ".join(str(a) for a in path.attrs.as_path),
                "accepted": why is None, "reason": why or "",
                "stale": s.stale_until is not None and prefix not in s.refreshed,
            })
    rows = []
    for prefix, d in sorted(decisions.items()):
        route = installed.get(prefix)
        rows.append({
            "prefix": str(prefix), "next_hop": str(d.next_hop), "mode": d.mode.value,
            "pool": d.pool, "from_peer": str(d.peer),
            "ipip_in": round(max(0.0, d.ipip_at - now), 1) if d.ipip_at is not None else None,
            "route": str(route) if route is not None else None,
            "error": errors.get(prefix, ""),
        })
    adopted = [str(r) for p, r in sorted(installed.items()) if p not in decisions]
    advertised = {str(a): sorted(str(p) for p in s.announced) for a, s in sessions.items()}
    return {"learned": learned, "installed": rows, "adopted_stale": adopted, "advertised": advertised}
