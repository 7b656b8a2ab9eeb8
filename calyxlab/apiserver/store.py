"""Versioned in-memory object storage with a bounded event history and watch fan-out.

One global, monotonically increasing resourceVersion orders every write. Each kind keeps its
objects, its last ``history`` events and its watchers, so a write touches only its own kind
and replaying a watch scans only the events after the requested version. A watch whose
starting version fell out of the window gets 410 Gone; a list at an exact past version is
rebuilt by undoing the retained events, or is Gone too.

Every method runs on the server's event-loop thread; stored objects are never mutated in
place (writers store new dicts), so readers may serialise them without copying.
"""
from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any, Iterator

from calyxlab.apiserver.errors import gone, resource_version_too_large
from calyxlab.apiserver.selectors import FieldSelector, LabelSelector

ObjectKey = tuple[str, str]        # (namespace or "", name)
KindKey = tuple[str, str]          # (group, plural)


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta["name"])


@dataclass(frozen=True)
class Event:
    resource_version: int
    type: str                          # ADDED | MODIFIED | DELETED
    object: dict[str, Any]
    previous: dict[str, Any] | None    # the object before this write


@dataclass(eq=False)
class Watcher:
    """One open watch: its filters and the queue of (type, object) it still has to send."""

    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    limit: int
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def selects(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def offer(self, event: Event) -> None:
        """Queue what this watch sees of ``event`` (including selector enter/leave)."""
        now = event.type != "DELETED" and self.selects(event.object)
        before = self.selects(event.previous)
        if event.type == "DELETED":
            if before:
                self._push("DELETED", event.object)
        elif now and before:
            self._push("MODIFIED", event.object)
        elif now:
            self._push("ADDED", event.object)
        elif before and event.previous is not None:
            # Left the selection: DELETED with the last state it matched in, at the new version.
            gone_obj = dict(event.previous)
            gone_obj["metadata"] = {**event.previous["metadata"],
                                    "resourceVersion": str(event.resource_version)}
            self._push("DELETED", gone_obj)

    def _push(self, kind: str, obj: dict[str, Any]) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self.limit:
            # A watcher this far behind is closed, as the real server does; it relists.
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait((kind, obj))

    def close(self) -> None:
        self.queue.put_nowait(None)


@dataclass
class _Kind:
    history_size: int
    objects: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    history: collections.deque = field(default_factory=collections.deque)
    compacted: int = 0         # events at or below this version may be missing from history
    watchers: set = field(default_factory=set)

    def record(self, event: Event) -> None:
        if len(self.history) >= self.history_size:
            self.compacted = self.history.popleft().resource_version
        self.history.append(event)
        for watcher in list(self.watchers):
            watcher.offer(event)


class Store:
    def __init__(self, history: int = 1000, watch_queue_limit: int = 100_000):
        if history < 1:
            raise ValueError(f"history: {history!r}: must be at least 1")
        self._history = history
        self._queue_limit = watch_queue_limit
        self._kinds: dict[KindKey, _Kind] = {}
        self._rv = 0

    @property
    def resource_version(self) -> int:
        return self._rv

    def _kind(self, key: KindKey) -> _Kind:
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._kinds[key] = _Kind(self._history)
        return kind

    def get(self, key: KindKey, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._kind(key).objects.get((namespace or "", name))

    def objects(self, key: KindKey, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        for (ns, _), obj in self._kind(key).objects.items():
            if namespace is None or ns == namespace:
                yield obj

    def write(self, key: KindKey, obj: dict[str, Any], event_type: str) -> dict[str, Any]:
        """Store ``obj`` (ADDED or MODIFIED) at a new resourceVersion; returns the stored object."""
        kind = self._kind(key)
        self._rv += 1
        stored = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)}}
        okey = object_key(stored)
        previous = kind.objects.get(okey)
        kind.objects[okey] = stored
        kind.record(Event(self._rv, event_type, stored, previous))
        return stored

    def remove(self, key: KindKey, namespace: str | None, name: str) -> dict[str, Any]:
        """Delete an object (it must exist); the DELETED event carries a new resourceVersion."""
        kind = self._kind(key)
        previous = kind.objects.pop((namespace or "", name))
        self._rv += 1
        final = {**previous, "metadata": {**previous["metadata"], "resourceVersion": str(self._rv)}}
        kind.record(Event(self._rv, "DELETED", final, previous))
        return final

    def drop_kind(self, key: KindKey) -> None:
        """Forget a kind entirely (its CRD was deleted); its watches end."""
        kind = self._kinds.pop(key, None)
        if kind:
            for watcher in kind.watchers:
                watcher.close()

    def list_at(self, key: KindKey, resource_version: int) -> list[dict[str, Any]]:
        """The kind's objects as they were at ``resource_version`` (410 Gone if compacted)."""
        kind = self._kind(key)
        if resource_version > self._rv:
            raise resource_version_too_large(resource_version, self._rv)
        if resource_version < kind.compacted:
            raise gone(f"The resourceVersion for the provided list is too old: {resource_version} "
                       f"(oldest available: {kind.compacted})")
        state = dict(kind.objects)
        for event in reversed(kind.history):
            if event.resource_version <= resource_version:
                break
            okey = object_key(event.object)
            if event.previous is None:
                state.pop(okey, None)
            else:
                state[okey] = event.previous
        return list(state.values())

    def watch(self, key: KindKey, watcher: Watcher, since: int | None) -> Watcher:
        """Register ``watcher``. ``since`` None: ADDED for each current object first; else replay
        the retained events after ``since`` (410 Gone if they are no longer all retained)."""
        kind = self._kind(key)
        if since is None:
            for obj in kind.objects.values():
                if watcher.selects(obj):
                    watcher._push("ADDED", obj)
        else:
            if since > self._rv:
                raise resource_version_too_large(since, self._rv)
            if since < kind.compacted:
                raise gone(f"too old resource version: {since} ({kind.compacted})")
            pending = []
            for event in reversed(kind.history):
                if event.resource_version <= since:
                    break
                pending.append(event)
            for event in reversed(pending):
                watcher.offer(event)
        kind.watchers.add(watcher)
        return watcher

    def watch_count(self, key: KindKey) -> int:
        kind = self._kinds.get(key)
        return len(kind.watchers) if kind else 0

    def unwatch(self, key: KindKey, watcher: Watcher) -> None:
        kind = self._kinds.get(key)
        if kind:
            kind.watchers.discard(watcher)

    def make_watcher(self, namespace: str | None, labels: LabelSelector, fields: FieldSelector) -> Watcher:
        return Watcher(namespace=namespace, labels=labels, fields=fields, limit=self._queue_limit)
