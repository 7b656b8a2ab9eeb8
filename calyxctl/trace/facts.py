"""What ``calyxctl trace`` knows before it reasons: the two ends of the path (and the Service
between them, when the destination is one), what each node's felix answered about its
forwarding (``/v1/route``, ``/v1/link``, see felix.inspect) and about the NetworkPolicy of the
pods at both ends (``/v1/policy``), and the source node's BGP sessions (bgpd's ``/status``).

Pure code: values parsed from the API's objects and felix's JSON; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Iterable, Mapping

from calyx.naming import cali_interface_name


@dataclass(frozen=True)
class PodEnd:
    """A pod at one end of the path."""

    namespace: str
    name: str
    ip: IPv4Address
    node: str

    @property
    def veth(self) -> str:
        """The host side of the pod's veth, as the CNI plugin named it."""
        return cali_interface_name(self.namespace, self.name)

    def __str__(self) -> str:
        return f"pod {self.namespace}/{self.name}"


@dataclass(frozen=True)
class AddressEnd:
    """A destination given as an address that no pod holds."""

    ip: IPv4Address

    def __str__(self) -> str:
        return str(self.ip)


Endpoint = PodEnd | AddressEnd


@dataclass(frozen=True)
class Device:
    name: str
    kind: str | None
    mtu: int
    up: bool

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> "Device | None":
        if obj is None:
            return None
        return cls(obj["name"], obj.get("kind"), int(obj["mtu"]), bool(obj["up"]))


@dataclass(frozen=True)
class TableEntry:
    """The routing-table entry a lookup matched."""

    dst: IPv4Network
    kind: str
    proto: int
    owner: str
    dev: str | None = None
    gateway: IPv4Address | None = None
    onlink: bool = False
    mtu: int | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> "TableEntry | None":
        if obj is None:
            return None
        return cls(IPv4Network(obj["dst"]), obj["type"], int(obj["proto"]), obj["owner"], obj.get("dev"),
                   IPv4Address(obj["gateway"]) if obj.get("gateway") else None, bool(obj.get("onlink")),
                   obj.get("mtu"))

    def __str__(self) -> str:
        parts = [str(self.dst) if self.kind == "unicast" else f"{self.kind} {self.dst}"]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        if self.dev is not None:
            parts.append(f"dev {self.dev}")
        if self.onlink:
            parts.append("onlink")
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        parts.append(f"proto {self.proto}")
        return " ".join(parts) + f" ({self.owner})"


@dataclass(frozen=True)
class RouteAnswer:
    """One node's answer to "where does a packet to ``dst`` go?"."""

    dst: IPv4Address
    ok: bool                                # the kernel's lookup found a usable route
    error: str | None = None                # else why not ("Network is unreachable", ...)
    dev: str | None = None
    gateway: IPv4Address | None = None
    prefsrc: IPv4Address | None = None
    match: TableEntry | None = None
    device: Device | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "RouteAnswer":
        lookup = obj["lookup"]
        return cls(IPv4Address(obj["dst"]), bool(lookup["ok"]), lookup.get("error"), lookup.get("dev"),
                   IPv4Address(lookup["gateway"]) if lookup.get("gateway") else None,
                   IPv4Address(lookup["prefsrc"]) if lookup.get("prefsrc") else None,
                   TableEntry.from_json(obj.get("match")), Device.from_json(obj.get("device")))

    def describe(self) -> str:
        """The match as ``ip route`` would show it, or why nothing matched."""
        if self.match is not None:
            return str(self.match)
        return f"no route ({self.error or 'no table entry'})"


@dataclass(frozen=True)
class NodeState:
    """What one node's felix answered (or why it could not be read)."""

    node: str
    error: str | None = None
    routes: Mapping[IPv4Address, RouteAnswer] = field(default_factory=dict)
    links: Mapping[str, Device | None] = field(default_factory=dict)

    def route(self, dst: IPv4Address) -> RouteAnswer | None:
        return self.routes.get(dst)


