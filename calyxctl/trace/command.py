"""``calyxctl trace SRC DST``: the path of a packet from pod SRC (NAMESPACE/NAME) to DST (a pod,
a Service's address or any IPv4 address), hop by hop, as each node's kernel would forward it,
and where it breaks.

Both ends are resolved from the Kubernetes API (a Service's address to one of its ready
endpoints, ``--endpoint`` or the first); each node's forwarding is read from its felix
(``/v1/route``, ``/v1/link`` on its health port) at the Node's address and ``--felix-port``, or
where ``--felix NODE=HOST:PORT`` says (e.g. a ``kubectl port-forward``); the source node's BGP
sessions from its bgpd's ``/status`` (``--bgpd-port``, ``--bgpd NODE=HOST:PORT``), when it answers; the NetworkPolicy verdict
of the connection (``--protocol``, ``--port``; ping when no port is given) from the felix of
each end's pod (``/v1/policy``); with ``--probe``, one real echo request sent from the source pod
and watched for by felix on every node of the path (``/v1/probe/*``). The reasoning is
:mod:`calyxctl.trace.analysis`'s. Exit status: 0 the path is complete, 1 a problem was found
(or a node could not be read), 2 the trace could not start.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from calyx.crds import CRDError
from calyx.kube import client as kube_client
from calyxctl.trace import analysis, render
from calyxctl.trace.bgpdclient import DEFAULT_BGPD_PORT, read_sessions
from calyxctl.trace.facts import (AddressEnd, Connection, Endpoint, NodeState, PolicyVerdict, ProbeResult, ProbeSend,
                                  ServiceEnd)
from calyxctl.trace.felixclient import DEFAULT_FELIX_PORT, read_node, read_policy
from calyxctl.trace.probeclient import run_probe
from calyxctl.trace.resolve import ResolveError, read_cluster, resolve_destination, resolve_pod, resolve_service

DEFAULT_TIMEOUT = 5.0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace", help="the path of a packet from a pod to a pod or address, and where it breaks",
        description="Walk the path from pod SRC to DST (a pod or an IPv4 address) hop by hop, reading each "
                    "node's routes through its felix, and say where and why it breaks.")
    parser.add_argument("src", metavar="SRC", help="the source pod, NAMESPACE/NAME")
    parser.add_argument("dst", metavar="DST",
                        help="the destination: a pod NAMESPACE/NAME, a Service's address, or any IPv4 address")
    parser.add_argument("--protocol", type=str.upper, choices=("TCP", "UDP", "SCTP"), default="TCP",
                        help="the connection's protocol, with --port (default TCP)")
    parser.add_argument("--port", type=int, default=None,
                        help="the connection's destination port (a Service's port for a Service), for the "
                             "NetworkPolicy verdicts; without it the verdicts are for ping (ICMP)")
    parser.add_argument("--endpoint", default=None, metavar="NAME",
                        help="for a Service: the endpoint pod to trace to (default: the first ready one)")
    parser.add_argument("--probe", action="store_true",
                        help="also send one real echo request from SRC to DST and show where it was seen "
                             "(felix on the nodes of the path watches; the chart's felix.packetProbe: true)")
    parser.add_argument("--probe-seconds", type=float, default=2.0, metavar="S",
                        help="how long the nodes watch for the probe and its reply (default 2, at most 5)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument("--felix-port", type=int, default=DEFAULT_FELIX_PORT,
                        help=f"felix's health port on every node (default {DEFAULT_FELIX_PORT}, the chart's "
                             "felix.healthPort)")
    parser.add_argument("--bgpd-port", type=int, default=DEFAULT_BGPD_PORT,
                        help=f"bgpd's health port on the source node, for its BGP sessions (default "
                             f"{DEFAULT_BGPD_PORT}, the chart's bgpd.healthPort)")
    parser.add_argument("--felix", action="append", default=[], metavar="NODE=HOST:PORT",
                        help="where to reach NODE's felix instead of its Node address (repeatable)")
    parser.add_argument("--bgpd", action="append", default=[], metavar="NODE=HOST:PORT",
                        help="where to reach NODE's bgpd instead of its Node address (repeatable)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request to felix")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig file (default: KUBECONFIG, else the in-cluster account)")
    parser.set_defaults(run=run)


def _overrides(option: str, values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        node, eq, where = value.partition("=")
        host, colon, port = where.rpartition(":")
        if not eq or not node or not colon or not host or not port.isdigit():
            raise ValueError(f"{option} {value!r}: expected NODE=HOST:PORT")
        out[node] = f"http://{host}:{port}"
    return out


def run(args: argparse.Namespace) -> int:
    try:
        overrides = _overrides("--felix", args.felix)
        bgpd_overrides = _overrides("--bgpd", args.bgpd)
        api = kube_client.load(args.kubeconfig or os.environ.get("KUBECONFIG") or _default_kubeconfig())
        src = resolve_pod(api, args.src)
        dst = resolve_destination(api, args.dst)
        service = resolve_service(api, dst.ip) if isinstance(dst, AddressEnd) else None
        if service is not None:
            dst = _endpoint(service, args.endpoint) or dst
        cluster = read_cluster(api)
    except (ValueError, ResolveError, kube_client.ClientConfigError, CRDError) as exc:
        print(f"calyxctl trace: {exc}", file=sys.stderr)
        return 2
    except (ApiException, HTTPError, OSError) as exc:
        print(f"calyxctl trace: the Kubernetes API: {kube_client.describe_error(exc, api_message=True)}",
              file=sys.stderr)
        return 2
    for problem in cluster.skipped:
        print(f"calyxctl trace: ignored: {problem}", file=sys.stderr)
    connection = Connection(args.protocol, args.port) if args.port is not None else Connection()
    inp = analysis.TraceInput(src, dst, cluster.nodes, cluster.pools, cluster.blocks, service=service,
                              connection=connection)

    def felix_url(node: str) -> str | None:
        return overrides.get(node) or _node_url(cluster.nodes.get(node), args.felix_port)

    states = {}
    for node, (routes, links) in analysis.queries(inp).items():
        url = felix_url(node)
        if url is None:
            states[node] = NodeState(node, error=f"Node {node} has no address (InternalIP or "
                                                          f"calyx.dev/ipv4-address): use --felix {node}=HOST:PORT")
            continue
        states[node] = read_node(node, url, routes, links, args.timeout)
    bgp = {}
    y = analysis.destination_node(inp)
    bgpd_url = bgpd_overrides.get(src.node) or _node_url(cluster.nodes.get(src.node), args.bgpd_port)
    if y is not None and y != src.node and bgpd_url is not None:
        bgp[src.node] = read_sessions(src.node, bgpd_url, args.timeout)
    policies = _policies(inp, felix_url, args.timeout)
    probe = _probe(inp, felix_url, args, service.ip if service is not None else dst.ip) if args.probe else None
    trace = analysis.analyse(analysis.TraceInput(src, dst, cluster.nodes, cluster.pools, cluster.blocks, states,
                                                 bgp, service, connection, policies, probe))
    sys.stdout.write(render.as_json(trace) if args.output == "json" else render.text(trace))
    return 0 if trace.complete else 1


def _endpoint(service: ServiceEnd, name: str | None) -> Endpoint | None:
    """The endpoint pod of ``service`` to trace to: the one named, else the first ready one."""
    if name is None:
        return service.endpoints[0] if service.endpoints else None
    for endpoint in service.endpoints:
        if name in (endpoint.name, f"{endpoint.namespace}/{endpoint.name}"):
            return endpoint
    ready = ", ".join(e.name for e in service.endpoints) or "none"
    raise ResolveError(f"--endpoint {name!r}: not a ready endpoint of {service} (ready: {ready})")


def _policies(inp: analysis.TraceInput, felix_url: Callable[[str], str | None],
              timeout: float) -> dict[str, PolicyVerdict]:
    """Each end pod's felix's NetworkPolicy verdict on the connection (at the endpoint's port
    for a Service)."""
    connection = inp.connection
    if inp.service is not None and connection.port is not None:
        target = inp.service.target_port(connection.port, connection.protocol)
        connection = Connection(connection.protocol, target) if target is not None else connection
    out = {}
    for direction, (node, pod, peer) in analysis.policy_queries(inp).items():
        url = felix_url(node)
        if url is not None:
            out[direction] = read_policy(url, pod, direction, peer, connection, timeout)
    return out


def _probe(inp: analysis.TraceInput, felix_url: Callable[[str], str | None], args: argparse.Namespace,
           target: Any) -> ProbeResult:
    """One real echo request from the source pod to ``target`` (the address given: a Service's,
    kube-proxy translates it), watched for by felix on every node of the path."""
    urls = {node: felix_url(node) for node in analysis.path_nodes(inp)}
    reachable = {node: url for node, url in urls.items() if url is not None}
    src_url = reachable.get(inp.src.node)
    pod = f"{inp.src.namespace}/{inp.src.name}"
    if src_url is None:
        return ProbeResult("", pod, target, ProbeSend(False, error=f"node {inp.src.node} has no address"))
    return run_probe(src_url, reachable, pod, target, seconds=args.probe_seconds, timeout=args.timeout)


def _node_url(node: Any, port: int) -> str | None:
    address = analysis.node_address(node)
    return f"http://{address}:{port}" if address is not None else None


def _default_kubeconfig() -> str | None:
    path = Path.home() / ".kube" / "config"
    return str(path) if path.is_file() else None
