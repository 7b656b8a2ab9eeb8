"""felix's Prometheus metrics, on one registry shared with its datastore and served at /metrics."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class FelixMetrics:
    routes_desired: Gauge
    routes_programmed: Gauge
    routes_pending: Gauge
    route_conflicts: Gauge
    reconcile_seconds: Histogram
    netlink_writes: Counter
    errors: Counter
    ipip_available: Gauge
    resyncs: Counter
    nat_available: Gauge
    policy_available: Gauge
    policy_dropped: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> "FelixMetrics":
        return cls(
            routes_desired=Gauge("felix_routes_desired", "Routes felix wants on this node (pod /32s, block "
                                 "blackholes and routes to VXLAN blocks)", registry=registry),
            routes_programmed=Gauge("felix_routes_programmed", "Desired routes the kernel holds as wanted",
                                    registry=registry),
            routes_pending=Gauge("felix_routes_pending", "Pod routes waiting for their cali interface",
                                 registry=registry),
            route_conflicts=Gauge("felix_route_conflicts", "Desired routes blocked by another owner's route",
                                  registry=registry),
            reconcile_seconds=Histogram("felix_reconcile_duration_seconds", "Time to reconcile the dataplane",
                                        buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                        registry=registry),
            netlink_writes=Counter("felix_netlink_writes_total",
                                   "Netlink changes felix made, by object (nat, policy: nftables transactions)",
                                   ["object"], registry=registry),
            errors=Counter("felix_errors_total", "Dataplane operations that failed, by kind", ["kind"],
                           registry=registry),
            ipip_available=Gauge("felix_ipip_available", "1 if the kernel can provide the IPIP device tunl0",
                                 registry=registry),
            resyncs=Counter("felix_resyncs_total", "Full reads of the kernel's routes and links",
                            registry=registry),
            nat_available=Gauge("felix_nat_available", "1 if libnftables is there to program natOutgoing",
                                registry=registry),
            policy_available=Gauge("felix_policy_available",
                                   "1 if libnftables is there to enforce NetworkPolicy", registry=registry),
            policy_dropped=Gauge("felix_policy_dropped_packets",
                                 "Packets NetworkPolicy dropped, by endpoint (its cali device) and direction, "
                                 "as counted at the last resync", ["endpoint", "direction"], registry=registry),
        )
