"""Collecting a node's leaked addresses: allocations of the node's IPAM records whose pod no
longer holds them (what counts as leaked, and when, is :mod:`calyx.cni.leaks`).

The records live on the node (``$run_dir/ipam/state.json``), so every node's felix collects its
own: a pass reads the records (whole-file replaced, so without the lock), then the Pods bound to
the node from the API, remembers since when each allocation has been suspect, and releases those
suspect for ``leak_grace`` seconds under the node's IPAM lock, each only if it is still recorded
as it was read. A pass whose API read fails changes nothing (the suspects are kept, not aged
out).

What is released is the address only: the dead sandbox's veth went with its network namespace,
and a route left to the address is replaced by the next pod's.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Callable, Iterable, Mapping

from calyx import model
from calyx.cni import ipam, leaks
from calyx.cni.blocks import API_FAILURES, Api
from calyx.cni.config import CniError
from calyx.logs import get_logger

DEFAULT_LEAK_GRACE_S = 900.0           # Calico's kube-controllers wait 15 minutes too
DEFAULT_INTERVAL_S = 60.0

log = get_logger("calyx.cni.leakgc")


def held(alloc: ipam.Allocation) -> leaks.Held:
    return leaks.Held(alloc.container_id, alloc.ifname, alloc.address, alloc.namespace, alloc.pod)


def pod_addresses(raw_pods: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], tuple[IPv4Address, ...]]:
    """``(namespace, name) -> status addresses`` of the Pods; an unparsable Pod counts as
    present with no address (its allocations are never judged leaked on its account)."""
    out: dict[tuple[str, str], tuple[IPv4Address, ...]] = {}
    for raw in raw_pods:
        meta = raw.get("metadata") or {}
        try:
            pod = model.parse_pod(raw)
            out[pod.key] = pod.ips
        except model.ValidationError as exc:
            log.warning("pod not understood; its addresses are kept", error=str(exc))
            out[(str(meta.get("namespace", "")), str(meta.get("name", "")))] = ()
    return out


@dataclass
class LeakCollector:
    """Passes over one node's records; remembers since when each allocation has been suspect."""

    api: Api
    node: str
    store: ipam.AddressStore
    leak_grace: float = DEFAULT_LEAK_GRACE_S
    clock: Callable[[], float] = time.monotonic
    since: dict[leaks.Held, float] = field(default_factory=dict)

    def pass_once(self) -> list[ipam.Allocation]:
        """One pass; returns the allocations released."""
        records = self.store.read().allocations            # before the Pods: see the module docstring
        pods = pod_addresses(self.api.list_pods_on(self.node))
        now = self.clock()
        current = leaks.suspects((held(a) for a in records), pods)
        self.since = leaks.note_suspects(current, self.since, now)
        due = {s.held: s.reason for s in leaks.due(current, self.since, now, self.leak_grace)}
        if not due:
            return []
        wanted = [a for a in records if held(a) in due]
        with self.store.locked():
            freed = ipam.release_held(self.store, wanted)
        for alloc in freed:
            self.since.pop(held(alloc), None)
            log.info("released leaked address", node=self.node, address=str(alloc.address),
                     container=alloc.container_id, pod=f"{alloc.namespace}/{alloc.pod}", reason=due[held(alloc)])
        return freed

    def pending(self) -> bool:
        """True when some allocation is suspect but still within its grace period."""
        return bool(self.since)

    def run(self, stop: threading.Event, interval: float = DEFAULT_INTERVAL_S) -> None:
        """Until ``stop``: a pass every ``interval`` seconds."""
        while not stop.is_set():
            try:
                self.pass_once()
            except API_FAILURES as exc:
                log.warning("leaked-address collection failed; will retry", node=self.node, error=str(exc))
            except CniError as exc:
                log.warning("leaked-address collection failed; will retry", node=self.node, error=exc.msg)
            stop.wait(interval)
