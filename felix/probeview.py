"""The probe endpoints of ``calyxctl trace --probe`` on felix's health port: watch this node for a
probe, send one from a local pod, and say whether the watch is armed.

* ``GET /v1/probe/watch?id=HEX&seconds=S`` captures on every device of the node for S seconds
  (default 3, at most 5) and answers every sighting of the probe ``HEX`` (16 hex digits).
* ``GET /v1/probe/armed?id=HEX`` answers whether a watch of that probe is capturing now: the
  caller starts the watches, waits until each is armed, then sends.
* ``GET /v1/probe/send?pod=NS/NAME&dst=IP&id=HEX`` sends one ICMP echo request from that pod
  (local to this node, with an address) to IP.

Limits: one probe at a time per felix (another probe's watch or send meanwhile gets 429);
one send per watch; ICMP echo only; only from pods of this node; watches end within 5 s.
The capture (:mod:`felix.probecapture`), the sending (:mod:`felix.probesend`) and the local pods
are handed in, so the endpoints are tested without a kernel.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from typing import Any, Callable, Mapping

from calyx import model
from calyx.naming import cali_interface_name
from calyx.observability import JsonHandler
from felix.probepackets import Sighting, parse_probe_id
from felix.probesend import ProbeSendError, Sender

WATCH_PATH = "/v1/probe/watch"
ARMED_PATH = "/v1/probe/armed"
SEND_PATH = "/v1/probe/send"
DEFAULT_SECONDS = 3.0
MAX_SECONDS = 5.0
ARM_WAIT = 2.0              # a send waits this long for this node's own watch of its probe to arm

Capture = Callable[[bytes, float, Callable[[], None]], list[Sighting]]
"""Captures (probe id, seconds, called once armed) -> sightings: :func:`felix.probecapture.capture`."""
LocalPods = Callable[[], Mapping[str, IPv4Address]]
"""The pods of this node with an address, "namespace/name" -> address."""


def local_pod_addresses(snapshot: model.Snapshot, nodename: str) -> dict[str, IPv4Address]:
    """The pods of ``nodename`` in ``snapshot`` that have an address on the pod network."""
    return {f"{pod.namespace}/{pod.name}": pod.ips[0] for pod in snapshot.pods.values()
            if pod.node == nodename and pod.ips and not pod.host_network}


class Busy(Exception):
    """Another probe is in flight on this felix."""


@dataclass
class _InFlight:
    probe_id: bytes
    watching: bool
    armed: threading.Event
    sent: bool = False


class ProbeGate:
    """At most one probe in flight: a watch holds it for its probe; a send of the same probe
    may join a watch (once); anything else meanwhile is :class:`Busy`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: _InFlight | None = None

    def begin_watch(self, probe_id: bytes) -> _InFlight:
        with self._lock:
            if self._current is not None:
                raise Busy(self._busy_text())
            self._current = _InFlight(probe_id, watching=True, armed=threading.Event())
            return self._current

    def begin_send(self, probe_id: bytes) -> tuple[_InFlight, bool]:
        """The probe's flight and whether this send started it (then it must :meth:`end` it)."""
        with self._lock:
            current = self._current
            if current is None:
                self._current = _InFlight(probe_id, watching=False, armed=threading.Event(), sent=True)
                return self._current, True
            if current.probe_id == probe_id and current.watching and not current.sent:
                current.sent = True
                return current, False
            if current.probe_id == probe_id:
                raise Busy(f"probe {probe_id.hex()} was sent already")
            raise Busy(self._busy_text())

    def end(self, flight: _InFlight) -> None:
        with self._lock:
            if self._current is flight:
                self._current = None

    def armed(self, probe_id: bytes) -> bool:
        with self._lock:
            current = self._current
        return current is not None and current.probe_id == probe_id and current.armed.is_set()

    def _busy_text(self) -> str:
        assert self._current is not None
        what = "watched" if self._current.watching else "sent"
        return f"another probe ({self._current.probe_id.hex()}) is being {what} on this node; try again in a few seconds"


def _one(query: Mapping[str, list[str]], name: str) -> str:
    return (query.get(name) or [""])[0]


def _probe_id(query: Mapping[str, list[str]]) -> bytes:
    raw = _one(query, "id")
    try:
        return parse_probe_id(raw)
    except ValueError:
        raise ValueError(f"query parameter id: {raw!r}: 16 hex digits") from None


class ProbeEndpoints:
    """The handlers of the probe endpoints of node ``nodename``; all of them refuse (403) unless
    ``enabled`` (the chart's felix.packetProbe)."""

    def __init__(self, nodename: str, local_pods: LocalPods, capture: Capture, send: Sender,
                 arm_wait: float = ARM_WAIT, enabled: bool = True) -> None:
        self.nodename = nodename
        self.enabled = enabled
        self._local_pods = local_pods
        self._capture = capture
        self._send = send
        self._arm_wait = arm_wait
        self._gate = ProbeGate()

    def handlers(self) -> dict[str, JsonHandler]:
        if not self.enabled:
            return {path: self.refuse for path in (WATCH_PATH, ARMED_PATH, SEND_PATH)}
        return {WATCH_PATH: self.watch, ARMED_PATH: self.armed, SEND_PATH: self.send}

    def refuse(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        return 403, {"error": f"packet probes are off on node {self.nodename}: the chart value "
                              f"felix.packetProbe: true turns them on (FELIX_PACKETPROBE)"}

    def watch(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        try:
            probe_id = _probe_id(query)
            seconds = float(_one(query, "seconds") or DEFAULT_SECONDS)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        if not 0 < seconds <= MAX_SECONDS:
            return 400, {"error": f"query parameter seconds: {seconds:g}: more than 0, at most {MAX_SECONDS:g}"}
        try:
            flight = self._gate.begin_watch(probe_id)
        except Busy as exc:
            return 429, {"error": str(exc)}
        try:
            sightings = self._capture(probe_id, seconds, flight.armed.set)
        except PermissionError as exc:
            return 503, {"error": f"cannot capture on this node: {exc.strerror or exc} (felix needs CAP_NET_RAW)"}
        finally:
            self._gate.end(flight)
        return 200, {"node": self.nodename, "id": probe_id.hex(), "seconds": seconds,
                     "sightings": [s.to_json() for s in sightings]}

    def armed(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        try:
            probe_id = _probe_id(query)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 200, {"node": self.nodename, "id": probe_id.hex(), "armed": self._gate.armed(probe_id)}

    def send(self, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        pod = _one(query, "pod")
        try:
            probe_id = _probe_id(query)
            dst = IPv4Address(_one(query, "dst"))
        except (ValueError, AddressValueError) as exc:
            return 400, {"error": str(exc)}
        namespace, _, name = pod.partition("/")
        if not namespace or not name:
            return 400, {"error": f"query parameter pod: {pod!r}: NAMESPACE/NAME"}
        src = self._local_pods().get(pod)
        if src is None:
            return 404, {"error": f"pod {pod} is not a pod with an address on node {self.nodename}"}
        try:
            flight, owner = self._gate.begin_send(probe_id)
        except Busy as exc:
            return 429, {"error": str(exc)}
        try:
            if not owner:
                flight.armed.wait(self._arm_wait)    # this node's own watch sees the probe leave
            self._send(cali_interface_name(namespace, name), src, dst, probe_id)
        except ProbeSendError as exc:
            return exc.status, {"error": f"pod {pod}: {exc}"}
        finally:
            if owner:
                self._gate.end(flight)
        return 200, {"sent": True, "node": self.nodename, "pod": pod, "src": str(src), "dst": str(dst),
                     "id": probe_id.hex()}
