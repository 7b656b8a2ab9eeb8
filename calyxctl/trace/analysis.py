"""The reasoning of ``calyxctl trace``: from the two ends, the Calyx resources and each node's
route lookups to the list of hops a packet takes and, where the path breaks, where and why,
naming the object to fix. A destination that is a Service's address is traced to one of its
ready endpoints, as kube-proxy on the source node translates it; the NetworkPolicy verdicts of
the connection (felix's, at the source pod for egress and the destination pod for ingress)
are checks of the hops they apply at. With a probe (``--probe``), where the real echo request
was last seen is checked too: not answered is a problem at the hop of the node that saw it last.

Pure code: :func:`queries` says what to ask each node's felix, :func:`analyse` turns the
answers into a :class:`Trace`. Nothing here reads the kernel or the API.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Mapping

from calyx import model
from calyx.model import EncapMode, IPAMBlock, IPPool, NodeInfo
from calyx.naming import POD_GATEWAY, TUNNEL_DEVICE, VXLAN_DEVICE, is_cali_interface
from calyxctl.trace.facts import (BgpSessions, Connection, Device, Endpoint, NodeState, PodEnd, PolicyVerdict,
                                  ProbeResult, RouteAnswer, ServiceEnd, TableEntry)
from calyxctl.trace.probereport import ProbeReport, describe, report

IPIP_OVERHEAD = 20
VXLAN_OVERHEAD = 50
VXLAN_PORT = 4789
OVERHEAD = {"none": 0, "ipip": IPIP_OVERHEAD, "vxlan": VXLAN_OVERHEAD}
ENCAP_NAMES = {"none": "no encapsulation", "ipip": "IPIP", "vxlan": "VXLAN"}
INGRESS, EGRESS = "Ingress", "Egress"

BROKEN = "broken"      # packets do not get through
DEGRADED = "degraded"  # some packets (large ones) do not get through, or the path is not the intended one
UNKNOWN = "unknown"    # a node could not be read


@dataclass(frozen=True)
class Fact:
    label: str
    text: str
    ok: bool | None = None      # None: information, not a check


@dataclass(frozen=True)
class Hop:
    """One node's part of the path: readable facts, and for machines the table entry the
    hop's lookup matched and the encapsulation ("none", "ipip", "vxlan") it leaves with."""

    number: int
    node: str
    title: str
    facts: tuple[Fact, ...] = ()
    route: TableEntry | None = None
    encapsulation: str | None = None


@dataclass(frozen=True)
class Problem:
    """Where the path breaks (``hop`` on ``node``), the ``cause`` (a short stable name), what
    happens, and what to look at or fix."""

    hop: int
    node: str
    cause: str
    severity: str
    message: str
    fix: str


@dataclass(frozen=True)
class Trace:
    src: Endpoint
    dst: Endpoint
    hops: tuple[Hop, ...]
    problems: tuple[Problem, ...] = ()
    service: ServiceEnd | None = None          # the Service the destination was reached through
    probe: ProbeReport | None = None           # what --probe saw

    @property
    def complete(self) -> bool:
        """Every hop was read and no problem was found."""
        return not self.problems


@dataclass(frozen=True)
class TraceInput:
    src: PodEnd
    dst: Endpoint
    nodes: Mapping[str, NodeInfo]
    pools: Mapping[str, IPPool]
    blocks: Mapping[str, IPAMBlock] = field(default_factory=dict)
    states: Mapping[str, NodeState] = field(default_factory=dict)
    bgp: Mapping[str, BgpSessions] = field(default_factory=dict)     # by node: its bgpd's sessions
    service: ServiceEnd | None = None     # dst is the endpoint of this Service chosen to trace to
    connection: Connection = Connection()
    policies: Mapping[str, PolicyVerdict] = field(default_factory=dict)  # Egress (at src), Ingress (at dst)
    probe: ProbeResult | None = None


def path_nodes(inp: TraceInput) -> tuple[str, ...]:
    """The nodes a packet crosses, the source node first."""
    y = destination_node(inp)
    return (inp.src.node,) if y is None or y == inp.src.node else (inp.src.node, y)


