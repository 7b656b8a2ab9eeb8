"""The BGP peer set of one node: a pure function of the Snapshot and the node's name.

Rules (Calico's, see docs/bgpd.md):

* Node-to-node mesh (BGPConfiguration.nodeToNodeMeshEnabled, default on): a session to every
  other node that has a BGP address.
* BGPPeer resources: a peer applies to this node when it is global (no ``node`` and no
  ``nodeSelector``), names this node, or its ``nodeSelector`` selects this node. It targets
  ``peerIP`` or, with ``peerSelector``, every node the selector matches. A ``peerSelector``
  peer also works in reverse: a node matched by ``peerSelector`` peers with every node matched
  by ``nodeSelector`` (so route reflectors get sessions to their clients).
* A node carrying a route-reflector cluster ID is a route reflector. From an RR, a peer that
  is a cluster node and is not an RR with the same cluster ID is a *client* (RRs sharing a
  cluster ID are non-clients of each other; RRs with different cluster IDs are clients of each
  other, as in Calico).
* One session per peer address: an explicit BGPPeer (node specific, then global) wins over the
  mesh entry for the same address.
* eBGP whenever the AS numbers differ.
* The session's local address is the node's BGP address, unless the BGPPeer says
  ``sourceAddress: None``: then none is set and the kernel picks the source by its routing.
* BFD (BGPPeer ``failureDetectionMode``, BGPConfiguration ``nodeMeshFailureDetectionMode`` for
  the mesh): ``BFDIfDirectlyConnected`` gives a peer inside the node's own subnet (the network of
  its BGP address) single-hop BFD with BGPConfiguration's ``bfd*`` timers; a peer further away
  gets none, and its ``bfd_info`` says why.

Passwords come from Secrets in bgpd's namespace, which bgpd reads by name only: it watches the
Secrets :func:`referenced_secrets` names, and no other.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Iterable

from calyx.model import (ANNOTATION_IPV4_ADDRESS, FAILURE_DETECTION_BFD, KIND_BGP_CONFIGURATION, KIND_BGP_PEER, SOURCE_ADDRESS_NONE,
                         BGPConfiguration, BGPPeer, NodeInfo, ObjectName, SecretKeyRef, Snapshot)


class PeerType(str, enum.Enum):
    """How a session came to exist, as seen from this node (the PEER TYPE column)."""

    MESH = "node-to-node mesh"
    GLOBAL = "global"
    NODE_SPECIFIC = "node specific"
    RR_CLIENT = "route reflector client"     # the remote node is our client (we are an RR)
    ROUTE_REFLECTOR = "route reflector"      # the remote node is an RR and we are its client


# Precedence when two sources produce a session to the same address (lower wins).
_PRECEDENCE = {
    PeerType.RR_CLIENT: 0,
    PeerType.ROUTE_REFLECTOR: 0,
    PeerType.NODE_SPECIFIC: 1,
    PeerType.GLOBAL: 2,
    PeerType.MESH: 3,
}


@dataclass(frozen=True)
class BfdSettings:
    """Single-hop BFD with one peer: our timers (milliseconds) and the addresses it runs between."""

    local_address: IPv4Address
    min_rx_ms: int
    min_tx_ms: int
    multiplier: int


@dataclass(frozen=True)
class Peer:
    """One BGP session of this node."""

    address: IPv4Address
    peer_as: int
    local_address: IPv4Address | None       # None (sourceAddress None): the kernel picks the source
    local_as: int
    peer_type: PeerType
    source: str                              # "mesh" or "BGPPeer/<name>"
    port: int = 179
    node: str | None = None                  # the cluster node behind the address, if any
    rr_client: bool = False                  # we reflect to it as to a client
    password: str | None = field(default=None, repr=False)
    graceful_restart_time: float | None = None
    hold_time: float | None = None
    keep_original_next_hop: bool = False
    error: str | None = None                 # configuration problem: the session is not configured
    bfd: BfdSettings | None = None           # BFD runs with this peer
    bfd_info: str = ""                       # why BFD was asked for but does not run

    @property
    def ebgp(self) -> bool:
        return self.peer_as != self.local_as

    @property
    def is_cluster_node(self) -> bool:
        return self.node is not None


@dataclass(frozen=True)
class LocalSpeaker:
    """This node as a BGP speaker."""

    node: str
    address: IPv4Address
    as_number: int
    router_id: IPv4Address
    cluster_id: IPv4Address | None

    @property
    def is_route_reflector(self) -> bool:
        return self.cluster_id is not None


class PeerSetError(ValueError):
    """This node cannot speak BGP (unknown node, no BGP address)."""


def node_as(snapshot: Snapshot, node: NodeInfo) -> int:
    return node.as_number if node.as_number is not None else snapshot.bgp_configuration.as_number


def local_speaker(snapshot: Snapshot, node_name: str) -> LocalSpeaker:
    node = snapshot.nodes.get(node_name)
    if node is None:
        raise PeerSetError(f"Node {node_name!r}: not found in the datastore")
    if node.bgp_address is None:
        raise PeerSetError(
            f"Node {node_name!r}: metadata.annotations[calyx.dev/ipv4-address]: None: "
            "no BGP address (annotation or InternalIP) to speak BGP from")
    address = node.bgp_address.ip
    cluster_id = None
    if node.rr_cluster_id is not None:
        try:
            cluster_id = IPv4Address(node.rr_cluster_id)
        except ValueError:
            raise PeerSetError(
                f"Node {node_name!r}: metadata.annotations[calyx.dev/route-reflector-cluster-id]: "
                f"{node.rr_cluster_id!r}: not a dotted-quad cluster ID") from None
    return LocalSpeaker(node=node_name, address=address, as_number=node_as(snapshot, node),
                        router_id=address, cluster_id=cluster_id)


def referenced_secrets(snapshot: Snapshot, namespace: str) -> dict[tuple[str, str], tuple[ObjectName, ...]]:
    """The Secrets bgpd must read, (namespace, name) -> the objects referring to each: every
    BGPPeer's ``password.secretKeyRef`` and the BGPConfiguration's ``nodeMeshPassword``, all in
    bgpd's ``namespace``. Every BGPPeer counts, whichever nodes it applies to, so that the set
    does not change with node labels."""
    found: dict[tuple[str, str], set[ObjectName]] = {}
    config = snapshot.bgp_configuration
    if config.node_mesh_password is not None:
        found.setdefault((namespace, config.node_mesh_password.name), set()).add(
            ObjectName(KIND_BGP_CONFIGURATION, config.name))
    for peer in snapshot.bgp_peers.values():
        if peer.password is not None:
            found.setdefault((namespace, peer.password.name), set()).add(ObjectName(KIND_BGP_PEER, peer.name))
    return {key: tuple(sorted(refs)) for key, refs in sorted(found.items())}


def _resolve_password(snapshot: Snapshot, namespace: str, ref: SecretKeyRef | None,
                      owner: str) -> tuple[str | None, str | None]:
    """(password, error). A missing or unreadable Secret is an error: never fall back to no
    password."""
    if ref is None:
        return None, None
    secret = snapshot.secrets.get((namespace, ref.name))
    if secret is None:
        problem = snapshot.secret_errors.get((namespace, ref.name))
        if problem is not None:
            return None, f"{owner}: password.secretKeyRef.name: {ref.name!r}: Secret in {namespace!r} {problem}"
        return None, f"{owner}: password.secretKeyRef.name: {ref.name!r}: Secret not found in {namespace!r}"
    value = secret.get(ref.key)
    if value is None:
        return None, f"{owner}: password.secretKeyRef.key: {ref.key!r}: key not in Secret {ref.name!r}"
    return value, None


def _local_address(me: LocalSpeaker, resource: BGPPeer | None) -> IPv4Address | None:
    """The session's local address: the node's BGP address, or None for ``sourceAddress: None``."""
    if resource is not None and resource.source_address == SOURCE_ADDRESS_NONE:
        return None
    return me.address


def _bfd(config: BGPConfiguration, mode: str, me: NodeInfo, local: IPv4Address | None,
         address: IPv4Address) -> tuple[BfdSettings | None, str]:
    """(BFD settings, why none) for a session to ``address`` whose failure detection is ``mode``."""
    if mode != FAILURE_DETECTION_BFD:
        return None, ""
    subnet = me.bgp_address.network if me.bgp_address is not None else None
    if subnet is None or subnet.prefixlen == 32 or address not in subnet:
        return None, (f"BFD not run: {address} is not directly connected (outside this node's subnet "
                      f"{subnet})")
    return BfdSettings(local_address=local or me.bgp_address.ip,
                       min_rx_ms=round(config.bfd_minimum_recv_interval * 1000),
                       min_tx_ms=round(config.bfd_minimum_send_interval * 1000),
                       multiplier=config.bfd_multiplier), ""


def _applies_to(peer: BGPPeer, node: NodeInfo) -> bool:
    if peer.is_global:
        return True
    if peer.node is not None and peer.node == node.name:
        return True
    return peer.node_selector is not None and peer.node_selector.matches(node.labels)


def _nodes_selected_by(snapshot: Snapshot, selector_owner: BGPPeer, use_peer_selector: bool) -> list[NodeInfo]:
    if use_peer_selector:
        sel = selector_owner.peer_selector
        return [n for n in snapshot.nodes.values() if sel is not None and sel.matches(n.labels)]
    return [n for n in snapshot.nodes.values() if _applies_to(selector_owner, n)]


def _is_client_of_us(me: NodeInfo, other: NodeInfo) -> bool:
    """Calico's rule: from an RR, any node not sharing our cluster ID is a client."""
    return me.rr_cluster_id is not None and other.rr_cluster_id != me.rr_cluster_id


