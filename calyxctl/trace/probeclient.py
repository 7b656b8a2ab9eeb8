"""``calyxctl trace --probe``'s I/O: a real echo request sent from the source pod and watched
for on the nodes, through felix's ``/v1/probe/watch``, ``/v1/probe/armed`` and
``/v1/probe/send`` on each node's health port (see felix.probeview).

:func:`run_probe` arms a watch on every node (each a blocking request, in its own thread), waits
until each says it is armed, has the source node's felix send, and gathers what each saw. A node
whose felix does not answer is a watch with the error, not an exception.
"""
from __future__ import annotations

import secrets
import threading
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from ipaddress import IPv4Address
from typing import Any, Mapping

from calyxctl.daemonviews import ViewUnavailable, fetch_json
from calyxctl.trace.facts import ProbeResult, ProbeSend, ProbeWatch

DEFAULT_SECONDS = 3.0
MAX_SECONDS = 5.0           # felix refuses longer watches
ARM_TIMEOUT = 2.0           # how long to wait for every watch to be armed before sending anyway
ARM_POLL = 0.05
HTTP_TIMEOUT = 5.0


def new_probe_id() -> str:
    """A fresh probe id: 16 hex digits (8 random bytes)."""
    return secrets.token_hex(8)


class ProbeUnavailable(RuntimeError):
    """A probe endpoint did not answer; the message says where and why (felix's own error text
    when it refused: busy, no such local pod, missing capability...)."""


def _get(base_url: str, path: str, params: Mapping[str, str], timeout: float) -> Any:
    try:
        return fetch_json(f"{base_url}{path}?{urllib.parse.urlencode(params)}", timeout)
    except ViewUnavailable as exc:
        raise ProbeUnavailable(str(exc)) from None


def watch_probe(base_url: str, probe_id: str, seconds: float, timeout: float, node: str = "") -> ProbeWatch:
    """The sightings of ``probe_id`` by the felix at ``base_url`` during ``seconds``; blocks that
    long (the request's ``timeout`` counts on top of it)."""
    try:
        answer = _get(base_url, "/v1/probe/watch", {"id": probe_id, "seconds": f"{seconds:g}"}, timeout + seconds)
    except ProbeUnavailable as exc:
        return ProbeWatch(node, error=str(exc))
    return ProbeWatch.from_json(node, answer)


def probe_armed(base_url: str, probe_id: str, timeout: float) -> bool:
    """Whether the felix at ``base_url`` is watching for ``probe_id`` now."""
    try:
        return bool(_get(base_url, "/v1/probe/armed", {"id": probe_id}, timeout).get("armed"))
    except ProbeUnavailable:
        return False


def send_probe(base_url: str, pod: str, dst: IPv4Address | str, probe_id: str, timeout: float) -> ProbeSend:
    """Has the felix at ``base_url`` send the probe from its local ``pod`` (NAMESPACE/NAME)."""
    try:
        answer = _get(base_url, "/v1/probe/send", {"pod": pod, "dst": str(dst), "id": probe_id}, timeout)
    except ProbeUnavailable as exc:
        return ProbeSend(False, dst=IPv4Address(str(dst)), error=str(exc))
    return ProbeSend.from_json(answer)


def _wait_armed(urls: Mapping[str, str], probe_id: str, watches: Mapping[str, Future], deadline: float,
                timeout: float) -> tuple[str, ...]:
    """Waits until every node's watch is armed (or has ended) or ``deadline``; the nodes not armed."""
    pending = dict(urls)
    stop = threading.Event()
    while pending and time.monotonic() < deadline:
        for node, url in list(pending.items()):
            if watches[node].done() or probe_armed(url, probe_id, min(timeout, ARM_TIMEOUT)):
                del pending[node]
        if pending:
            stop.wait(ARM_POLL)
    return tuple(sorted(pending))


def run_probe(src_node_url: str, watch_urls: Mapping[str, str], pod: str, dst: IPv4Address | str,
              seconds: float = DEFAULT_SECONDS, timeout: float = HTTP_TIMEOUT,
              probe_id: str | None = None) -> ProbeResult:
    """One probe from ``pod`` (on the node whose felix is ``src_node_url``) to ``dst``, watched
    on every node of ``watch_urls`` (node -> felix URL; include the source node) for
    ``seconds`` (at most 5): the sightings per node, each node's in the order it saw them."""
    seconds = min(seconds, MAX_SECONDS)
    probe_id = probe_id or new_probe_id()
    with ThreadPoolExecutor(max_workers=max(1, len(watch_urls)), thread_name_prefix="probe-watch") as pool:
        futures = {node: pool.submit(watch_probe, url, probe_id, seconds, timeout, node)
                   for node, url in watch_urls.items()}
        unarmed = _wait_armed(watch_urls, probe_id, futures, time.monotonic() + ARM_TIMEOUT, timeout)
        sent = send_probe(src_node_url, pod, dst, probe_id, timeout)
        watches = {node: future.result() for node, future in futures.items()}
    return ProbeResult(probe_id, pod, IPv4Address(str(dst)), sent, watches, unarmed)
