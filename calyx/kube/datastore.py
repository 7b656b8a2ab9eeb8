"""The Datastore: reflector caches turned into one parsed :class:`calyx.model.Snapshot`.

A daemon declares what it watches (:class:`WatchSpec` per resource), starts the Datastore, waits
for :meth:`Datastore.wait_for_change`, and calculates from :meth:`Datastore.snapshot`.

Parsing is incremental: the caches record which keys changed since the last snapshot and only
those objects go through ``calyx.model.parse_*`` again; everything else is reused. An object
that fails validation is reported once per (object, resourceVersion) — a structured log line and
a Warning Event ``InvalidResource`` on the object naming field and value — and its last valid
version stays in the snapshot, so a bad update never withdraws what is programmed. An object
invalid from its creation is simply absent.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import kubernetes.client
from prometheus_client import CollectorRegistry, Counter

from calyx import model
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyx.kube.events import EventRecorder
from calyx.kube.reflector import Backoff, Cache, Change, Key, Reflector, ReflectorMetrics, WatchSpec
from calyx.kube.resources import RawObject, Resource
from calyx.observability import Check, get_logger

INVALID_REASON = "InvalidResource"

__all__ = ["Datastore", "WatchSpec", "INVALID_REASON"]


def _by_name(key: Key) -> str:
    return key[1]


def _by_namespace_and_name(key: Key) -> tuple[str, str]:
    return key


def _secret_values(obj: RawObject) -> dict[str, str]:
    return model.parse_secret(obj)[1]


@dataclass(frozen=True)
class _Binding:
    """How one resource lands in the Snapshot: its parser and its key there."""

    parse: Callable[[RawObject], Any]
    snapshot_field: str
    snapshot_key: Callable[[Key], Any]


BINDINGS: dict[Resource, _Binding] = {
    resources.PODS: _Binding(model.parse_pod, "pods", _by_namespace_and_name),
    resources.NODES: _Binding(model.parse_node, "nodes", _by_name),
    resources.IPPOOLS: _Binding(model.parse_ippool, "ippools", _by_name),
    resources.BGPCONFIGURATIONS: _Binding(model.parse_bgp_configuration, "bgp_configuration", _by_name),
    resources.BGPPEERS: _Binding(model.parse_bgp_peer, "bgp_peers", _by_name),
    resources.IPAMBLOCKS: _Binding(model.parse_ipam_block, "blocks", _by_name),
    resources.SECRETS: _Binding(_secret_values, "secrets", _by_namespace_and_name),
}


@dataclass
class _Store:
    """One watched resource: its cache, reflector, parsed objects and bookkeeping."""

    spec: WatchSpec
    binding: _Binding
    cache: Cache
    reflector: Reflector | None = None
    parsed: dict[Key, Any] = field(default_factory=dict)
    dirty: set[Key] = field(default_factory=set)
    reported: dict[Key, str] = field(default_factory=dict)   # key -> resourceVersion reported invalid


class Datastore:
    """Watches ``specs`` and serves parsed snapshots; see the module docstring."""

    def __init__(self, client: kubernetes.client.ApiClient, specs: list[WatchSpec],
                 events: EventRecorder | None = None, namespace: str = "calyx-system",
                 registry: CollectorRegistry | None = None, watch_timeout: float = 300.0,
                 backoff: Callable[[], Backoff] = Backoff) -> None:
        self.api = client
        self.namespace = namespace
        self.events = events
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics = ReflectorMetrics(self.registry)
        self._invalid = Counter("calyx_datastore_invalid_objects_total",
                                "Object versions refused by validation", ["resource"], registry=self.registry)
        self._cond = threading.Condition()
        self._changed = False
        self._snapshot_lock = threading.Lock()
        self._log = get_logger("calyx.kube.datastore")
        self._stores: dict[Resource, _Store] = {}
        for spec in specs:
            if spec.resource not in BINDINGS:
                raise ValueError(f"datastore: resource {spec.resource} has no place in a Snapshot")
            if spec.resource in self._stores:
                raise ValueError(f"datastore: resource {spec.resource} watched twice "
                                 f"({self._stores[spec.resource].spec.describe()} and {spec.describe()})")
            if spec.resource == resources.SECRETS and spec.namespace is None:
                spec = WatchSpec(spec.resource, namespace, spec.label_selector, spec.field_selector)
            store = _Store(spec, BINDINGS[spec.resource], Cache(on_change=self._recorder_for(spec.resource)))
            store.reflector = Reflector(kube_client.clone(client), spec, store.cache, self._metrics,
                                        watch_timeout=watch_timeout, backoff=backoff(),
                                        on_synced=self._mark_changed)
            self._stores[spec.resource] = store

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        for store in self._stores.values():
            assert store.reflector is not None
            store.reflector.start()

    def stop(self, timeout: float = 10.0) -> None:
        reflectors = [s.reflector for s in self._stores.values() if s.reflector is not None]
        for reflector in reflectors:
            reflector.request_stop()
        for reflector in reflectors:
            reflector.join(timeout)
            if not reflector.alive:
                reflector.api.close()   # the per-reflector client made in __init__

    def __enter__(self) -> "Datastore":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def synced(self) -> bool:
        """Every reflector has completed its first list."""
        return all(s.reflector is not None and s.reflector.synced for s in self._stores.values())

    def wait_synced(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.synced, timeout)

    def readiness(self) -> Check:
        """For ``/readyz``: ready once every watched resource has been listed."""
        waiting = [str(r) for r, s in self._stores.items() if s.reflector is None or not s.reflector.synced]
        if waiting:
            return Check(False, f"datastore not synced: waiting for the first list of {', '.join(waiting)}")
        return Check(True, "")

    # --- change notification -------------------------------------------------------------

    def _recorder_for(self, resource: Resource) -> Callable[[list[Change]], None]:
        def record(changes: list[Change]) -> None:
            with self._cond:
                store = self._stores[resource]
                store.dirty.update(change.key for change in changes)
                self._changed = True
                self._cond.notify_all()
        return record

    def _mark_changed(self) -> None:
        with self._cond:
            self._changed = True
            self._cond.notify_all()

    def wait_for_change(self, timeout: float | None = None) -> bool:
        """Block until a cache changed (or a reflector synced) since the last :meth:`snapshot`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._changed, timeout)

    # --- snapshots -----------------------------------------------------------------------

    def raw(self, resource: Resource) -> dict[Key, RawObject]:
        """The cached raw objects of one watched resource (a copy)."""
        return self._stores[resource].cache.items()

    def snapshot(self) -> model.Snapshot:
        with self._snapshot_lock:
            with self._cond:
                self._changed = False
                dirty = {resource: store.dirty for resource, store in self._stores.items()}
                for store in self._stores.values():
                    store.dirty = set()
            for resource, keys in dirty.items():
                store = self._stores[resource]
                for key in keys:
                    self._reparse(store, key)
            return self._build()

    def _reparse(self, store: _Store, key: Key) -> None:
        obj = store.cache.get(key)
        if obj is None:
            store.parsed.pop(key, None)
            store.reported.pop(key, None)
            return
        try:
            store.parsed[key] = store.binding.parse(obj)
            store.reported.pop(key, None)
        except model.ValidationError as err:
            self._report_invalid(store, key, obj, err, err.field_path, err.problem)
        except Exception as exc:  # a parser bug must not take the daemon down: treat as invalid
            self._report_invalid(store, key, obj, exc, "", f"{type(exc).__name__}: {exc}")

    def _report_invalid(self, store: _Store, key: Key, obj: RawObject, err: Exception,
                        field_path: str, problem: str) -> None:
        version = resources.resource_version_of(obj)
        if store.reported.get(key) == version:
            return
        store.reported[key] = version
        kept = key in store.parsed
        kind = store.spec.resource.kind
        self._invalid.labels(str(store.spec.resource)).inc()
        outcome = "the last valid version stays in use" if kept else "the object is ignored"
        secret = store.spec.resource == resources.SECRETS
        fields: dict[str, Any] = {"kind": kind, "name": key[1], "resource_version": version, "kept_previous": kept}
        if key[0]:
            fields["namespace"] = key[0]
        if isinstance(err, model.ValidationError):
            fields.update(field=err.field_path, problem=err.problem)
            if not secret:
                fields["value"] = repr(err.value)
            message = (f"{err.field_path}: {err.problem}" if secret
                       else f"{err.field_path}: {err.value!r}: {err.problem}")
        else:
            fields["error"] = problem
            message = f"cannot be parsed: {problem}"
        self._log.warning("invalid resource", **fields)
        if self.events is not None:
            self.events.warning(obj, INVALID_REASON, f"{kind} {key[1]}: {message}; {outcome}")

    def _build(self) -> model.Snapshot:
        parts: dict[str, Any] = {}
        for store in self._stores.values():
            binding = store.binding
            parts[binding.snapshot_field] = {binding.snapshot_key(k): v for k, v in store.parsed.items()}
        if "bgp_configuration" in parts:
            parts["bgp_configuration"] = model.effective_bgp_configuration(parts["bgp_configuration"])
        return model.Snapshot(**parts)
