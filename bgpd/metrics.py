"""bgpd's Prometheus metrics: sessions by state, prefixes per peer, install and API errors, BFD
state per peer and BFD-triggered teardowns.

Each Speaker gets its own registry (no global state), served by calyx.observability.HealthServer.
"""
from __future__ import annotations

from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

STATES = ("Idle", "Connect", "Active", "Established")
BFD_CODES = {"adm-down": 0, "down": 1, "init": 2, "up": 3, "unknown": -1}


class SpeakerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("bgpd_sessions", "BGP sessions by state", ["state"], registry=r)
        self.received = Gauge("bgpd_prefixes_received", "Prefixes received per peer", ["peer"], registry=r)
        self.accepted = Gauge("bgpd_prefixes_accepted", "Prefixes accepted by the import policy per peer",
                              ["peer"], registry=r)
        self.advertised = Gauge("bgpd_prefixes_advertised", "Prefixes advertised per peer", ["peer"], registry=r)
        self.route_writes = Counter("bgpd_route_writes", "Kernel route writes (adds, replaces, deletes)",
                                    registry=r)
        self.install_errors = Counter("bgpd_route_install_errors", "Kernel route writes that failed",
                                      registry=r)
        self.api_errors = Counter("bgpd_exabgp_command_errors", "ExaBGP API commands answered with error",
                                  registry=r)
        self.max_prefix_teardowns = Counter("bgpd_max_prefix_teardowns",
                                            "Sessions torn down for exceeding the maximum prefix count",
                                            registry=r)
        self.bfd_state = Gauge("bgpd_bfd_state", "BFD session state per peer (RFC 5880: 0 AdminDown, 1 Down, "
                               "2 Init, 3 Up; -1 not reported yet); peers without BFD have none", ["peer"],
                               registry=r)
        self.bfd_teardowns = Counter("bgpd_bfd_teardowns", "Sessions torn down because BFD declared the peer down",
                                     registry=r)
        self._peers: set[str] = set()
        self._bfd_peers: set[str] = set()

    def observe(self, peers: Iterable[dict[str, Any]]) -> None:
        counts = dict.fromkeys(STATES, 0)
        seen: set[str] = set()
        for p in peers:
            counts[p["state"]] = counts.get(p["state"], 0) + 1
            addr = p["peer_address"]
            seen.add(addr)
            self.received.labels(addr).set(p["prefixes_received"])
            self.accepted.labels(addr).set(p["prefixes_accepted"])
            self.advertised.labels(addr).set(p["prefixes_advertised"])
        bfd_seen = set()
        for p in peers:
            code = BFD_CODES.get(p.get("bfd", ""))
            if code is not None:
                bfd_seen.add(p["peer_address"])
                self.bfd_state.labels(p["peer_address"]).set(code)
        for gone in self._bfd_peers - bfd_seen:
            self.bfd_state.remove(gone)
        self._bfd_peers = bfd_seen
        for state, n in counts.items():
            self.sessions.labels(state).set(n)
        for gone in self._peers - seen:
            for g in (self.received, self.accepted, self.advertised):
                g.remove(gone)
        self._peers = seen
