"""``calyxctl policy NAMESPACE/POD [--peer IP --port N --protocol P --direction D]``: which
NetworkPolicies select a pod, what they let in and out, and (with ``--peer``) whether a new
connection between the pod and that address is allowed — as the felix of the pod's node sees
it, from the read-only ``/v1/policy`` path of its health port (at the Node's address and
``--felix-port``; the port must listen there: chart value ``metricsOnAllInterfaces: true``).
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

import kubernetes.client

from calyxctl import daemonviews, kubeaccess
from calyxctl.node import node_address

DEFAULT_FELIX_PORT = 9099    # the chart's felix.healthPort


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("policy", help="the NetworkPolicy of a pod, and a connection's verdict",
                                   description="Show which NetworkPolicies select a pod and what they "
                                               "allow, as the felix of its node enforces them.")
    parser.add_argument("pod", metavar="NAMESPACE/POD")
    parser.add_argument("--peer", metavar="IP", help="the other end of a connection to judge")
    parser.add_argument("--port", type=int, default=0, help="the destination port of that connection")
    parser.add_argument("--protocol", default="TCP", choices=("TCP", "UDP", "SCTP", "ICMP"))
    parser.add_argument("--direction", default="Ingress", choices=("Ingress", "Egress"),
                        help="Ingress: the peer connects to the pod; Egress: the pod to the peer")
    parser.add_argument("--felix-port", type=int, default=DEFAULT_FELIX_PORT,
                        help=f"felix's health port (default {DEFAULT_FELIX_PORT}, the chart's)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    kubeaccess.add_arguments(parser)
    parser.set_defaults(run=run)


def pod_node(args: argparse.Namespace, namespace: str, name: str) -> str:
    """The node ``namespace/name`` is scheduled to."""
    pod = kubeaccess.read(f"Pod {namespace}/{name}", lambda: kubernetes.client.CoreV1Api(
        kubeaccess.load(args)).read_namespaced_pod(name, namespace))
    if not pod.spec or not pod.spec.node_name:
        raise daemonviews.ViewUnavailable(f"Pod {namespace}/{name} is not scheduled to a node yet")
    return pod.spec.node_name


def render(view: dict[str, Any], node: str) -> str:
    """The view as text (pure)."""
    lines = [f"pod {view['pod']} ({view['ip']}) on node {node}",
             f"selected by: {', '.join(view['selected_by']) or 'no policy'}"]
    for direction in ("ingress", "egress"):
        rules = view[direction]
        if isinstance(rules, str):
            lines.append(f"{direction}: {rules}")
        else:
            lines.append(f"{direction}:")
            lines += [f"  - {rule}" for rule in rules]
    if "verdict" in view:
        v = view["verdict"]
        side = "from" if v["direction"] == "Ingress" else "to"
        port = f" {v['port']}" if v["port"] else ""
        lines.append(f"verdict: {v['direction']} {side} {v['peer']} {v['protocol']}{port}: "
                     f"{'allowed' if v['allowed'] else 'DROPPED'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    namespace, sep, name = args.pod.partition("/")
    if not sep or not namespace or not name:
        print(f"calyxctl policy: {args.pod!r}: give the pod as NAMESPACE/NAME", file=sys.stderr)
        return 2
    try:
        node = pod_node(args, namespace, name)
        query = {"pod": f"{namespace}/{name}"}
        if args.peer:
            query.update(peer=args.peer, port=str(args.port), protocol=args.protocol, direction=args.direction)
        url = f"http://{node_address(args, node)}:{args.felix_port}/v1/policy?{urllib.parse.urlencode(query)}"
        view = daemonviews.fetch_json(url)
    except daemonviews.ViewUnavailable as exc:
        print(f"calyxctl policy: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"node": node, **view}, indent=2) if args.output == "json" else render(view, node))
    return 0