def policy_queries(inp: TraceInput) -> dict[str, tuple[str, str, IPv4Address]]:
    """direction -> (node, pod, peer): whose NetworkPolicy verdict to ask which felix for."""
    asked = {EGRESS: (inp.src.node, f"{inp.src.namespace}/{inp.src.name}", inp.dst.ip)}
    if isinstance(inp.dst, PodEnd):
        asked[INGRESS] = (inp.dst.node, f"{inp.dst.namespace}/{inp.dst.name}", inp.src.ip)
    return asked


def node_address(node: NodeInfo | None) -> IPv4Address | None:
    """The address other nodes reach ``node`` at: its BGP address, else its InternalIP."""
    return model.node_address(node) if node is not None else None


def destination_node(inp: TraceInput) -> str | None:
    """The node the destination lives on: the pod's node, or the node whose pod CIDR (block)
    holds the address; None outside every node's pod CIDRs."""
    if isinstance(inp.dst, PodEnd):
        return inp.dst.node
    found = owning_block(inp, inp.dst.ip)
    return found[1] if found else None


def owning_block(inp: TraceInput, addr: IPv4Address) -> tuple[IPv4Network, str] | None:
    """(pod CIDR, node) of the node's pod CIDR (IPAM block or podCIDR) holding ``addr``."""
    for node in inp.nodes.values():
        for cidr in model.node_pod_cidrs(node, inp.blocks):
            if addr in cidr:
                return cidr, node.name
    return None


def queries(inp: TraceInput) -> dict[str, tuple[tuple[IPv4Address, ...], tuple[str, ...]]]:
    """node -> (addresses to look up, devices to read): what to ask each node's felix."""
    src, dst = inp.src, inp.dst
    x = src.node
    routes = [src.ip, dst.ip]
    links = [src.veth]
    y = destination_node(inp)
    asked: dict[str, tuple[tuple[IPv4Address, ...], tuple[str, ...]]] = {}
    if y is not None and y != x:
        peer = node_address(inp.nodes.get(y))
        if peer is not None:
            routes.append(peer)
        asked[y] = ((dst.ip,), (dst.veth,) if isinstance(dst, PodEnd) else ())
    elif isinstance(dst, PodEnd):
        links.append(dst.veth)
    asked[x] = (tuple(dict.fromkeys(routes)), tuple(links))
    return dict(sorted(asked.items(), key=lambda item: item[0] != x))


# ----------------------------------------------------------------------------- the analysis

class _Builder:
    def __init__(self) -> None:
        self.hops: list[Hop] = []
        self.problems: list[Problem] = []

    def hop(self, node: str, title: str, facts: list[Fact], route: TableEntry | None = None,
            encapsulation: str | None = None) -> int:
        number = len(self.hops) + 1
        self.hops.append(Hop(number, node, title, tuple(facts), route, encapsulation))
        return number

    def problem(self, hop: int, node: str, cause: str, severity: str, message: str, fix: str) -> None:
        self.problems.append(Problem(hop, node, cause, severity, message, fix))


def analyse(inp: TraceInput) -> Trace:
    b = _Builder()
    src, dst = inp.src, inp.dst
    x = src.node
    x_state = inp.states.get(x, NodeState(x, error="not read"))
    _sandbox_hop(b, inp, x_state)
    if inp.service is not None:
        _service_hop(b, inp)
        if not isinstance(dst, PodEnd):
            return _finish(b, inp)
    y = destination_node(inp)
    if isinstance(dst, PodEnd) and dst.node == x:
        _delivery_hop(b, inp, x_state, dst)
    elif y is not None:
        _forward_hop(b, inp, x_state, y)
        y_state = inp.states.get(y, NodeState(y, error="not read"))
        if isinstance(dst, PodEnd):
            _delivery_hop(b, inp, y_state, dst)
        else:
            number = len(b.hops)
            b.problem(number, y, "no-such-pod", BROKEN,
                      f"no pod has address {dst.ip}: it is in node {y}'s pod CIDR, where felix's blackhole "
                      f"for the block drops it", f"check the address; `kubectl get pods -A -o wide | grep {dst.ip}`")
    else:
        _outside_hop(b, inp, x_state)
    return _finish(b, inp)


def _finish(b: _Builder, inp: TraceInput) -> Trace:
    probe = report(inp.probe, path_nodes(inp), inp.src.veth) if inp.probe is not None else None
    if probe is not None:
        _probe_problem(b, inp, probe)
    return Trace(inp.src, inp.dst, tuple(b.hops), tuple(b.problems), inp.service, probe)