def _node_session_type(me: NodeInfo, other: NodeInfo, default: PeerType) -> tuple[PeerType, bool]:
    if _is_client_of_us(me, other):
        return PeerType.RR_CLIENT, True
    if _is_client_of_us(other, me):
        return PeerType.ROUTE_REFLECTOR, False
    return default, False


def peer_set(snapshot: Snapshot, node_name: str, namespace: str = "calyx-system") -> dict[IPv4Address, Peer]:
    """All sessions of ``node_name``, keyed by peer address."""
    me_speaker = local_speaker(snapshot, node_name)
    me = snapshot.nodes[node_name]
    config = snapshot.bgp_configuration
    candidates: list[Peer] = []

    def node_peer(other: NodeInfo, default_type: PeerType, source: str, resource: BGPPeer | None) -> Peer | None:
        if other.name == me.name or other.bgp_address is None or other.deleting:
            return None
        if other.bgp_address.ip == me_speaker.address:
            return None
        if default_type is PeerType.MESH:
            peer_type, client = PeerType.MESH, False   # the mesh is plain iBGP, as in Calico
        else:
            peer_type, client = _node_session_type(me, other, default_type)
        if resource is None:
            password, error = _resolve_password(snapshot, namespace, config.node_mesh_password,
                                                "BGPConfiguration 'default' nodeMeshPassword")
            gr = config.node_mesh_max_restart_time
            hold = None
            keep_nh = False
            port = config.listen_port
            mode = config.node_mesh_failure_detection_mode
        else:
            password, error = _resolve_password(snapshot, namespace, resource.password,
                                                f"BGPPeer {resource.name!r}")
            gr = resource.max_restart_time
            hold = resource.hold_time
            keep_nh = resource.keep_original_next_hop
            port = config.listen_port
            mode = resource.failure_detection_mode
        local = _local_address(me_speaker, resource)
        bfd, bfd_info = _bfd(config, mode, me, local, other.bgp_address.ip)
        return Peer(address=other.bgp_address.ip, peer_as=node_as(snapshot, other),
                    local_address=local, local_as=me_speaker.as_number,
                    peer_type=peer_type, source=source, port=port, node=other.name,
                    rr_client=client, password=password, graceful_restart_time=gr,
                    hold_time=hold, keep_original_next_hop=keep_nh, error=error, bfd=bfd, bfd_info=bfd_info)

    if config.node_to_node_mesh_enabled:
        for other in snapshot.nodes.values():
            p = node_peer(other, PeerType.MESH, "mesh", None)
            if p is not None:
                candidates.append(p)

    nodes_by_ip = {n.bgp_address.ip: n for n in snapshot.nodes.values() if n.bgp_address is not None}
    for resource in sorted(snapshot.bgp_peers.values(), key=lambda r: r.name):
        default_type = PeerType.GLOBAL if resource.is_global else PeerType.NODE_SPECIFIC
        source = f"BGPPeer/{resource.name}"
        if _applies_to(resource, me):
            if resource.peer_ip is not None:
                if resource.peer_ip == me_speaker.address:
                    continue
                cluster_node = nodes_by_ip.get(resource.peer_ip)
                password, error = _resolve_password(snapshot, namespace, resource.password,
                                                    f"BGPPeer {resource.name!r}")
                peer_as = resource.as_number
                if peer_as is None:
                    peer_as = node_as(snapshot, cluster_node) if cluster_node else me_speaker.as_number
                peer_type, client = default_type, False
                local = _local_address(me_speaker, resource)
                bfd, bfd_info = _bfd(config, resource.failure_detection_mode, me, local, resource.peer_ip)
                if cluster_node is not None:
                    peer_type, client = _node_session_type(me, cluster_node, default_type)
                candidates.append(Peer(
                    address=resource.peer_ip, peer_as=peer_as, local_address=local,
                    local_as=me_speaker.as_number, peer_type=peer_type, source=source,
                    port=resource.peer_port, node=cluster_node.name if cluster_node else None,
                    rr_client=client, password=password,
                    graceful_restart_time=resource.max_restart_time, hold_time=resource.hold_time,
                    keep_original_next_hop=resource.keep_original_next_hop, error=error,
                    bfd=bfd, bfd_info=bfd_info))
            elif resource.peer_selector is not None:
                for other in _nodes_selected_by(snapshot, resource, use_peer_selector=True):
                    p = node_peer(other, default_type, source, resource)
                    if p is not None:
                        candidates.append(p)
        # Reverse direction of a selector peering: we are selected by peerSelector.
        if resource.peer_selector is not None and resource.peer_selector.matches(me.labels):
            for other in _nodes_selected_by(snapshot, resource, use_peer_selector=False):
                p = node_peer(other, default_type, source, resource)
                if p is not None:
                    candidates.append(p)

    return _dedupe(candidates)


def nodes_without_address(snapshot: Snapshot, node_name: str) -> dict[str, str]:
    """The other nodes (not being deleted) this node cannot peer with because they have no BGP
    address, each with why: a Node just registered, before its kubelet reports an InternalIP,
    or one whose address was never set. They get no session (mesh or ``peerSelector``) until
    they have one."""
    return {other.name: (f"Node {other.name!r}: metadata.annotations[{ANNOTATION_IPV4_ADDRESS}]: None: "
                         "no BGP address (neither the annotation nor an InternalIP in status.addresses); "
                         "no session to it until it has one")
            for other in sorted(snapshot.nodes.values(), key=lambda n: n.name)
            if other.name != node_name and other.bgp_address is None and not other.deleting}


def _dedupe(candidates: Iterable[Peer]) -> dict[IPv4Address, Peer]:
    chosen: dict[IPv4Address, Peer] = {}
    for p in candidates:
        current = chosen.get(p.address)
        if current is None or _PRECEDENCE[p.peer_type] < _PRECEDENCE[current.peer_type]:
            chosen[p.address] = p
    return dict(sorted(chosen.items()))
