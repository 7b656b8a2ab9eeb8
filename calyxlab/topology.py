"""Containerlab topology files: parse, merge kinds/defaults, validate, derive node roles.

When the management subnet is overridden (``--mgmt-subnet``, used by tests to avoid
collisions), nodes' explicit ``mgmt-ipv4`` addresses move to the same host offset in it.

Reads one ``*.clab.yml`` file and returns a frozen :class:`Topology`, or raises
:class:`TopologyError` naming the file, the path inside the document and the problem. Nothing
here touches the network: a topology is fully refused before the lab creates anything.

Inheritance follows containerlab: a node's kind is its own ``kind`` or the defaults' kind;
``image``/``cmd`` come from the node, else its kind, else the defaults; ``env`` and ``labels``
are maps merged defaults < kind < node; ``exec`` lines are concatenated defaults, kind, node;
``binds`` are the node's, then the kind's, then the defaults' (a later bind whose destination
is already bound is dropped, so the more specific one wins).
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Mapping

import yaml

DEFAULT_MGMT_SUBNET = IPv4Network("172.20.20.0/24")
DEFAULT_MGMT_NETWORK = "clab"
MGMT_INTERFACE = "eth0"
SUPPORTED_KINDS = ("linux",)
NODE_IMAGE_REPOSITORY = "calyx/node"
MAX_IFNAME = 15


class TopologyError(ValueError):
    """A topology that cannot be built. The message names file, document path and problem."""

    def __init__(self, file: str | os.PathLike[str], doc_path: str, problem: str):
        self.file = str(file)
        self.doc_path = doc_path
        self.problem = problem
        super().__init__(f"{self.file}: {doc_path}: {problem}")


class Role(str, enum.Enum):
    """What the lab runs in a node, decided by its image like a container's entrypoint would."""

    CLUSTER = "cluster"   # calyx/node: registered as a Kubernetes Node, runs felix and bgpd
    FRR = "frr"
    BIRD = "bird"
    GOBGP = "gobgp"
    HOST = "host"         # anything else: only its exec lines run


def role_for_image(image: str) -> Role:
    """The role of a node whose image is ``image`` (repository, optional tag)."""
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    if repo == NODE_IMAGE_REPOSITORY or repo.endswith("/" + NODE_IMAGE_REPOSITORY):
        return Role.CLUSTER
    if repo in ("frrouting/frr", "quay.io/frrouting/frr", "docker.io/frrouting/frr"):
        return Role.FRR
    if "bird" in repo:
        return Role.BIRD
    if "gobgp" in repo:
        return Role.GOBGP
    return Role.HOST


@dataclass(frozen=True)
class Bind:
    """``source:destination[:mode]``; source is absolute (resolved against the file's dir)."""

    source: Path
    destination: str
    mode: str = "rw"


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    image: str
    role: Role
    exec: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    cmd: str = ""
    mgmt_ipv4: IPv4Address | None = None

    def bind_for(self, destination: str) -> Bind | None:
        """The bind mounted on ``destination``, if any."""
        for bind in self.binds:
            if bind.destination == destination:
                return bind
        return None


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.interface}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Mgmt:
    network: str
    subnet: IPv4Network

    @property
    def gateway(self) -> IPv4Address:
        """First host address: the bridge/tap address held by the machine running the lab."""
        return self.subnet.network_address + 1

    @property
    def agent_address(self) -> IPv4Address:
        """Last usable address: the UML-side control agent (UML kernel mode only)."""
        return self.subnet.broadcast_address - 1


@dataclass(frozen=True)
class Topology:
    name: str
    file: Path
    mgmt: Mgmt
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    mgmt_addresses: Mapping[str, IPv4Address] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"lab {self.name!r} has no node {name!r} "
                       f"(nodes: {', '.join(n.name for n in self.nodes)})")

    def namespace(self, node: str) -> str:
        """The network namespace of ``node``: containerlab's container name."""
        return f"clab-{self.name}-{node}"

    @property
    def has_cluster_nodes(self) -> bool:
        return any(n.role is Role.CLUSTER for n in self.nodes)