@dataclass(frozen=True)
class BgpSessions:
    """A node's BGP sessions as its bgpd's ``/status`` shows them (peer address -> state, info),
    or why they could not be read."""

    node: str
    states: Mapping[IPv4Address, str] = field(default_factory=dict)
    info: Mapping[IPv4Address, str] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_status(cls, node: str, status: Mapping[str, Any]) -> "BgpSessions":
        peers = status.get("peers") or []
        return cls(node, {IPv4Address(p["peer_address"]): str(p["state"]) for p in peers},
                   {IPv4Address(p["peer_address"]): str(p.get("info") or "") for p in peers})


@dataclass(frozen=True)
class Connection:
    """What the traced packet is, for NetworkPolicy: a protocol and a destination port (none
    for ICMP, which only rules without ports allow)."""
    protocol: str = "ICMP"
    port: int | None = None

    def __str__(self) -> str:
        return "ICMP (ping)" if self.port is None else f"{self.protocol} port {self.port}"


@dataclass(frozen=True)
class PolicyVerdict:
    """What a pod's felix says about one direction of the traced connection at that pod: the
    NetworkPolicies selecting it, whether they isolate it in that direction, the rules, and
    whether the connection is allowed; or why it could not be read."""
    pod: str                                  # namespace/name
    direction: str                            # Ingress or Egress
    peer: IPv4Address
    connection: Connection = Connection()
    selected_by: tuple[str, ...] = ()
    isolated: bool = False
    rules: tuple[str, ...] = ()
    allowed: bool | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, direction: str, peer: IPv4Address, connection: Connection,
                  obj: Mapping[str, Any]) -> "PolicyVerdict":
        rules = obj.get(direction.lower())
        isolated = isinstance(rules, list)
        verdict = obj.get("verdict") or {}
        return cls(str(obj["pod"]), direction, peer, connection, tuple(obj.get("selected_by") or ()), isolated,
                   tuple(rules) if isolated else (), verdict.get("allowed"))


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service and the port its endpoints serve it on."""
    name: str
    protocol: str
    port: int
    target: int | None          # None: a named targetPort no endpoint publishes


@dataclass(frozen=True)
class ServiceEnd:
    """A destination address that is a Service's (ClusterIP, external IP or load-balancer
    address), the ready endpoints kube-proxy translates it to, and the ports."""
    namespace: str
    name: str
    ip: IPv4Address
    role: str                                  # "ClusterIP", "external IP", "load-balancer IP"
    endpoints: tuple[PodEnd, ...] = ()
    ports: tuple[ServicePort, ...] = ()

    def target_port(self, port: int | None, protocol: str) -> int | None:
        """The endpoint port a connection to the Service's ``port`` reaches (None: not a port
        of the Service, or the connection has no port)."""
        if port is None:
            return None
        return next((p.target for p in self.ports if p.port == port and p.protocol == protocol), None)

    def __str__(self) -> str:
        return f"Service {self.namespace}/{self.name}"


def ready_endpoint_addresses(slices: Iterable[Mapping[str, Any]]) -> tuple[IPv4Address, ...]:
    """The IPv4 addresses of the ready endpoints of a Service's EndpointSlices (an endpoint
    without ``conditions.ready`` counts as ready, as the API says), in order, once each."""
    out: dict[IPv4Address, None] = {}
    for obj in slices:
        if obj.get("addressType") != "IPv4":
            continue
        for endpoint in obj.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or ():
                out[IPv4Address(address)] = None
    return tuple(out)


def service_ports(service: Mapping[str, Any], slices: Iterable[Mapping[str, Any]]) -> tuple[ServicePort, ...]:
    """A Service's ports and the port its endpoints serve each on: a numeric targetPort as is
    (absent: the port itself), a named one as the EndpointSlices publish it under the port's name."""
    published = {(p.get("name") or "", p.get("protocol") or "TCP"): p.get("port")
                 for obj in slices for p in obj.get("ports") or () if p.get("port") is not None}
    out = []
    for port in (service.get("spec") or {}).get("ports") or ():
        name, protocol = port.get("name") or "", port.get("protocol") or "TCP"
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str) and not target.isdigit():
            target = published.get((name, protocol))
        out.append(ServicePort(name, protocol, int(port["port"]), int(target) if target is not None else None))
    return tuple(out)
