"""Reads one node's forwarding from its felix: ``/v1/route`` and ``/v1/link`` on felix's
health port (see felix.inspect), and a local pod's NetworkPolicy verdict (``/v1/policy``, see
felix.policyview), over plain HTTP. I/O only."""
from __future__ import annotations

import urllib.parse
from ipaddress import IPv4Address
from typing import Any, Iterable

from calyxctl.daemonviews import ViewUnavailable, fetch_json
from calyxctl.trace.facts import Connection, Device, NodeState, PolicyVerdict, RouteAnswer

DEFAULT_FELIX_PORT = 9099      # the chart's felix.healthPort


def _get(base_url: str, path: str, params: dict[str, str], timeout: float) -> Any:
    return fetch_json(f"{base_url}{path}?{urllib.parse.urlencode(params)}", timeout)


def read_node(node: str, base_url: str, routes: Iterable[IPv4Address], links: Iterable[str],
              timeout: float) -> NodeState:
    """Everything asked of ``node``'s felix at ``base_url``; a node whose felix does not answer
    is a NodeState with the error, not an exception (the trace shows how far it got)."""
    try:
        answers = {dst: RouteAnswer.from_json(_get(base_url, "/v1/route", {"dst": str(dst)}, timeout))
                   for dst in routes}
        devices = {name: Device.from_json(_get(base_url, "/v1/link", {"name": name}, timeout)["device"])
                   for name in links}
    except ViewUnavailable as exc:
        return NodeState(node, error=str(exc))
    return NodeState(node, routes=answers, links=devices)


def read_policy(base_url: str, pod: str, direction: str, peer: IPv4Address, connection: Connection,
                timeout: float) -> PolicyVerdict:
    """What felix says of ``pod`` (namespace/name, local to that felix) letting ``connection``
    in from ``peer`` (Ingress) or out to it (Egress); the error instead when it cannot say."""
    params = {"pod": pod, "direction": direction, "peer": str(peer), "protocol": connection.protocol,
              "port": str(connection.port or 0)}
    try:
        return PolicyVerdict.from_json(direction, peer, connection, _get(base_url, "/v1/policy", params, timeout))
    except ViewUnavailable as exc:
        return PolicyVerdict(pod, direction, peer, connection, error=str(exc))
