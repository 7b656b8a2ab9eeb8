"""IPAM as ``calyxctl ipam show`` and ``calyxctl ipam check`` see it: pool and block usage,
who holds an address, and where the API and the nodes' address records disagree.

Calyx keeps blocks in the API (IPAMBlock, affine to a node) and each node's assignments
(address -> container and pod) in that node's ``$run_dir/ipam/state.json``, written by the CNI
plugin. An :class:`IpamSnapshot` gathers both: the valid pools and blocks, the Nodes and Pods,
and the assignments of the nodes whose records could be read (``unread`` says why the others
could not). Everything here is pure calculation over that snapshot.

An address is *in use* when a node's record assigns it, a Pod in the API holds it, or it is
the first address of a block (the node's own, for tunl0; never given to a pod).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Iterable, Mapping

from calyx import model


@dataclass(frozen=True)
class Assignment:
    """One address a node's CNI plugin gave one pod interface (its ``state.json`` entry)."""

    node: str
    address: IPv4Address
    namespace: str
    pod: str
    container_id: str
    ifname: str

    @property
    def handle(self) -> str:
        """What identifies the assignment on its node, as Calico's IPAM handle does."""
        return f"{self.container_id}/{self.ifname}"


@dataclass(frozen=True)
class IpamSnapshot:
    pools: Mapping[str, model.IPPool] = field(default_factory=dict)
    blocks: Mapping[str, model.IPAMBlock] = field(default_factory=dict)
    nodes: Mapping[str, model.NodeInfo] = field(default_factory=dict)
    pods: Mapping[tuple[str, str], model.PodInfo] = field(default_factory=dict)
    assignments: Mapping[str, tuple[Assignment, ...]] = field(default_factory=dict)   # node -> its records
    unread: Mapping[str, str] = field(default_factory=dict)                            # node -> why not read
    invalid: tuple[str, ...] = ()      # validation errors of the objects left out


@dataclass(frozen=True)
class Usage:
    """Addresses of one pool or block: how many there are, how many are in use."""

    cidr: IPv4Network
    total: int
    in_use: int
    name: str = ""                 # pool name, or block name
    node: str | None = None        # a block's affinity
    pool: str | None = None        # a block's pool

    @property
    def free(self) -> int:
        return self.total - self.in_use


def _pod_addresses(snapshot: IpamSnapshot) -> dict[IPv4Address, model.PodInfo]:
    out: dict[IPv4Address, model.PodInfo] = {}
    for _, pod in sorted(snapshot.pods.items()):
        if pod.host_network:
            continue
        for address in pod.ips:
            out.setdefault(address, pod)
    return out


def _assigned(snapshot: IpamSnapshot) -> dict[IPv4Address, list[Assignment]]:
    out: dict[IPv4Address, list[Assignment]] = {}
    for node in sorted(snapshot.assignments):
        for entry in snapshot.assignments[node]:
            out.setdefault(entry.address, []).append(entry)
    return out


def _reserved(snapshot: IpamSnapshot) -> dict[IPv4Address, model.IPAMBlock]:
    return {block.cidr.network_address: block for block in snapshot.blocks.values() if not block.deleted}


def in_use(snapshot: IpamSnapshot) -> frozenset[IPv4Address]:
    """Every address in use: assigned on a node, held by a Pod, or a block's node address."""
    return frozenset(_assigned(snapshot)) | frozenset(_pod_addresses(snapshot)) | frozenset(_reserved(snapshot))


def _count_in(cidr: IPv4Network, addresses: Iterable[IPv4Address]) -> int:
    return sum(1 for a in addresses if a in cidr)


def pool_usage(snapshot: IpamSnapshot) -> list[Usage]:
    used = in_use(snapshot)
    return [Usage(pool.cidr, pool.cidr.num_addresses, _count_in(pool.cidr, used), name=pool.name)
            for _, pool in sorted(snapshot.pools.items(), key=lambda item: (item[1].cidr, item[0]))]


def block_usage(snapshot: IpamSnapshot) -> list[Usage]:
    used = in_use(snapshot)
    return [Usage(block.cidr, block.cidr.num_addresses, _count_in(block.cidr, used), name=block.name,
                  node=block.node, pool=block.pool)
            for block in sorted(snapshot.blocks.values(), key=lambda b: b.cidr)]


@dataclass(frozen=True)
class AddressReport:
    """Everything known about one address (``ipam show --ip``)."""

    address: IPv4Address
    pool: model.IPPool | None
    block: model.IPAMBlock | None
    assignments: tuple[Assignment, ...]      # the nodes' records of it (more than one: a conflict)
    pod: model.PodInfo | None                # the Pod in the API holding it
    node_address_of: str | None              # the block's node, when it is the block's first address
    unread_node: str | None                  # the block's node, when its records could not be read

    @property
    def assigned(self) -> bool:
        return bool(self.assignments) or self.pod is not None or self.node_address_of is not None


