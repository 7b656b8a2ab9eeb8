"""Reflectors: keep a local cache of one Kubernetes resource in step with the API.

One thread per watched resource runs the list/watch protocol:

1. **list** (with the spec's label/field selectors, in pages of 500, each object trimmed as
   its page arrives) and replace the cache, recording the list's resourceVersion; the first successful list marks the reflector *synced*;
2. **watch** from that resourceVersion with bookmarks and a server-side timeout (jittered so
   reflectors do not reconnect in lockstep); every event updates the cache and the
   resourceVersion, bookmarks only the resourceVersion;
3. when the watch ends normally (timeout, server closed it) **resume** from the last
   resourceVersion without relisting;
4. on **410 Gone** (an HTTP 410 or an ERROR event carrying a 410 Status) **relist** and turn the
   difference between the cache and the fresh list into DELETED / MODIFIED / ADDED changes;
5. on any other failure (API unreachable, connection reset, 5xx, 403 Forbidden) keep the cache
   exactly as it is and retry with exponential backoff and jitter, capped at ~30 s; the retry
   lists again (the server that answers may have a new history that would accept a stale
   resourceVersion without a 410) and applies only the difference, so an outage costs one list.
   The failure is the reflector's :attr:`Reflector.error` until a list succeeds again.

A spec may pin one object (:meth:`WatchSpec.named`: field selector ``metadata.name=NAME``), which
the API server authorizes by RBAC ``resourceNames``: a datastore watches single Secrets so.

:meth:`Reflector.stop` sets the stop event and shuts the open watch response, so the thread
leaves a blocked read at once.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge

from calyx.kube import resources
from calyx.kube.client import describe_error
from calyx.kube.resources import RawObject, Resource
from calyx.logs import get_logger

Key = tuple[str, str]
ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
GONE = 410
NAME_FIELD = "metadata.name"


@dataclass(frozen=True)
class WatchSpec:
    """What one reflector watches: a resource, optionally one namespace, and selectors."""

    resource: Resource
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None

    @classmethod
    def named(cls, resource: Resource, name: str, namespace: str | None = None) -> "WatchSpec":
        """One object by name: list and watch with the field selector ``metadata.name=NAME``.
        kube-apiserver authorizes such a list or watch like a get of that name, so RBAC
        ``resourceNames`` can grant it."""
        if not name:
            raise ValueError(f"{resource}: a named watch needs a name")
        return cls(resource, namespace, field_selector=f"{NAME_FIELD}={name}")

    @property
    def name(self) -> str | None:
        """The one object's name when the spec pins it (:meth:`named`), else None."""
        prefix = f"{NAME_FIELD}="
        selector = self.field_selector or ""
        if selector.startswith(prefix) and "," not in selector:
            return selector[len(prefix):]
        return None

    def describe(self) -> str:
        parts = [str(self.resource)]
        if self.namespace:
            parts.append(f"namespace={self.namespace}")
        if self.label_selector:
            parts.append(f"labels={self.label_selector}")
        if self.field_selector:
            parts.append(f"fields={self.field_selector}")
        return " ".join(parts)


@dataclass(frozen=True)
class Change:
    """One cache change: the event type, the object's key, the object (the last known one for
    DELETED)."""

    type: str
    key: Key
    obj: RawObject


