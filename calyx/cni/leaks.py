"""Which of a node's address allocations have leaked: held in the node's IPAM records for a pod
that no longer holds them (pure).

An allocation leaks when the DEL that should free it never comes: the plugin was killed in the
middle of an ADD and the runtime then forgot the sandbox, the runtime's own teardown failed, or a
sandbox was removed behind the runtime's back. Like Calico's IPAM garbage collection (in
kube-controllers), the API decides: the allocation of pod ``namespace/name`` is *suspect* when

* no Pod of that namespace and name is bound to this node (gone, or now on another node), or
* the Pod's status lists its addresses and this one is not among them (the Pod's sandbox was
  replaced and the old one's address never released).

and it is released only once it has been suspect at every pass for the grace period (the Pod's
status lags its newest sandbox by a few seconds; a pod being created has its Pod object before
its ADD). An allocation without a pod name (a runtime that passed no ``K8S_POD_*``) is never
judged. :mod:`calyx.cni.leakgc` reads the records and the API and releases.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Iterable, Mapping


@dataclass(frozen=True)
class Held:
    """One allocation of the node's records, as the leak decision needs it."""

    container_id: str
    ifname: str
    address: IPv4Address
    namespace: str
    pod: str


@dataclass(frozen=True)
class Suspect:
    held: Held
    reason: str


def suspects(held: Iterable[Held], pods: Mapping[tuple[str, str], tuple[IPv4Address, ...]]) -> list[Suspect]:
    """The allocations whose pod does not hold them. ``pods``: every Pod bound to this node,
    ``(namespace, name) -> status addresses`` (empty while the Pod has none yet)."""
    out = []
    for h in held:
        if not h.pod:
            continue
        ips = pods.get((h.namespace, h.pod))
        if ips is None:
            out.append(Suspect(h, f"pod {h.namespace}/{h.pod} is not on this node"))
        elif ips and h.address not in ips:
            out.append(Suspect(h, f"pod {h.namespace}/{h.pod} holds {', '.join(map(str, ips))} instead"))
    return out


def note_suspects(current: Iterable[Suspect], since: Mapping[Held, float], now: float) -> dict[Held, float]:
    """Since when each allocation has been suspect; one that is not suspect any more is forgotten."""
    return {s.held: since.get(s.held, now) for s in current}


def due(current: Iterable[Suspect], since: Mapping[Held, float], now: float, grace: float) -> list[Suspect]:
    """The suspects that have been suspect, at every pass, for at least ``grace`` seconds."""
    return [s for s in current if s.held in since and now - since[s.held] >= grace]