def _probe_problem(b: _Builder, inp: TraceInput, probe: ProbeReport) -> None:
    if probe.answered:
        return
    x = inp.src.node
    what = f"the probe (an echo request from {inp.src} to {probe.result.dst})"
    if not probe.sent:
        b.problem(1, x, "probe-not-sent", UNKNOWN, f"{what} could not be sent: {probe.result.send.error}",
                  f"felix on {x} sends it: the chart value felix.packetProbe: true allows it")
        return
    if probe.last_reply is not None:
        seen, where = probe.last_reply, f"its reply was last seen on {describe(probe.last_reply)}"
    elif probe.last_request is not None:
        seen, where = probe.last_request, f"it was last seen on {describe(probe.last_request)}, and no reply"
    else:
        seen, where = None, "no node saw it"
    node = seen.node if seen is not None else x
    hop = max((h.number for h in b.hops if h.node == node), default=1)
    unwatched = [w for w in probe.result.watches.values() if w.error is not None]
    if unwatched:
        where += "; not watched on " + ", ".join(f"{w.node} ({w.error})" for w in unwatched)
    fix = ("see the problems above" if b.problems else
           "the path as Calyx reads it is complete: what drops it is outside what the trace reads (a "
           "firewall on a node, the underlay between the nodes, or a destination that does not answer ping)")
    b.problem(hop, node, "probe-lost", BROKEN, f"{what} was not answered: {where}", fix)


def _policy_fact(inp: TraceInput, direction: str) -> Fact | None:
    verdict = inp.policies.get(direction)
    if verdict is None:
        return None
    label = "policy in" if direction == INGRESS else "policy out"
    conn = verdict.connection
    side = f"from {verdict.peer}" if direction == INGRESS else f"to {verdict.peer}"
    if verdict.error is not None:
        return Fact(label, f"not read: {verdict.error}")
    if not verdict.isolated:
        return Fact(label, f"no NetworkPolicy isolates {direction.lower()} of pod {verdict.pod}: {conn} {side} "
                           f"allowed", True)
    by = ", ".join(verdict.selected_by)
    if verdict.allowed:
        return Fact(label, f"{conn} {side} allowed by NetworkPolicy {by}", True)
    if verdict.allowed is None:
        return Fact(label, f"{direction.lower()} isolated by NetworkPolicy {by}; its verdict for {conn} {side} "
                           f"was not given")
    return Fact(label, f"{conn} {side} DENIED: {direction.lower()} isolated by NetworkPolicy {by}, and no rule "
                       f"allows it", False)


def _policy_problem(b: _Builder, number: int, node: str, inp: TraceInput, direction: str) -> None:
    verdict = inp.policies.get(direction)
    if verdict is None or verdict.error is not None or verdict.allowed is not False:
        return
    conn = verdict.connection
    side = f"from {verdict.peer}" if direction == INGRESS else f"to {verdict.peer}"
    namespace = verdict.pod.split("/", 1)[0]
    rules = "; ".join(verdict.rules) or "nothing"
    flags = f" --port {conn.port} --protocol {conn.protocol}" if conn.port is not None else " --protocol ICMP"
    b.problem(number, node, "policy-deny", BROKEN,
              f"NetworkPolicy {', '.join(verdict.selected_by)} select(s) pod {verdict.pod} for "
              f"{direction.lower()}, and no rule allows {conn} {side} (allowed: {rules}): felix on {node} drops it",
              f"allow it in one of those policies (`kubectl get networkpolicy -n {namespace} -o yaml`), or label the "
              f"pods so a rule selects them; felix's view: `calyxctl policy {verdict.pod} --peer {verdict.peer} "
              f"--direction {direction}{flags}`, drops counted in felix_policy_dropped_packets")


