"""The Datastore: reflector caches turned into one parsed :class:`calyx.model.Snapshot`.

A daemon declares what it watches (:class:`WatchSpec` per resource), starts the Datastore, waits
for :meth:`Datastore.wait_for_change`, and calculates from :meth:`Datastore.snapshot`.

Besides whole resources, single objects can be watched by name, added and removed while the
Datastore runs (:meth:`Datastore.set_named`): bgpd watches exactly the Secrets its BGP
configuration refers to, which RBAC can grant by ``resourceNames``. Each is one more reflector
(list and watch with the field selector ``metadata.name=NAME``) feeding the same Snapshot field.
One that is refused (403) or not found is reported (log line, Warning Event on each object
referring to it, :meth:`Datastore.named`, ``Snapshot.secret_errors``) without disturbing any
other watch, and a version read before a refusal stays in the snapshot.

A resource's binding may cut raw objects down before they are cached (Services and
EndpointSlices: only what their parsers read, ``calyx.model.service_essentials`` and
``endpoint_slice_essentials``), so bgpd holds thousands of them cheaply.

Parsing is incremental: the caches record which keys changed since the last snapshot and only
those objects go through ``calyx.model.parse_*`` again; everything else is reused. An object
that fails validation is reported once per (object, resourceVersion) — a structured log line and
a Warning Event ``InvalidResource`` on the object naming field and value — and its last valid
version stays in the snapshot, so a bad update never withdraws what is programmed. An object
invalid from its creation is simply absent.

IPPools are also checked against each other, the Service CIDR and the nodes' networks
(:func:`calyx.ippools.refusals`, when the IPPools are watched): a refused pool is left out of
every snapshot, and reported once per distinct reason — a log line and a Warning Event
``ConflictingResource`` on the pool naming field, value and what it overlaps — and its return
to use is logged.
"""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter

from calyx import crds, ippools, model, networkpolicy
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyx.kube.events import EventRecorder, ObjectRef
from calyx.kube.reflector import Backoff, Cache, Change, Key, Reflector, ReflectorMetrics, WatchSpec
from calyx.kube.resources import RawObject, Resource
from calyx.model import ObjectName
from calyx.logs import get_logger
from calyx.observability import Check
from calyx.specschema import SpecSchemas

INVALID_REASON = "InvalidResource"
# Warning Event on an IPPool refused because it overlaps another pool, a Service CIDR or a node network.
CONFLICT_REASON = "ConflictingResource"
# Warning Events on an object that refers to one watched by name (a BGPPeer naming a Secret).
UNREADABLE_REASON = "ReferenceUnreadable"
NOT_FOUND_REASON = "ReferenceNotFound"
FORBIDDEN = 403

__all__ = ["Datastore", "WatchSpec", "NamedChanges", "NamedState", "NamedWatch", "INVALID_REASON",
           "CONFLICT_REASON", "UNREADABLE_REASON", "NOT_FOUND_REASON"]


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
    errors_field: str | None = None     # why objects watched by name are absent, by snapshot key
    keep: Callable[[RawObject], RawObject] | None = None    # what of a raw object is cached


def bindings(schemas: SpecSchemas) -> dict[Resource, _Binding]:
    """Each watchable resource's parser (custom resources validated against ``schemas``) and
    its place in the Snapshot."""
    parse = model.parsers(schemas)
    return {
        resources.PODS: _Binding(parse[model.KIND_POD], "pods", _by_namespace_and_name),
        resources.NODES: _Binding(parse[model.KIND_NODE], "nodes", _by_name),
        resources.IPPOOLS: _Binding(parse[model.KIND_IPPOOL], "ippools", _by_name),
        resources.BGPCONFIGURATIONS: _Binding(parse[model.KIND_BGP_CONFIGURATION], "bgp_configuration", _by_name),
        resources.BGPPEERS: _Binding(parse[model.KIND_BGP_PEER], "bgp_peers", _by_name),
        resources.IPAMBLOCKS: _Binding(parse[model.KIND_IPAM_BLOCK], "blocks", _by_name),
        resources.SECRETS: _Binding(_secret_values, "secrets", _by_namespace_and_name, "secret_errors"),
        resources.SERVICES: _Binding(parse[model.KIND_SERVICE], "services", _by_namespace_and_name,
                                     keep=model.service_essentials),
        resources.ENDPOINTSLICES: _Binding(parse[model.KIND_ENDPOINT_SLICE], "endpoint_slices",
                                           _by_namespace_and_name, keep=model.endpoint_slice_essentials),
        resources.NETWORKPOLICIES: _Binding(networkpolicy.parse_network_policy, "network_policies",
                                            _by_namespace_and_name),
        resources.NAMESPACES: _Binding(networkpolicy.parse_namespace, "namespaces", _by_name),
    }


