"""Kubernetes Events about the objects Calyx reads (``kubectl describe ippool x`` shows them).

:class:`EventRecorder` posts core/v1 Events from a background thread, so a caller (a datastore
snapshot, a reconcile loop) never waits on, or fails because of, the API. Repeats of the same
(object, type, reason, message) are folded into one Event whose ``count`` and
``lastTimestamp`` are patched, the way Kubernetes' own event correlator does it. Failures are
logged, never raised.
"""
from __future__ import annotations

import queue
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from calyx.kube import resources
from calyx.kube.client import describe_error
from calyx.kube.resources import EVENTS, RawObject
from calyx.logs import get_logger

WARNING = "Warning"
NORMAL = "Normal"
CLUSTER_SCOPED_EVENT_NAMESPACE = "default"
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about (its ``involvedObject``)."""

    kind: str
    name: str
    namespace: str | None = None
    api_version: str = ""
    uid: str = ""
    resource_version: str = ""

    @classmethod
    def of(cls, obj: RawObject) -> "ObjectRef":
        meta = obj.get("metadata") or {}
        return cls(kind=str(obj.get("kind") or ""), name=str(meta.get("name") or ""),
                   namespace=meta.get("namespace") or None, api_version=str(obj.get("apiVersion") or ""),
                   uid=str(meta.get("uid") or ""), resource_version=str(meta.get("resourceVersion") or ""))

    @property
    def event_namespace(self) -> str:
        return self.namespace or CLUSTER_SCOPED_EVENT_NAMESPACE

    def as_involved_object(self) -> dict[str, str]:
        ref = {"kind": self.kind, "name": self.name}
        for key, value in (("namespace", self.namespace), ("apiVersion", self.api_version),
                           ("uid", self.uid), ("resourceVersion", self.resource_version)):
            if value:
                ref[key] = value
        return ref


@dataclass(frozen=True)
class _Pending:
    ref: ObjectRef
    type: str
    reason: str
    message: str
    at: datetime


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Records Events from ``component`` running on ``host``; see the module docstring."""

    def __init__(self, client: kubernetes.client.ApiClient, component: str, host: str,
                 max_queue: int = 1000, max_remembered: int = 4096) -> None:
        self.api = client
        self.component = component
        self.host = host
        self._queue: queue.Queue[_Pending | None] = queue.Queue(max_queue)
        self._seen: OrderedDict[tuple[Any, ...], _Seen] = OrderedDict()
        self._max_remembered = max_remembered
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._log = get_logger("calyx.kube.events")
        self._idle = threading.Condition()
        self._in_flight = 0

    # --- public ----------------------------------------------------------------------------

    def warning(self, obj_ref: ObjectRef | RawObject, reason: str, message: str) -> None:
        self._record(obj_ref, WARNING, reason, message)

    def normal(self, obj_ref: ObjectRef | RawObject, reason: str, message: str) -> None:
        self._record(obj_ref, NORMAL, reason, message)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every recorded Event has been sent (or given up on)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        thread.join(timeout)
        self._thread = None

    # --- internals ---------------------------------------------------------------------------

    def _record(self, obj_ref: ObjectRef | RawObject, event_type: str, reason: str, message: str) -> None:
        try:
            ref = obj_ref if isinstance(obj_ref, ObjectRef) else ObjectRef.of(obj_ref)
            pending = _Pending(ref, event_type, reason, message[:MAX_MESSAGE], _now())
            self._ensure_thread()
            with self._idle:
                self._in_flight += 1
            try:
                self._queue.put_nowait(pending)
            except queue.Full:
                self._done()
                self._log.warning("event dropped: queue full", kind=ref.kind, name=ref.name, reason=reason)
        except Exception as exc:  # recording an Event must never break the caller
            self._log.error("event not recorded", reason=reason, error=str(exc))

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"events-{self.component}", daemon=True)
                self._thread.start()

    def _done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _run(self) -> None:
        while True:
            pending = self._queue.get()
            if pending is None:
                return
            try:
                self._send(pending)
            except Exception as exc:
                self._log.warning("event not sent", kind=pending.ref.kind, name=pending.ref.name,
                                  namespace=pending.ref.event_namespace, reason=pending.reason,
                                  error=describe_error(exc))
            finally:
                self._done()

    def _send(self, pending: _Pending) -> None:
        ref = pending.ref
        key = (ref.kind, ref.namespace, ref.name, ref.uid, pending.type, pending.reason, pending.message)
        seen = self._seen.get(key)
        if seen is not None:
            try:
                resources.patch_object(self.api, EVENTS, seen.name,
                                       {"count": seen.count + 1, "lastTimestamp": _ts(pending.at)},
                                       namespace=seen.namespace)
                seen.count += 1
                self._seen.move_to_end(key)
                return
            except ApiException as exc:
                if exc.status != 404:
                    raise
                # The Event expired or was deleted: start a new one.
        name = f"{ref.name}.{uuid.uuid4().hex[:16]}"
        body = {
            "metadata": {"name": name, "namespace": ref.event_namespace},
            "involvedObject": ref.as_involved_object(),
            "reason": pending.reason,
            "message": pending.message,
            "type": pending.type,
            "count": 1,
            "firstTimestamp": _ts(pending.at),
            "lastTimestamp": _ts(pending.at),
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": f"{self.component}-{self.host}",
        }
        resources.create_object(self.api, EVENTS, body, namespace=ref.event_namespace)
        self._seen[key] = _Seen(name, ref.event_namespace, 1)
        while len(self._seen) > self._max_remembered:
            self._seen.popitem(last=False)