def _service_hop(b: _Builder, inp: TraceInput) -> None:
    service = inp.service
    assert service is not None
    x = inp.src.node
    conn = inp.connection
    port = "" if conn.port is None else f":{conn.port}"
    facts = [Fact("service", f"{service.ip}{port} is the {service.role} of {service}")]
    ready = ", ".join(f"{e} ({e.ip}, node {e.node})" for e in service.endpoints) or "none"
    facts.append(Fact("endpoints", f"{len(service.endpoints)} ready: {ready}", bool(service.endpoints)))
    target = service.target_port(conn.port, conn.protocol)
    if isinstance(inp.dst, PodEnd):
        facts.append(Fact("translated", f"kube-proxy on {x} sends it to one of them; traced to {inp.dst} "
                                        f"({inp.dst.ip}{'' if target is None else f':{target}'})"))
    number = b.hop(x, f"node {x}: {service} ({service.ip})", facts)
    where = f"-n {service.namespace}"
    if not service.endpoints:
        b.problem(number, x, "no-endpoints", BROKEN,
                  f"{service} has no ready endpoint: kube-proxy on {x} has nowhere to send {service.ip}{port}",
                  f"the Service's selector matches no ready pod: `kubectl get endpointslices {where} -l "
                  f"kubernetes.io/service-name={service.name}`, `kubectl describe service {where} {service.name}`")
    elif conn.port is not None and not any(p.port == conn.port and p.protocol == conn.protocol
                                           for p in service.ports):
        ports = ", ".join(f"{p.protocol} {p.port}" for p in service.ports) or "none"
        b.problem(number, x, "not-a-service-port", BROKEN,
                  f"{service} has no {conn} (its ports: {ports})",
                  f"use one of its ports, or add it (`kubectl edit service {where} {service.name}`)")


def _unreadable(b: _Builder, number: int, state: NodeState) -> None:
    b.problem(number, state.node, "node-unreadable", UNKNOWN,
              f"node {state.node}'s state could not be read: {state.error}",
              f"felix on {state.node} answers on its health port: is felix running there, and is the port "
              f"reachable from here (chart value metricsOnAllInterfaces: true, or `--felix {state.node}=HOST:PORT` "
              f"through `kubectl port-forward`)?")


def _device_fact(label: str, name: str, device: Device | None) -> Fact:
    if device is None:
        return Fact(label, f"{name} does not exist", False)
    return Fact(label, f"{name} ({device.kind or 'device'}) {'up' if device.up else 'DOWN'}, mtu {device.mtu}",
                device.up)


def _sandbox_hop(b: _Builder, inp: TraceInput, state: NodeState) -> None:
    src = inp.src
    facts = [Fact("pod", f"{src.ip}, default via {POD_GATEWAY} dev eth0 (as the CNI plugin programs the sandbox)")]
    if state.error is not None:
        facts.append(Fact("node", f"not read: {state.error}", None))
        _unreadable(b, b.hop(src.node, f"{src} on node {src.node}", facts), state)
        return
    veth = state.links.get(src.veth)
    facts.append(_device_fact("host veth", src.veth, veth))
    answer = state.route(src.ip)
    route_ok = _is_pod_route(answer, src)
    if answer is not None:
        facts.append(Fact("return", answer.describe(), route_ok))
    policy = _policy_fact(inp, EGRESS)
    if policy is not None:
        facts.append(policy)
    number = b.hop(src.node, f"{src} on node {src.node}", facts, answer.match if answer else None)
    _policy_problem(b, number, src.node, inp, EGRESS)
    if veth is None:
        b.problem(number, src.node, "veth-missing", BROKEN,
                  f"the host side of {src}'s veth, {src.veth}, does not exist on node {src.node}: the pod's "
                  f"network is gone", f"recreate {src} (the CNI plugin wires a new sandbox)")
    elif not veth.up:
        b.problem(number, src.node, "veth-down", BROKEN,
                  f"{src}'s host-side veth {src.veth} is down on node {src.node}",
                  f"bring it up (`ip link set {src.veth} up` on {src.node}) and find who set it down")
    elif not route_ok:
        b.problem(number, src.node, "pod-route-missing", BROKEN,
                  f"node {src.node} has no /32 to {src} ({src.ip} dev {src.veth}); its lookup gives "
                  f"{answer.describe() if answer else 'nothing'}: replies to the pod are not delivered",
                  f"felix on {src.node} programs it: check felix there (`kubectl logs`, /readyz)")


def _is_pod_route(answer: RouteAnswer | None, pod: PodEnd) -> bool:
    return (answer is not None and answer.ok and answer.match is not None and answer.match.kind == "unicast"
            and answer.match.dst == IPv4Network(f"{pod.ip}/32") and answer.match.dev == pod.veth)