NamedKey = tuple[Resource, str, str]     # (resource, namespace or "", name)


class NamedState(str, enum.Enum):
    """What became of an object watched by name."""

    PENDING = "pending"          # not listed yet
    FOUND = "found"
    NOT_FOUND = "not found"
    FORBIDDEN = "forbidden"      # HTTP 403: RBAC grants no list/watch of that name
    FAILING = "failing"          # the API is unreachable or failing: retried with backoff


@dataclass(frozen=True)
class NamedChanges:
    """What :meth:`Datastore.set_named` did: the (namespace, name) of the watches it added and
    removed. True when it did anything."""

    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True)
class NamedWatch:
    """One object watched by name: which, who refers to it, and what became of it."""

    resource: Resource
    namespace: str
    name: str
    referenced_by: tuple[ObjectName, ...]
    state: NamedState
    error: str | None = None     # the last failure (FORBIDDEN, FAILING), with the API's message
    cached: bool = False         # a version read earlier is in the cache (and the snapshot)

    @property
    def object(self) -> ObjectName:
        return ObjectName(self.resource.kind, self.name, self.namespace)

    @property
    def problem(self) -> str | None:
        """Why the object is not in the snapshot although it may exist (None: it is there, or
        it was not found)."""
        if self.cached or self.state in (NamedState.FOUND, NamedState.NOT_FOUND):
            return None
        if self.state is NamedState.PENDING:
            return "not read from the API yet"
        return f"cannot be read: {self.error}"

    def describe(self) -> str:
        """One line naming the object, its namespace, who refers to it, and its state."""
        refs = ", ".join(map(str, self.referenced_by)) or "nothing"
        head = f"{self.object} (referenced by {refs})"
        if self.state in (NamedState.FORBIDDEN, NamedState.FAILING):
            kept = "; the version read earlier stays in use" if self.cached else ""
            return f"{head}: cannot be read: {self.error}{kept}; retrying"
        if self.state is NamedState.NOT_FOUND:
            return f"{head}: not found; watching for it"
        return f"{head}: {self.state.value}"


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
    # Watches by name only:
    named: NamedKey | None = None
    referenced_by: tuple[ObjectName, ...] = ()
    announced: tuple[NamedState, str | None] | None = None   # the state last logged


