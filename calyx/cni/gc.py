"""Garbage collection of IPAM blocks: the blocks of a deleted Node go back to their pool.

A block affine to node N is released (its IPAMBlock deleted) only when all of these hold:

* the collector has seen Node N absent, at every pass, for at least ``node_grace`` seconds.
  This covers a node that claims a block just before its Node object is registered, and it is
  what makes the CNI plugin's cache of the node's CIDRs safe: the plugin trusts a confirmation
  from the API for at most ``ipam_cache_ttl`` (<= 60 s) seconds, and every confirmation is made
  while the Node exists, so once the Node has been gone longer than that TTL no node can still
  be using a cached copy of the block (``node_grace`` must exceed the TTL; default 120 s);
* no Pod is bound to N any more (``spec.nodeName=N``, terminating or not);
* the delete carries the block's uid and resourceVersion as preconditions, so a block that was
  re-claimed or changed since it was read is not lost (the API answers 409 and it is skipped).

Who collects: every felix runs :meth:`GarbageCollector.run`, but only the node whose name is
the lexicographically smallest of the existing Nodes does a pass; the others reset their
memory. No election is needed: all of them compute the same answer from the Node list, and
when two briefly disagree both collectors' deletes are safe (preconditions; 404/409 skipped).
``calyx-cni gc`` runs the same passes by hand.

The decisions (:func:`note_absent_nodes`, :func:`blocks_to_release`, :func:`is_collector`) are
pure; :class:`GarbageCollector` does the API I/O.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any, Callable, Iterable, Mapping

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from calyx import crds, model
from calyx.cni.blocks import API_FAILURES, IPAMBLOCK_PLURAL, Api
from calyx.logs import get_logger
from calyx.specschema import SpecSchemas

DEFAULT_NODE_GRACE_S = 120.0
DEFAULT_INTERVAL_S = 60.0

log = get_logger("calyx.cni.gc")


@dataclass(frozen=True)
class BlockRef:
    """What the collector needs of one IPAMBlock."""

    name: str
    cidr: IPv4Network
    node: str | None
    uid: str | None
    resource_version: str | None


def block_refs(raw_blocks: Iterable[Mapping[str, Any]], schemas: SpecSchemas) -> list[BlockRef]:
    """Parsed blocks; invalid objects are logged (object, field, value) and left alone."""
    refs = []
    for raw in raw_blocks:
        try:
            block = model.parse_ipam_block(raw, schemas)
        except model.ValidationError as exc:
            log.warning("ignoring invalid block", error=str(exc))
            continue
        meta = raw.get("metadata", {})
        refs.append(BlockRef(name=meta.get("name", block.name), cidr=block.cidr, node=block.node,
                             uid=meta.get("uid"), resource_version=meta.get("resourceVersion")))
    return refs


def is_collector(me: str, nodes: Iterable[str]) -> bool:
    """True when ``me`` is the node that collects: the smallest existing Node name."""
    names = sorted(nodes)
    return bool(names) and names[0] == me


def note_absent_nodes(nodes: set[str], blocks: Iterable[BlockRef], absent_since: Mapping[str, float],
                      now: float) -> dict[str, float]:
    """Since when each block owner has been seen absent (owners present again are forgotten)."""
    owners = {b.node for b in blocks if b.node}
    return {owner: absent_since.get(owner, now) for owner in owners if owner not in nodes}


def blocks_to_release(blocks: Iterable[BlockRef], absent_since: Mapping[str, float], pods_left: Mapping[str, int],
                      now: float, node_grace: float) -> list[BlockRef]:
    """The blocks whose owner has been absent for ``node_grace`` and has no Pod left bound to it
    (an owner missing from ``pods_left`` was not counted: kept)."""
    return [b for b in blocks
            if b.node in absent_since and now - absent_since[b.node] >= node_grace
            and pods_left.get(b.node, 1) == 0]


@dataclass
class GarbageCollector:
    """Passes over the API; remembers since when each absent owner has been absent."""

    api: Api
    node_grace: float = DEFAULT_NODE_GRACE_S
    clock: Callable[[], float] = time.monotonic
    absent_since: dict[str, float] = field(default_factory=dict)
    schemas: SpecSchemas = field(default_factory=crds.spec_schemas)

    def pass_once(self) -> list[str]:
        """One pass; returns the names of the blocks released."""
        nodes = {raw.get("metadata", {}).get("name") for raw in self.api.list_nodes()}
        blocks = block_refs(self.api.list_custom(IPAMBLOCK_PLURAL), self.schemas)
        now = self.clock()
        self.absent_since = note_absent_nodes(nodes, blocks, self.absent_since, now)
        due = {n for n, since in self.absent_since.items() if now - since >= self.node_grace}
        pods_left = {n: len(self.api.list_pods_on(n)) for n in sorted(due)}
        for node, count in pods_left.items():
            if count:
                log.info("keeping the blocks of a deleted node until its pods are gone", node=node, pods=count)
        released = []
        for block in blocks_to_release(blocks, self.absent_since, pods_left, now, self.node_grace):
            if self._delete(block):
                log.info("released block of deleted node", block=str(block.cidr), name=block.name, node=block.node)
                released.append(block.name)
        return released

    def pending(self) -> bool:
        """True when some absent owner is still within its grace period."""
        return bool(self.absent_since)

    def _delete(self, block: BlockRef) -> bool:
        options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(
            uid=block.uid, resource_version=block.resource_version))
        try:
            self.api.delete_block(block.name, options)
            return True
        except ApiException as exc:
            if exc.status in (404, 409):     # gone already, or re-claimed/changed since read: keep it
                log.info("block changed since read; not released", name=block.name, status=exc.status)
                return False
            raise

    def run(self, stop: threading.Event, node: str, interval: float = DEFAULT_INTERVAL_S) -> None:
        """Until ``stop``: every ``interval`` seconds, a pass when ``node`` is the collector."""
        while not stop.is_set():
            try:
                if is_collector(node, (raw.get("metadata", {}).get("name", "") for raw in self.api.list_nodes())):
                    self.pass_once()
                else:
                    self.absent_since = {}         # another node collects; start afresh if that changes
            except API_FAILURES as exc:
                log.warning("block garbage collection failed; will retry", error=str(exc))
            stop.wait(interval)