def _delivery_hop(b: _Builder, inp: TraceInput, state: NodeState, pod: PodEnd) -> None:
    title = f"node {state.node}: deliver to {pod}"
    if state.error is not None:
        _unreadable(b, b.hop(state.node, title, [Fact("node", f"not read: {state.error}")]), state)
        return
    answer = state.route(pod.ip)
    ok = _is_pod_route(answer, pod)
    facts = [Fact("route", answer.describe() if answer else "not looked up", ok)]
    device = answer.device if ok and answer else state.links.get(pod.veth)
    facts.append(_device_fact("pod veth", pod.veth, device))
    policy = _policy_fact(inp, INGRESS)
    if policy is not None:
        facts.append(policy)
    match = answer.match if answer is not None else None
    number = b.hop(state.node, title, facts, match)
    if ok and device is not None and device.up:
        _policy_problem(b, number, state.node, inp, INGRESS)
        return
    if match is not None and match.kind != "unicast" and (match.owner != "felix" or match.dst.prefixlen == 32):
        b.problem(number, state.node, match.kind, BROKEN,
                  f"node {state.node} matches {match} for {pod.ip}: packets to {pod} are dropped on {state.node}",
                  f"remove that route (`ip route del {match.kind} {match.dst}` on {state.node}, owner {match.owner}); "
                  f"felix then programs the pod's /32")
    elif device is None:
        b.problem(number, state.node, "veth-missing", BROKEN,
                  f"{pod}'s host-side veth {pod.veth} does not exist on node {state.node}, so there is no "
                  f"route to {pod.ip} there: the pod's network is gone",
                  f"recreate {pod} (the CNI plugin wires a new sandbox)")
    elif not device.up:
        b.problem(number, state.node, "veth-down", BROKEN,
                  f"{pod}'s host-side veth {pod.veth} is down on node {state.node}"
                  + ("" if ok else f", and node {state.node} has no route to {pod.ip} through it"),
                  f"bring it up (`ip link set {pod.veth} up` on {state.node}); felix then restores the route")
    elif answer is not None and answer.match is not None and answer.match.dev and is_cali_interface(answer.match.dev) \
            and answer.match.dev != pod.veth:
        b.problem(number, state.node, "pod-route-wrong-device", BROKEN,
                  f"node {state.node} routes {pod.ip} to {answer.match.dev}, not to {pod}'s veth {pod.veth}",
                  f"a stale route of another pod: felix on {state.node} corrects it; check felix there")
    else:
        b.problem(number, state.node, "pod-route-missing", BROKEN,
                  f"node {state.node} has no /32 to {pod} ({pod.ip} dev {pod.veth}); its lookup gives "
                  f"{answer.describe() if answer else 'nothing'}",
                  f"felix on {state.node} programs pod routes: check felix there (`kubectl logs`, /readyz)")


def expected_encapsulation(pool: IPPool, cross_subnet: bool | None) -> str | None:
    """"none", "ipip" or "vxlan" as the pool's modes want between two nodes; None when it
    depends on whether they share a subnet and that is not known."""
    mode, encap = (pool.vxlan_mode, "vxlan") if model.pool_wants_vxlan(pool) else (pool.ipip_mode, "ipip")
    if mode is EncapMode.ALWAYS:
        return encap
    if mode is EncapMode.CROSS_SUBNET:
        return None if cross_subnet is None else encap if cross_subnet else "none"
    return "none"


def actual_encapsulation(dev: str | None, device: Device | None) -> str:
    kind = device.kind if device is not None else None
    if dev == TUNNEL_DEVICE or kind == "ipip":
        return "ipip"
    if dev == VXLAN_DEVICE or kind == "vxlan":
        return "vxlan"
    return "none"


def _cross_subnet(x: NodeInfo | None, peer: IPv4Address | None, underlay: RouteAnswer | None) -> bool | None:
    if x is not None and x.bgp_address is not None and x.bgp_address.network.prefixlen < 32 and peer is not None:
        return peer not in x.bgp_address.network
    if underlay is not None and underlay.ok:
        return underlay.gateway is not None
    return None


def _mode_text(pool: IPPool) -> str:
    return f"IPPool {pool.name} (ipipMode {pool.ipip_mode.value}, vxlanMode {pool.vxlan_mode.value})"