class Backoff:
    """Exponential backoff with full jitter: the n-th delay is uniform in
    [base·factor^n / 2, base·factor^n], never above ``cap``."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        self.base, self.cap, self.factor = base, cap, factor
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * self.factor ** self._attempt)
        self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt


def diff_lists(old: dict[Key, RawObject], new_items: list[RawObject]) -> tuple[dict[Key, RawObject], list[Change]]:
    """The new cache content and the changes that turn ``old`` into it: objects missing from
    the new list are DELETED, those that differ are MODIFIED, new ones ADDED."""
    fresh = {resources.object_key(obj): obj for obj in new_items}
    changes: list[Change] = []
    for key, obj in old.items():
        if key not in fresh:
            changes.append(Change(DELETED, key, obj))
    for key, obj in fresh.items():
        before = old.get(key)
        if before is None:
            changes.append(Change(ADDED, key, obj))
        elif before != obj:
            # Usually the resourceVersion moved; a server with a new history can reuse a
            # version number for different content, so the whole object is compared.
            changes.append(Change(MODIFIED, key, obj))
    return fresh, changes


class Cache:
    """The objects of one resource by (namespace, name); thread-safe. Every change is passed to
    ``on_change`` (called with the cache's lock released)."""

    def __init__(self, on_change: Callable[[list[Change]], None] | None = None) -> None:
        self._objects: dict[Key, RawObject] = {}
        self._lock = threading.Lock()
        self._on_change = on_change

    def replace(self, items: list[RawObject]) -> list[Change]:
        with self._lock:
            self._objects, changes = diff_lists(self._objects, items)
        self._notify(changes)
        return changes

    def apply(self, event_type: str, obj: RawObject) -> Change:
        key = resources.object_key(obj)
        with self._lock:
            if event_type == DELETED:
                obj = self._objects.pop(key, obj)
                change = Change(DELETED, key, obj)
            else:
                change = Change(MODIFIED if key in self._objects else ADDED, key, obj)
                self._objects[key] = obj
        self._notify([change])
        return change

    def _notify(self, changes: list[Change]) -> None:
        if changes and self._on_change is not None:
            self._on_change(changes)

    def get(self, key: Key) -> RawObject | None:
        with self._lock:
            return self._objects.get(key)

    def items(self) -> dict[Key, RawObject]:
        with self._lock:
            return dict(self._objects)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


class ReflectorMetrics:
    """Reflector counters on one daemon's registry, labelled by resource."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.watch_restarts = Counter("calyx_datastore_watch_restarts_total",
                                      "Watches re-opened from the last resourceVersion", ["resource"],
                                      registry=registry)
        self.relists = Counter("calyx_datastore_relists_total",
                               "Full lists after the first (410 Gone or after an error)", ["resource"],
                               registry=registry)
        self.errors = Counter("calyx_datastore_errors_total", "Failed list or watch requests",
                              ["resource"], registry=registry)
        self.events = Counter("calyx_datastore_events_total", "Watch events received, by type",
                              ["resource", "type"], registry=registry)
        self.objects = Gauge("calyx_datastore_objects", "Objects in the local cache", ["resource"],
                             registry=registry)
        self.synced = Gauge("calyx_datastore_synced", "1 once the first list completed", ["resource"],
                            registry=registry)

    def forget(self, label: str) -> None:
        """Drop every series of one reflector's label (a watch that was removed)."""
        for metric in (self.watch_restarts, self.relists, self.errors, self.objects, self.synced):
            metric.remove(label)
        for event_type in (ADDED, MODIFIED, DELETED, "BOOKMARK", "ERROR"):
            self.events.remove(label, event_type)


class _Relist(Exception):
    """The watch said 410 Gone: the resourceVersion is too old, list again."""


class Reflector:
    """Keeps ``cache`` in step with the objects ``spec`` selects, in its own thread."""

    def __init__(self, api: kubernetes.client.ApiClient, spec: WatchSpec, cache: Cache,
                 metrics: ReflectorMetrics, watch_timeout: float = 300.0, backoff: Backoff | None = None,
                 on_synced: Callable[[], None] | None = None, rng: random.Random | None = None,
                 label: str | None = None, on_error: Callable[[], None] | None = None,
                 keep: Callable[[RawObject], RawObject] | None = None) -> None:
        """``label`` names the reflector in metrics and logs (default: the resource);
        ``on_error`` is called whenever :attr:`error` changes (a new failure, or cleared by a
        successful list); ``keep`` cuts each (trimmed) object down to what its readers need
        before it is cached."""
        self.api = api
        self.spec = spec
        self.cache = cache
        self.metrics = metrics
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self._on_synced = on_synced
        self._on_error = on_error
        self._error: tuple[BaseException, str] | None = None
        self._error_lock = threading.Lock()
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._response: Any = None
        self._response_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.resource_version = ""
        self._label = label or str(spec.resource)
        self._keep = keep
        self._log = get_logger("calyx.kube.reflector")

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return self._label

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    @property
    def failure(self) -> tuple[BaseException, str] | None:
        """The last list/watch failure and its one-line account (with the API's own message: a
        403 says who was refused what), until a list succeeds again; None when there is none."""
        with self._error_lock:
            return self._error

    @property
    def error(self) -> BaseException | None:
        failure = self.failure
        return failure[0] if failure else None

    @property
    def error_text(self) -> str | None:
        failure = self.failure
        return failure[1] if failure else None

    def _set_error(self, exc: BaseException | None) -> None:
        text = describe_error(exc, api_message=True) if exc is not None else None
        with self._error_lock:
            changed = (self._error[1] if self._error else None) != text
            self._error = (exc, text) if exc is not None and text is not None else None
        if changed and self._on_error is not None:
            self._on_error()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"reflector-{self._label}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        self.join(timeout)

    def request_stop(self) -> None:
        """Ask the thread to exit and unblock its watch read; returns at once."""
        self._stop.set()
        with self._response_lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # already closed: nothing to unblock
                pass

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._log.warning("reflector did not stop in time", resource=self._label, timeout=timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the protocol ------------------------------------------------------------------------

    def _run(self) -> None:
        self.metrics.synced.labels(self._label).set(0)
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                if self._watch_once():
                    self.metrics.watch_restarts.labels(self._label).inc()
            except _Relist:
                need_list = True
                self._log.info("resourceVersion expired, relisting", resource=self._label,
                               resource_version=self.resource_version)
            except Exception as exc:  # the API is unreachable or misbehaving: keep the cache, retry
                if self._stop.is_set():
                    break
                # After a failure the server may be a different one (restored, restarted with a
                # new history) that would silently accept our resourceVersion: relist. The
                # cache stays as it is until that list succeeds, and only the difference is
                # applied then.
                need_list = True
                if isinstance(exc, ApiException) and exc.status == GONE:
                    self._log.info("resourceVersion expired, relisting", resource=self._label,
                                   resource_version=self.resource_version)
                    continue
                self.metrics.errors.labels(self._label).inc()
                delay = self.backoff.next_delay()
                self._set_error(exc)
                self._log.warning("list/watch failed, keeping cache and retrying", resource=self._label,
                                  error=self.error_text, retry_in=round(delay, 2),
                                  attempt=self.backoff.attempts, cached=len(self.cache))
                if self._stop.wait(delay):
                    break
        self._log.debug("reflector stopped", resource=self._label)

    def _list(self) -> None:
        spec = self.spec
        listed = resources.list_objects(self.api, spec.resource, spec.namespace,
                                        spec.label_selector, spec.field_selector, each=self._cached_form)
        changes = self.cache.replace(listed.items)
        self._set_error(None)
        first = not self._synced.is_set()
        if not first:
            self.metrics.relists.labels(self._label).inc()
        self.resource_version = listed.resource_version
        self.backoff.reset()
        self.metrics.objects.labels(self._label).set(len(self.cache))
        for change in changes if not first else ():
            self.metrics.events.labels(self._label, change.type).inc()
        self._log.info("listed", resource=self._label, objects=len(listed.items), changes=len(changes),
                       resource_version=listed.resource_version, first=first)
        if first:
            self._synced.set()
            self.metrics.synced.labels(self._label).set(1)
            if self._on_synced is not None:
                self._on_synced()

    def _cached_form(self, obj: RawObject) -> RawObject:
        trimmed = resources.trimmed(obj)
        return self._keep(trimmed) if self._keep is not None else trimmed

    def _jittered_timeout(self) -> int:
        return max(1, int(self.watch_timeout * self._rng.uniform(1.0, 1.2)))

    def _watch_once(self) -> bool:
        """One watch request; True when it ended normally (resume), raises otherwise."""
        spec = self.spec
        started = time.monotonic()
        response = resources.open_watch(self.api, spec.resource, self.resource_version,
                                        self._jittered_timeout(), spec.namespace,
                                        spec.label_selector, spec.field_selector)
        with self._response_lock:
            self._response = response
        if self._stop.is_set():  # stop() ran before the response was published
            response.shutdown()
        received = 0
        try:
            for event_type, obj in resources.iter_watch_events(response):
                if self._stop.is_set():
                    return False
                received += 1
                self._handle(event_type, obj)
        finally:
            with self._response_lock:
                self._response = None
            response.release_conn()
            response.close()
        if self._stop.is_set():
            return False
        if received == 0 and time.monotonic() - started < 1.0:
            # A watch that closes at once without a word: do not spin on it.
            self._stop.wait(self.backoff.next_delay())
        else:
            self.backoff.reset()
        return True

    def _handle(self, event_type: str, obj: RawObject) -> None:
        label = self._label
        if event_type == "BOOKMARK":
            self.metrics.events.labels(label, event_type).inc()
            self.resource_version = resources.resource_version_of(obj) or self.resource_version
            return
        if event_type == "ERROR":
            self.metrics.events.labels(label, event_type).inc()
            code = obj.get("code")
            if code == GONE:
                raise _Relist()
            raise ApiException(status=code or 500, reason=f"watch ERROR event: {obj.get('reason')}: "
                                                         f"{obj.get('message')}")
        if event_type not in (ADDED, MODIFIED, DELETED):
            self._log.warning("unknown watch event type ignored", resource=label, type=event_type)
            return
        self.metrics.events.labels(label, event_type).inc()
        resources.with_type(self.spec.resource, obj)
        self.cache.apply(event_type, self._cached_form(obj))
        self.metrics.objects.labels(label).set(len(self.cache))
        self.resource_version = resources.resource_version_of(obj) or self.resource_version