def address_report(snapshot: IpamSnapshot, address: IPv4Address) -> AddressReport:
    pool = model.routing_pool_containing(snapshot.pools, address)
    block = next((b for b in sorted(snapshot.blocks.values(), key=lambda b: b.cidr) if address in b.cidr), None)
    reserved = block is not None and not block.deleted and address == block.cidr.network_address
    return AddressReport(
        address=address, pool=pool, block=block,
        assignments=tuple(_assigned(snapshot).get(address, ())),
        pod=_pod_addresses(snapshot).get(address),
        node_address_of=(block.node or "?") if reserved and block is not None else None,
        unread_node=block.node if block is not None and block.node in snapshot.unread else None,
    )


# --- consistency (ipam check) ------------------------------------------------------------

@dataclass(frozen=True)
class Leak:
    """An address a node's record assigns to a pod that does not hold it any more."""

    assignment: Assignment
    reason: str


@dataclass(frozen=True)
class Unrecorded:
    """A Pod whose address in a Calyx pool no record of its node assigns."""

    pod: model.PodInfo
    address: IPv4Address


@dataclass(frozen=True)
class Orphan:
    """A block affine to a node that no longer exists."""

    block: model.IPAMBlock


@dataclass(frozen=True)
class Duplicate:
    """One address assigned more than once (by records, or records and Pods disagreeing)."""

    address: IPv4Address
    holders: tuple[str, ...]


@dataclass(frozen=True)
class CheckReport:
    leaks: tuple[Leak, ...]
    unrecorded: tuple[Unrecorded, ...]
    orphans: tuple[Orphan, ...]
    duplicates: tuple[Duplicate, ...]
    unchecked_nodes: Mapping[str, str]       # node -> why its records could not be read
    assignments_per_node: Mapping[str, int]

    @property
    def problems(self) -> int:
        return len(self.leaks) + len(self.unrecorded) + len(self.orphans) + len(self.duplicates)

    @property
    def complete(self) -> bool:
        return not self.unchecked_nodes


def check(snapshot: IpamSnapshot) -> CheckReport:
    leaks = []
    for node in sorted(snapshot.assignments):
        for entry in sorted(snapshot.assignments[node], key=lambda a: a.address):
            pod = snapshot.pods.get((entry.namespace, entry.pod))
            if pod is None:
                leaks.append(Leak(entry, f"pod {entry.namespace}/{entry.pod} no longer exists"))
            elif pod.node is not None and pod.node != node:
                leaks.append(Leak(entry, f"pod {entry.namespace}/{entry.pod} now runs on node {pod.node}"))
            elif pod.ips and entry.address not in pod.ips:
                held = ", ".join(str(a) for a in pod.ips)
                leaks.append(Leak(entry, f"pod {entry.namespace}/{entry.pod} holds {held} instead"))

    unrecorded = []
    for _, pod in sorted(snapshot.pods.items()):
        if pod.host_network or pod.node is None or pod.node not in snapshot.assignments:
            continue
        recorded = {(a.namespace, a.pod, a.address) for a in snapshot.assignments[pod.node]}
        for address in pod.ips:
            if model.routing_pool_containing(snapshot.pools, address) is None:
                continue
            if (pod.namespace, pod.name, address) not in recorded:
                unrecorded.append(Unrecorded(pod, address))

    orphans = tuple(Orphan(block) for block in sorted(snapshot.blocks.values(), key=lambda b: b.cidr)
                    if block.node is not None and block.node not in snapshot.nodes)

    duplicates = []
    pods_by_address: dict[IPv4Address, set[str]] = {}
    for _, pod in sorted(snapshot.pods.items()):
        if not pod.host_network:
            for address in pod.ips:
                if model.routing_pool_containing(snapshot.pools, address) is not None:
                    pods_by_address.setdefault(address, set()).add(f"pod {pod.namespace}/{pod.name}")
    for address, entries in sorted(_assigned(snapshot).items()):
        if len(entries) > 1:
            duplicates.append(Duplicate(address, tuple(f"node {a.node}: pod {a.namespace}/{a.pod} ({a.handle})"
                                                       for a in entries)))
    for address, holders in sorted(pods_by_address.items()):
        if len(holders) > 1:
            duplicates.append(Duplicate(address, tuple(sorted(holders))))

    return CheckReport(
        leaks=tuple(leaks), unrecorded=tuple(unrecorded), orphans=orphans, duplicates=tuple(duplicates),
        unchecked_nodes=dict(sorted(snapshot.unread.items())),
        assignments_per_node={node: len(entries) for node, entries in sorted(snapshot.assignments.items())},
    )


def leaked(snapshot: IpamSnapshot) -> tuple[Leak, ...]:
    return check(snapshot).leaks