def _forward_hop(b: _Builder, inp: TraceInput, state: NodeState, y: str) -> None:
    dst = inp.dst
    x = state.node
    title = f"node {x}: route to {dst.ip} (node {y})"
    if state.error is not None:
        _unreadable(b, b.hop(x, title, [Fact("node", f"not read: {state.error}")]), state)
        return
    y_node, x_node = inp.nodes.get(y), inp.nodes.get(x)
    peer = node_address(y_node)
    answer = state.route(dst.ip)
    underlay = state.route(peer) if peer is not None else None
    pool = model.routing_pool_containing(inp.pools, dst.ip)
    found = owning_block(inp, dst.ip)
    cidr = found[0] if found else IPv4Network(f"{dst.ip}/32")
    facts: list[Fact] = []
    match = answer.match if answer is not None else None
    if answer is None or match is None or match.kind == "unicast" and not _carries(match.dst, pool, cidr):
        facts.append(Fact("route", answer.describe() if answer else "not looked up", False))
        number = b.hop(x, title, facts, match)
        _no_route(b, number, inp, x, y, cidr, pool, answer)
        return
    if match.kind != "unicast":
        facts.append(Fact("route", str(match), False))
        number = b.hop(x, title, facts, match)
        where = "" if match.owner in ("felix", "bgpd") else f" (`ip route del {match.kind} {match.dst}` on {x})"
        b.problem(number, x, match.kind, BROKEN,
                  f"node {x} matches {match} for {dst.ip}: packets to {dst} are dropped on {x}",
                  f"remove that route{where}; its owner is {match.owner}"
                  + (f": felix on {x} keeps a blackhole for its own blocks; IPAMBlock {model.block_name(match.dst)} "
                     f"should not be affine to {x}" if match.owner == "felix" else ""))
        return
    encap = actual_encapsulation(match.dev, answer.device)
    facts.append(Fact("route", str(match), True))
    x_address = node_address(x_node)
    outer_dst: IPv4Address | None = match.gateway
    if encap == "ipip":
        facts.append(Fact("encap", f"IPIP via {match.dev}: outer {x_address} -> {match.gateway}"))
    elif encap == "vxlan":
        owner = next((n for n in inp.nodes.values() if n.vxlan_tunnel_address == match.gateway), None)
        outer_dst = node_address(owner)
        facts.append(Fact("encap", f"VXLAN via {match.dev}: UDP {VXLAN_PORT} {x_address} -> {outer_dst} "
                                   f"(VTEP {match.gateway} of node {owner.name if owner else '?'})"))
    else:
        facts.append(Fact("encap", "none: pod addresses on the wire"))
    if underlay is not None and peer is not None and outer_dst == peer:
        via = f"via {underlay.gateway} " if underlay.gateway else ""
        facts.append(Fact("underlay", f"{peer} {via}dev {underlay.dev}"
                                      + (f", mtu {underlay.device.mtu}" if underlay.device else "")
                                      + ("" if underlay.gateway else " (same subnet)"), underlay.ok))
    number = b.hop(x, title, facts, match, encap)
    # the next hop: node Y's address (plain, IPIP) or its VTEP (VXLAN)
    expected_gateway = y_node.vxlan_tunnel_address if (encap == "vxlan" and y_node is not None) else peer
    foreign = None if match.owner in ("felix", "bgpd") else (
        f"the route is not Calyx's (owner {match.owner}): remove it (`ip route del {match.dst} proto {match.proto}` "
        f"on {x}); Calyx's own route to the block then applies")
    if match.gateway is None and match.dev is not None and is_cali_interface(match.dev):
        b.problem(number, x, "wrong-next-hop", BROKEN,
                  f"node {x} sends {dst.ip} into its own pod device {match.dev}, but {dst} is on node {y}",
                  f"a stale pod route on {x} (owner {match.owner}): felix on {x} removes it; check felix there")
    elif match.gateway is not None and expected_gateway is not None and match.gateway != expected_gateway:
        names = {node_address(n): n.name for n in inp.nodes.values()}
        names.update({n.vxlan_tunnel_address: n.name for n in inp.nodes.values() if n.vxlan_tunnel_address})
        who = f"node {names[match.gateway]}" if match.gateway in names else "no Calyx node"
        b.problem(number, x, "wrong-next-hop", DEGRADED,
                  f"node {x} sends {dst.ip} to {match.gateway} ({who}), not to node {y} ({expected_gateway})",
                  foreign or f"the route's owner is {match.owner} on {x}: a stale route, or one learned from a "
                             f"router (BGPPeer) that forwards it on; check `calyxctl node status {x}`")
    if pool is not None:
        cross = _cross_subnet(x_node, peer, underlay)
        expected = expected_encapsulation(pool, cross)
        if expected is not None and expected != encap:
            between = "" if cross is None else (" (different subnets)" if cross else " (same subnet)")
            b.problem(number, x, "mode-mismatch", BROKEN if "vxlan" in (expected, encap) else DEGRADED,
                      f"node {x} sends {dst.ip} with {ENCAP_NAMES[encap]} (route {match}) but {_mode_text(pool)} "
                      f"wants {ENCAP_NAMES[expected]} between {x} and {y}{between}",
                      foreign or f"the route's owner ({match.owner} on {x}) has not followed IPPool {pool.name}: "
                                 f"check it (`calyxctl node status {x}`), or fix the pool's mode")
    _check_mtu(b, number, state, inp.src, encap, match, answer.device, underlay if outer_dst == peer else None)