def load(path: str | os.PathLike[str], *, name: str | None = None,
         mgmt_subnet: str | IPv4Network | None = None) -> Topology:
    """Read and validate a topology file. ``name``/``mgmt_subnet`` override the document's."""
    file = Path(path).resolve()
    try:
        text = file.read_text()
    except OSError as exc:
        raise TopologyError(file, "/", f"cannot read the topology file: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(file, "/", f"bad YAML: {where}{problem}") from None
    return parse(doc, file, name=name, mgmt_subnet=mgmt_subnet)


def parse(doc: Any, file: Path, *, name: str | None = None,
          mgmt_subnet: str | IPv4Network | None = None) -> Topology:
    """Validate a loaded document (see :func:`load`)."""
    err = _Errors(file)
    root = err.mapping(doc, "/")
    lab_name = name if name is not None else root.get("name")
    if not isinstance(lab_name, str) or not lab_name:
        err.fail("/name", f"a lab name is required, got {lab_name!r}")
    _check_name(err, "/name", lab_name)
    mgmt = _parse_mgmt(err, root.get("mgmt"), mgmt_subnet)
    written = _parse_mgmt(err, root.get("mgmt"), None).subnet
    topo = err.mapping(root.get("topology"), "/topology")
    defaults = err.mapping(topo.get("defaults", {}), "/topology/defaults")
    kinds = err.mapping(topo.get("kinds", {}), "/topology/kinds")
    for kname, kdef in kinds.items():
        err.mapping(kdef, f"/topology/kinds/{kname}")
    raw_nodes = err.mapping(topo.get("nodes"), "/topology/nodes")
    if not raw_nodes:
        err.fail("/topology/nodes", "a topology needs at least one node")
    nodes = tuple(_parse_node(err, file.parent, str(n), raw_nodes[n], defaults, kinds)
                  for n in raw_nodes)
    links = _parse_links(err, topo.get("links", []), {n.name for n in nodes})
    if written != mgmt.subnet:
        nodes = tuple(_moved(n, written, mgmt.subnet) for n in nodes)
    addresses = _assign_mgmt(err, mgmt, nodes)
    return Topology(lab_name, file, mgmt, nodes, links, addresses)


class _Errors:
    """Raises TopologyError for one file; small helpers for typed lookups."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, doc_path: str, problem: str) -> None:
        raise TopologyError(self.file, doc_path, problem)

    def mapping(self, value: Any, doc_path: str) -> dict[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(doc_path, f"expected a mapping, got {type(value).__name__} {value!r}")
        return value

    def strings(self, value: Any, doc_path: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(doc_path, f"expected a list of strings, got {value!r}")
        return value

    def string_map(self, value: Any, doc_path: str) -> dict[str, str]:
        out = {}
        for key, val in self.mapping(value, doc_path).items():
            if isinstance(val, (dict, list)) or val is None:
                self.fail(f"{doc_path}/{key}", f"expected a string value, got {val!r}")
            out[str(key)] = str(val).lower() if isinstance(val, bool) else str(val)
        return out


def _check_name(err: _Errors, doc_path: str, name: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    if not name[0].isalnum() or not set(name) <= allowed:
        err.fail(doc_path, f"{name!r}: names use letters, digits, '-', '_' and '.', "
                           "starting with a letter or digit")


def _parse_mgmt(err: _Errors, raw: Any, override: str | IPv4Network | None) -> Mgmt:
    mgmt = err.mapping(raw, "/mgmt")
    network = mgmt.get("network", DEFAULT_MGMT_NETWORK)
    subnet_text = override if override is not None else mgmt.get("ipv4-subnet")
    if subnet_text is None:
        return Mgmt(str(network), DEFAULT_MGMT_SUBNET)
    try:
        subnet = IPv4Network(str(subnet_text), strict=True)
    except ValueError as exc:
        err.fail("/mgmt/ipv4-subnet", f"{subnet_text!r} is not an IPv4 subnet: {exc}")
    if subnet.prefixlen > 29:
        err.fail("/mgmt/ipv4-subnet", f"{subnet_text!r} is too small (at most /29)")
    return Mgmt(str(network), subnet)


def _merged(node: dict, kind: dict, defaults: dict, key: str) -> Any:
    for layer in (node, kind, defaults):
        if layer.get(key) not in (None, ""):
            return layer[key]
    return None


def _parse_node(err: _Errors, base: Path, name: str, raw: Any, defaults: dict,
                kinds: dict) -> Node:
    where = f"/topology/nodes/{name}"
    _check_name(err, where, name)
    ndef = err.mapping(raw, where)
    kind = ndef.get("kind") or defaults.get("kind")
    if not kind:
        err.fail(f"{where}/kind", "no kind given (neither on the node nor in topology.defaults)")
    if kind not in SUPPORTED_KINDS:
        err.fail(f"{where}/kind", f"unknown kind {kind!r} (supported: {', '.join(SUPPORTED_KINDS)})")
    kdef = err.mapping(kinds.get(kind, {}), f"/topology/kinds/{kind}")
    layers = ((ndef, where), (kdef, f"/topology/kinds/{kind}"), (defaults, "/topology/defaults"))
    image = _merged(ndef, kdef, defaults, "image")
    if not isinstance(image, str) or not image:
        err.fail(f"{where}/image", f"no image given (node, kind {kind!r} or defaults), got {image!r}")
    cmd = _merged(ndef, kdef, defaults, "cmd") or ""
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    for layer, lpath in reversed(layers):
        env.update(err.string_map(layer.get("env"), f"{lpath}/env"))
        labels.update(err.string_map(layer.get("labels"), f"{lpath}/labels"))
    exec_lines: list[str] = []
    for layer, lpath in reversed(layers):
        exec_lines += err.strings(layer.get("exec"), f"{lpath}/exec")
    binds: list[Bind] = []
    for layer, lpath in layers:
        for i, text in enumerate(err.strings(layer.get("binds"), f"{lpath}/binds")):
            bind = _parse_bind(err, base, f"{lpath}/binds/{i}", text)
            if all(b.destination != bind.destination for b in binds):
                binds.append(bind)
    mgmt_ip = None
    if ndef.get("mgmt-ipv4") is not None:
        try:
            mgmt_ip = IPv4Address(str(ndef["mgmt-ipv4"]))
        except ValueError:
            err.fail(f"{where}/mgmt-ipv4", f"{ndef['mgmt-ipv4']!r} is not an IPv4 address")
    return Node(name=name, kind=kind, image=image, role=role_for_image(image),
                exec=tuple(exec_lines), binds=tuple(binds), env=env, labels=labels,
                cmd=str(cmd), mgmt_ipv4=mgmt_ip)


def _parse_bind(err: _Errors, base: Path, doc_path: str, text: str) -> Bind:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        err.fail(doc_path, f"{text!r}: a bind is 'source:/absolute/destination[:ro|rw]'")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        err.fail(doc_path, f"{text!r}: bind mode must be 'ro' or 'rw', got {mode!r}")
    source = Path(os.path.expanduser(parts[0]))
    source = (base / source).resolve() if not source.is_absolute() else source
    if not source.exists():
        err.fail(doc_path, f"{text!r}: bind source {str(source)!r} does not exist")
    return Bind(source, parts[1], mode)


def _parse_endpoint(err: _Errors, doc_path: str, raw: Any) -> Endpoint:
    if isinstance(raw, str):
        node, sep, iface = raw.partition(":")
        if not sep or not node or not iface:
            err.fail(doc_path, f"{raw!r}: an endpoint is 'node:interface'")
    elif isinstance(raw, dict):
        node, iface = raw.get("node"), raw.get("interface")
        if not isinstance(node, str) or not isinstance(iface, str) or not node or not iface:
            err.fail(doc_path, f"{raw!r}: an endpoint needs 'node' and 'interface'")
    else:
        err.fail(doc_path, f"{raw!r}: an endpoint is 'node:interface' or {{node:, interface:}}")
    if len(iface) > MAX_IFNAME or "/" in iface or " " in iface:
        err.fail(doc_path, f"{iface!r}: not a valid Linux interface name (at most {MAX_IFNAME} "
                           "characters, no '/' or spaces)")
    return Endpoint(node, iface)


def _parse_links(err: _Errors, raw: Any, node_names: set[str]) -> tuple[Link, ...]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        err.fail("/topology/links", f"expected a list, got {raw!r}")
    used: dict[Endpoint, str] = {}
    links = []
    for i, rlink in enumerate(raw):
        where = f"/topology/links/{i}"
        link = err.mapping(rlink, where)
        ltype = link.get("type", "veth")
        if ltype != "veth":
            err.fail(f"{where}/type", f"link type {ltype!r} is not supported (supported: veth)")
        eps = link.get("endpoints")
        if not isinstance(eps, list) or len(eps) != 2:
            err.fail(f"{where}/endpoints", f"a veth link has exactly two endpoints, got {eps!r}")
        pair = []
        for j, rep in enumerate(eps):
            ep_path = f"{where}/endpoints/{j}"
            ep = _parse_endpoint(err, ep_path, rep)
            if ep.node not in node_names:
                err.fail(ep_path, f"{str(ep)!r}: unknown node {ep.node!r} "
                                  f"(nodes: {', '.join(sorted(node_names))})")
            if ep.interface == MGMT_INTERFACE:
                err.fail(ep_path, f"{str(ep)!r}: {MGMT_INTERFACE} is the management interface "
                                  "and cannot be used by a link")
            if ep in used:
                err.fail(ep_path, f"{str(ep)!r}: interface already used by {used[ep]}")
            used[ep] = ep_path
            pair.append(ep)
        links.append(Link(pair[0], pair[1]))
    return tuple(links)


def _moved(node: Node, old: IPv4Network, new: IPv4Network) -> Node:
    """``node`` with its mgmt-ipv4 at the same host offset in an overriding subnet."""
    ip = node.mgmt_ipv4
    if ip is None or ip not in old:
        return node
    return replace(node, mgmt_ipv4=new.network_address + (int(ip) - int(old.network_address)))


def _assign_mgmt(err: _Errors, mgmt: Mgmt, nodes: tuple[Node, ...]) -> dict[str, IPv4Address]:
    reserved = {mgmt.gateway, mgmt.agent_address}
    taken: dict[IPv4Address, str] = {}
    for node in nodes:
        ip = node.mgmt_ipv4
        if ip is None:
            continue
        where = f"/topology/nodes/{node.name}/mgmt-ipv4"
        if ip not in mgmt.subnet or ip in (mgmt.subnet.network_address,
                                           mgmt.subnet.broadcast_address):
            err.fail(where, f"{ip} is not a host address of the mgmt subnet {mgmt.subnet}")
        if ip in reserved:
            err.fail(where, f"{ip} is reserved (gateway {mgmt.gateway}, "
                            f"lab agent {mgmt.agent_address})")
        if ip in taken:
            err.fail(where, f"{ip} is already the mgmt address of node {taken[ip]!r}")
        taken[ip] = node.name
    out: dict[str, IPv4Address] = {}
    free = (h for h in mgmt.subnet.hosts() if h not in reserved and h not in taken)
    for node in nodes:
        if node.mgmt_ipv4 is not None:
            out[node.name] = node.mgmt_ipv4
            continue
        ip = next(free, None)
        if ip is None:
            err.fail("/mgmt/ipv4-subnet", f"{mgmt.subnet} has no free address for node "
                                          f"{node.name!r}")
        out[node.name] = ip
    return out