class Datastore:
    """Watches ``specs`` and serves parsed snapshots; see the module docstring."""

    def __init__(self, client: kubernetes.client.ApiClient, specs: list[WatchSpec],
                 events: EventRecorder | None = None, namespace: str = "calyx-system",
                 registry: CollectorRegistry | None = None, watch_timeout: float = 300.0,
                 backoff: Callable[[], Backoff] = Backoff, schemas: SpecSchemas | None = None) -> None:
        self.api = client
        self._bindings = bindings(schemas if schemas is not None else crds.spec_schemas())
        self.namespace = namespace
        self.events = events
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self._named: dict[NamedKey, _Store] = {}
        self._retired: list[Reflector] = []      # removed named watches, stopping
        self._running = False
        self._stopped = False
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics = ReflectorMetrics(self.registry)
        self._invalid = Counter("calyx_datastore_invalid_objects_total",
                                "Object versions refused by validation", ["resource"], registry=self.registry)
        self._cond = threading.Condition()
        self._changed = False
        self._snapshot_lock = threading.Lock()
        self._log = get_logger("calyx.kube.datastore")
        self._stores: dict[Resource, _Store] = {}
        self._refused_pools: dict[str, str] = {}     # IPPool name -> the refusal last reported
        for spec in specs:
            if spec.resource not in self._bindings:
                raise ValueError(f"datastore: resource {spec.resource} has no place in a Snapshot")
            if spec.resource in self._stores:
                raise ValueError(f"datastore: resource {spec.resource} watched twice "
                                 f"({self._stores[spec.resource].spec.describe()} and {spec.describe()})")
            if spec.resource == resources.SECRETS and spec.namespace is None:
                spec = WatchSpec(spec.resource, namespace, spec.label_selector, spec.field_selector)
            store = _Store(spec, self._bindings[spec.resource], Cache())
            store.cache = Cache(on_change=self._recorder_for(store))   # the recorder needs the store
            store.reflector = Reflector(kube_client.clone(client), spec, store.cache, self._metrics,
                                        watch_timeout=watch_timeout, backoff=backoff(),
                                        on_synced=self._mark_changed, keep=store.binding.keep)
            self._stores[spec.resource] = store

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._running = True
            stores = [*self._stores.values(), *self._named.values()]
        for store in stores:
            assert store.reflector is not None
            store.reflector.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._running, self._stopped = False, True
            stores = [*self._stores.values(), *self._named.values()]
            retired, self._retired = self._retired, []
        reflectors = [s.reflector for s in stores if s.reflector is not None] + retired
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
        """Every reflector of a whole resource has completed its first list (objects watched by
        name are not waited for: see :meth:`wait_named_settled`)."""
        return all(s.reflector is not None and s.reflector.synced for s in self._stores.values())

    def wait_synced(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.synced, timeout)

    def readiness(self) -> Check:
        """For ``/readyz``: ready once every watched resource has been listed. An object watched
        by name that cannot be read does not make the daemon unready (it is reported instead)."""
        waiting = [str(r) for r, s in self._stores.items() if s.reflector is None or not s.reflector.synced]
        if waiting:
            return Check(False, f"datastore not synced: waiting for the first list of {', '.join(waiting)}")
        return Check(True, "")

    # --- change notification -------------------------------------------------------------

    def _recorder_for(self, store: _Store) -> Callable[[list[Change]], None]:
        def record(changes: list[Change]) -> None:
            if store.named is not None:     # reported before the change can be seen in a snapshot
                self._announce(store)
            with self._cond:
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

    # --- objects watched by name -----------------------------------------------------------

    def _named_key(self, resource: Resource, namespace: str | None, name: str) -> NamedKey:
        if resource not in self._bindings:
            raise ValueError(f"datastore: resource {resource} has no place in a Snapshot")
        if resource in self._stores:
            raise ValueError(f"datastore: {resource} is watched whole ({self._stores[resource].spec.describe()}); "
                             f"no need to watch {name!r} by name")
        if not name:
            raise ValueError(f"datastore: {resource}: a named watch needs a name")
        if not resource.namespaced:
            return (resource, "", name)
        return (resource, namespace or self.namespace, name)

    def watch_named(self, resource: Resource, name: str, namespace: str | None = None,
                    referenced_by: Iterable[ObjectName] = ()) -> bool:
        """Watch one object by name (a namespaced one in ``namespace``, default the
        Datastore's), on behalf of ``referenced_by`` (named in reports). Watching it already
        only updates who refers to it. True when a new watch was started."""
        key = self._named_key(resource, namespace, name)
        refs = tuple(sorted(set(referenced_by)))
        with self._cond:
            if self._stopped:
                raise RuntimeError("datastore: stopped")
            store = self._named.get(key)
            if store is not None:
                store.referenced_by = refs
                return False
            spec = WatchSpec.named(resource, name, key[1] or None)
            store = _Store(spec, self._bindings[resource], Cache(), named=key, referenced_by=refs)
            store.cache = Cache(on_change=self._recorder_for(store))
            store.reflector = Reflector(kube_client.clone(self.api), spec, store.cache, self._metrics,
                                        watch_timeout=self._watch_timeout, backoff=self._backoff(),
                                        on_synced=lambda: self._announce(store),
                                        label="/".join(part for part in (str(resource), key[1], name) if part),
                                        on_error=lambda: self._announce(store), keep=store.binding.keep)
            self._named[key] = store
            start = self._running
        self._log.info("watching by name", kind=resource.kind, namespace=key[1] or None, name=name,
                       referenced_by=[str(r) for r in refs])
        if start:
            store.reflector.start()
        return True

    def unwatch_named(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        """Stop watching one object by name; it leaves the snapshot. True when it was watched."""
        key = self._named_key(resource, namespace, name)
        with self._cond:
            store = self._named.pop(key, None)
            if store is None:
                return False
            self._changed = True
            self._cond.notify_all()
            reflector = store.reflector
            assert reflector is not None
            self._retired = [r for r in self._retired if r.alive]
            self._retired.append(reflector)
        # The thread leaves at once (its watch is shut); its client is closed once it has.
        reflector.request_stop()
        threading.Thread(target=self._close_when_stopped, args=(reflector,), daemon=True,
                         name=f"retire-{reflector.label}").start()
        self._metrics.forget(reflector.label)
        self._log.info("no longer watching by name", kind=resource.kind, namespace=key[1] or None, name=name)
        return True

    @staticmethod
    def _close_when_stopped(reflector: Reflector) -> None:
        reflector.join(60.0)
        if not reflector.alive:
            reflector.api.close()

    def set_named(self, resource: Resource, wanted: Mapping[tuple[str, str], Iterable[ObjectName]]) -> NamedChanges:
        """Make the objects of ``resource`` watched by name exactly ``wanted``: (namespace,
        name) -> the objects referring to it. Returns the watches added (their objects are not
        in the snapshot until listed: see :meth:`wait_named_settled`) and removed (their objects
        leave the next snapshot)."""
        wanted_keys = {self._named_key(resource, namespace, name): refs
                       for (namespace, name), refs in wanted.items()}
        with self._cond:
            current = [key for key in self._named if key[0] == resource]
        removed = [key[1:] for key in sorted(current, key=lambda k: k[1:]) if key not in wanted_keys
                   and self.unwatch_named(resource, key[2], key[1] or None)]
        added = [key[1:] for key, refs in sorted(wanted_keys.items(), key=lambda item: item[0][1:])
                 if self.watch_named(resource, key[2], key[1] or None, refs)]
        return NamedChanges(tuple(added), tuple(removed))

    def named(self, resource: Resource | None = None) -> list[NamedWatch]:
        """The objects watched by name (of ``resource``, or all) and what became of each."""
        with self._cond:
            stores = [s for key, s in sorted(self._named.items(), key=lambda item: (str(item[0][0]), item[0][1:]))
                      if resource is None or key[0] == resource]
        return [self._status(s) for s in stores]

    def wait_named_settled(self, timeout: float | None = None) -> bool:
        """Block until every object watched by name has been listed or has failed to be (none
        is PENDING any more)."""
        def settled() -> bool:
            return all(self._status(s).state is not NamedState.PENDING for s in self._named.values())
        with self._cond:
            return self._cond.wait_for(settled, timeout)

    def _status(self, store: _Store) -> NamedWatch:
        assert store.named is not None and store.reflector is not None
        resource, namespace, name = store.named
        reflector = store.reflector
        failure = reflector.failure
        cached = store.cache.get((namespace, name)) is not None
        if failure is not None:
            forbidden = isinstance(failure[0], ApiException) and failure[0].status == FORBIDDEN
            state = NamedState.FORBIDDEN if forbidden else NamedState.FAILING
        elif not reflector.synced:
            state = NamedState.PENDING
        else:
            state = NamedState.FOUND if cached else NamedState.NOT_FOUND
        return NamedWatch(resource, namespace, name, store.referenced_by, state,
                          failure[1] if failure is not None else None, cached)

    def _announce(self, store: _Store) -> None:
        """Report a named watch's new state once (log line, Events on the objects referring to
        it) and wake the daemon: called by its reflector on every change."""
        status = self._status(store)
        with self._cond:
            self._changed = True
            self._cond.notify_all()
            announced = store.announced
            if status.state is NamedState.PENDING or (status.state, status.error) == announced:
                return
            if store.named is None or self._named.get(store.named) is not store:
                return      # removed meanwhile
            store.announced = (status.state, status.error)
        fields: dict[str, Any] = {"kind": status.resource.kind, "name": status.name,
                                  "referenced_by": [str(r) for r in status.referenced_by]}
        if status.namespace:
            fields["namespace"] = status.namespace
        if status.state is NamedState.FOUND:
            if announced is not None and announced[0] in (NamedState.FORBIDDEN, NamedState.NOT_FOUND):
                self._log.info("referenced object found", **fields)
            return
        if status.state is NamedState.FAILING:
            return          # the API's trouble, not this object's: the reflector logs every attempt
        if status.state is NamedState.FORBIDDEN:
            self._log.warning("referenced object cannot be read", error=status.error,
                              kept_previous=status.cached, **fields)
            reason = UNREADABLE_REASON
        else:
            self._log.warning("referenced object not found", **fields)
            reason = NOT_FOUND_REASON
        if self.events is not None:
            message = status.describe()
            for referrer in status.referenced_by:
                self.events.warning(self._event_ref(referrer), reason, message)

    def _event_ref(self, name: ObjectName) -> ObjectRef:
        """The object an Event about ``name`` goes to: the cached object when its resource is
        watched (uid included, so ``kubectl describe`` shows it), else its kind and name."""
        for resource, store in self._stores.items():
            if resource.kind == name.kind:
                obj = store.cache.get((name.namespace, name.name))
                if obj is not None:
                    return ObjectRef.of(obj)
        api_version = next((r.api_version for r in resources.ALL if r.kind == name.kind), "")
        return ObjectRef(kind=name.kind, name=name.name, namespace=name.namespace or None,
                         api_version=api_version)

    # --- snapshots -----------------------------------------------------------------------

    def raw(self, resource: Resource) -> dict[Key, RawObject]:
        """The cached raw objects of one watched resource (a copy)."""
        return self._stores[resource].cache.items()

    def snapshot(self) -> model.Snapshot:
        with self._snapshot_lock:
            with self._cond:
                self._changed = False
                stores = [*self._stores.values(), *self._named.values()]
                dirty = [(store, store.dirty) for store in stores]
                for store in stores:
                    store.dirty = set()
            for store, keys in dirty:
                for key in keys:
                    self._reparse(store, key)
            return self._build(stores)

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

    def _build(self, stores: list[_Store]) -> model.Snapshot:
        parts: dict[str, Any] = {}
        for store in stores:
            binding = store.binding
            part = parts.setdefault(binding.snapshot_field, {})
            part.update((binding.snapshot_key(k), v) for k, v in store.parsed.items())
            if store.named is not None and binding.errors_field is not None:
                errors = parts.setdefault(binding.errors_field, {})
                _, namespace, name = store.named
                problem = self._status(store).problem
                if problem is not None and (namespace, name) not in store.parsed:
                    errors[binding.snapshot_key((namespace, name))] = problem
        if "bgp_configuration" in parts:
            parts["bgp_configuration"] = model.effective_bgp_configuration(parts["bgp_configuration"])
        snapshot = model.Snapshot(**parts)
        if "ippools" not in parts:
            return snapshot
        snapshot, refused = ippools.without_refused_pools(snapshot)
        self._report_refused_pools(refused, snapshot.ippools)
        return snapshot

    def _report_refused_pools(self, found: Mapping[str, ippools.PoolConflict],
                              kept: Mapping[str, model.IPPool]) -> None:
        """Log (and post as a Warning Event) each new or changed conflict, refused or kept in
        use; log a pool used again."""
        for name in sorted(set(self._refused_pools) - set(found)):
            del self._refused_pools[name]
            if name in kept:
                self._log.info("IPPool used again", kind=model.KIND_IPPOOL, name=name,
                               cidr=str(kept[name].cidr), reason="it no longer overlaps anything")
        store = self._stores.get(resources.IPPOOLS)
        for name, conflict in sorted(found.items()):
            err = conflict.error
            message = str(err)
            if self._refused_pools.get(name) == message:
                continue
            self._refused_pools[name] = message
            self._log.warning("refused resource" if conflict.refused else "IPPool overlap kept: the pool is in use",
                              kind=err.kind, name=name, field=err.field_path, value=repr(err.value),
                              problem=err.problem)
            obj = store.cache.get(("", name)) if store is not None else None
            if self.events is not None and obj is not None:
                self.events.warning(obj, CONFLICT_REASON, message)