def _carries(prefix: IPv4Network, pool: IPPool | None, cidr: IPv4Network) -> bool:
    """A route to ``prefix`` is a route to the destination's pod CIDR (not a default or
    underlay route that only happens to cover it)."""
    if pool is not None:
        return prefix.subnet_of(pool.cidr)
    return prefix.prefixlen >= cidr.prefixlen


def _no_route(b: _Builder, number: int, inp: TraceInput, x: str, y: str, cidr: IPv4Network,
              pool: IPPool | None, answer: RouteAnswer | None) -> None:
    if answer is None:
        instead = ""
    elif answer.match is None:
        instead = f"; the lookup fails ({answer.error})"
    else:
        instead = f"; it would follow {answer.match} instead"
    y_node = inp.nodes.get(y)
    if pool is not None and model.pool_wants_vxlan(pool):
        vtep = y_node.vxlan_tunnel_address if y_node is not None else None
        b.problem(number, x, "no-route", BROKEN,
                  f"{y}'s block {cidr} is not in node {x}'s table{instead}",
                  f"{_mode_text(pool)} is VXLAN: felix on {x} routes the block from Node {y}'s VTEP annotations "
                  f"(calyx.dev/ipv4-vxlan-tunnel-addr: {vtep or 'missing'}): check felix on {y} (it publishes "
                  f"them) and on {x}")
        return
    export = (f"; IPPool {pool.name} has disableBGPExport: true, so no node advertises it"
              if pool is not None and pool.disable_bgp_export else "")
    sessions = inp.bgp.get(x)
    down = _sessions_down(sessions, node_address(y_node))
    if down and not export:
        b.problem(number, x, "session-down", BROKEN,
                  f"{y}'s block {cidr} is not in node {x}'s table{instead}: node {x} learns it over BGP, and "
                  f"{down}", _session_hint(sessions, x, y, node_address(y_node)))
        return
    b.problem(number, x, "no-route", BROKEN,
              f"{y}'s block {cidr} is not in node {x}'s table{instead}{export}",
              _session_hint(sessions, x, y, node_address(y_node)))


def _sessions_down(sessions: BgpSessions | None, peer: IPv4Address | None) -> str | None:
    """Why X cannot have learned Y's block, when its sessions say so: its session to Y is not
    Established, or (no session to Y: the route comes through reflectors or routers) none of
    its sessions is; None when they were not read or one that could carry it is up."""
    if sessions is None or sessions.error is not None or not sessions.states:
        return None
    state = sessions.states.get(peer) if peer is not None else None
    if state is not None:
        return None if state == "Established" else f"its BGP session to {peer} is {state}"
    if any(s == "Established" for s in sessions.states.values()):
        return None
    listed = ", ".join(f"{a} {s}" for a, s in sorted(sessions.states.items()))
    return f"none of its BGP sessions is Established ({listed})"