# --- --probe: a real echo request, and where each node saw it (felix's /v1/probe/*) ----------

@dataclass(frozen=True)
class ProbeSighting:
    """The probe (or its reply) seen on one node's device: ``direction`` "in" or "out" as that
    node sees it, ``encap`` "none", "ipip" or "vxlan" (then with the outer addresses), ``at``
    seconds after that node's watch was armed (comparable within a node only: each node arms on
    its own clock, a few milliseconds apart)."""

    node: str
    device: str
    direction: str
    kind: str                              # "echo-request" or "echo-reply"
    encap: str
    src: IPv4Address
    dst: IPv4Address
    at: float
    outer_src: IPv4Address | None = None
    outer_dst: IPv4Address | None = None

    @classmethod
    def from_json(cls, node: str, obj: Mapping[str, Any]) -> "ProbeSighting":
        return cls(node, str(obj["device"]), str(obj["direction"]), str(obj["kind"]), str(obj["encap"]),
                   IPv4Address(obj["src"]), IPv4Address(obj["dst"]), float(obj["at"]),
                   IPv4Address(obj["outer_src"]) if obj.get("outer_src") else None,
                   IPv4Address(obj["outer_dst"]) if obj.get("outer_dst") else None)

    def __str__(self) -> str:
        outer = f" in {self.encap} {self.outer_src} -> {self.outer_dst}" if self.encap != "none" else ""
        return f"{self.node} {self.device} {self.direction}: {self.kind} {self.src} -> {self.dst}{outer}"


@dataclass(frozen=True)
class ProbeWatch:
    """One node's watch: its sightings in the order seen, or why it could not watch."""

    node: str
    sightings: tuple[ProbeSighting, ...] = ()
    error: str | None = None

    @classmethod
    def from_json(cls, node: str, obj: Mapping[str, Any]) -> "ProbeWatch":
        sightings = (ProbeSighting.from_json(node, s) for s in obj.get("sightings") or [])
        return cls(node, tuple(sorted(sightings, key=lambda s: s.at)))


@dataclass(frozen=True)
class ProbeSend:
    """The source node's answer to sending the probe: sent, from which address, or why not."""

    sent: bool
    src: IPv4Address | None = None
    dst: IPv4Address | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ProbeSend":
        return cls(bool(obj.get("sent")), IPv4Address(obj["src"]) if obj.get("src") else None,
                   IPv4Address(obj["dst"]) if obj.get("dst") else None)


@dataclass(frozen=True)
class ProbeResult:
    """A probe sent from ``pod`` to ``dst``: the send, and each node's watch (by node)."""

    probe_id: str
    pod: str
    dst: IPv4Address
    send: ProbeSend
    watches: Mapping[str, ProbeWatch] = field(default_factory=dict)
    unarmed: tuple[str, ...] = ()          # nodes whose watch was not known armed when it was sent

    def sightings(self, node: str) -> tuple[ProbeSighting, ...]:
        """``node``'s sightings, in the order it saw them (none if it was not watched)."""
        watch = self.watches.get(node)
        return watch.sightings if watch is not None else ()

    @property
    def seen_on(self) -> tuple[str, ...]:
        """The nodes that saw the probe or its reply."""
        return tuple(node for node, watch in self.watches.items() if watch.sightings)

    @property
    def replied(self) -> bool:
        """Whether a reply to the probe was seen anywhere."""
        return any(s.kind == "echo-reply" for watch in self.watches.values() for s in watch.sightings)