def _session_hint(sessions: BgpSessions | None, x: str, y: str, peer: IPv4Address | None) -> str:
    """What X's BGP sessions say about the missing route to Y's block."""
    ask = f"`calyxctl node status {x}`"
    if sessions is None or sessions.error is not None or peer is None:
        return f"is the BGP session {x}<->{y} Established? {ask}"
    state = sessions.states.get(peer)
    if state is None:
        others = ", ".join(f"{a} {s}" for a, s in sorted(sessions.states.items())) or "none"
        return (f"node {x} has no BGP session to {y} ({peer}); its sessions: {others}: the route must come "
                f"through one of them (route reflector, router): {ask}")
    if state != "Established":
        info = sessions.info.get(peer)
        return f"the BGP session {x}<->{y} ({peer}) is {state}" + (f" ({info})" if info else "") + f": {ask}"
    return (f"the BGP session {x}<->{y} is Established, yet the route is not installed: {ask} and `bgpd routes` "
            f"on {x} (refused? NOT INSTALLED?)")


def _check_mtu(b: _Builder, number: int, state: NodeState, src: PodEnd, encap: str, match,
               tunnel: Device | None, underlay: RouteAnswer | None) -> None:
    veth = state.links.get(src.veth)
    if veth is None:
        return
    pod_mtu = veth.mtu
    limits: list[str] = []
    if encap != "none" and tunnel is not None and tunnel.mtu < pod_mtu:
        limits.append(f"{tunnel.name} has MTU {tunnel.mtu}")
    if match.mtu and match.mtu < pod_mtu:
        limits.append(f"the route has mtu {match.mtu}")
    if underlay is not None and underlay.device is not None:
        need = pod_mtu + OVERHEAD[encap]
        if need > underlay.device.mtu:
            extra = f" + {ENCAP_NAMES[encap]} {OVERHEAD[encap]} = {need}" if encap != "none" else ""
            limits.append(f"{pod_mtu}{extra} does not fit {underlay.device.name}'s MTU {underlay.device.mtu}")
    if not limits:
        return
    if encap != "none" and tunnel is not None and tunnel.mtu < pod_mtu:
        # felix gives new pods the tunnel's MTU: this pod was made before it did (or with another setting)
        fix = (f"recreate {src}: new pods get {tunnel.name}'s MTU {tunnel.mtu} from felix, this one was made with "
               f"{pod_mtu} (before felix ran {ENCAP_NAMES[encap]} on {state.node}, or under another mtu setting)")
    else:
        fix = (f"lower the pod MTU (felix's mtu setting, FELIX_MTU; pods take it when recreated) or raise the "
               f"underlay's MTU on {state.node}")
    b.problem(number, state.node, "mtu", DEGRADED,
              f"{src}'s MTU is {pod_mtu} but on node {state.node} " + "; ".join(limits)
              + ": full-size packets are fragmented or dropped (small ones, like ping, pass)", fix)


def _outside_hop(b: _Builder, inp: TraceInput, state: NodeState) -> None:
    src, dst = inp.src, inp.dst
    x = state.node
    title = f"node {x}: route to {dst.ip} (outside every IPPool)" if model.routing_pool_containing(
        inp.pools, dst.ip) is None else f"node {x}: route to {dst.ip}"
    if state.error is not None:
        _unreadable(b, b.hop(x, title, [Fact("node", f"not read: {state.error}")]), state)
        return
    answer = state.route(dst.ip)
    facts = [Fact("route", answer.describe() if answer else "not looked up", bool(answer and answer.ok))]
    pool = model.routing_pool_containing(inp.pools, src.ip)
    dst_pool = model.routing_pool_containing(inp.pools, dst.ip)
    if answer is not None and answer.ok:
        via = f"via {answer.gateway} " if answer.gateway else ""
        facts.append(Fact("leaves", f"{via}dev {answer.dev}"))
        if dst_pool is None and pool is not None and pool.nat_outgoing:
            facts.append(Fact("source", f"masqueraded to {answer.prefsrc or node_address(inp.nodes.get(x))} "
                                        f"(IPPool {pool.name} natOutgoing)"))
        else:
            facts.append(Fact("source", f"stays {src.ip}: the network beyond {x} must route it back"))
    number = b.hop(x, title, facts, answer.match if answer else None, "none" if answer and answer.ok else None)
    if answer is None or not answer.ok:
        b.problem(number, x, "no-route", BROKEN,
                  f"node {x} has no usable route to {dst.ip}: {answer.describe() if answer else 'not looked up'}",
                  f"add a route (or default route) to {dst.ip} on node {x}")
