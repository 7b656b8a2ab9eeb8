"""Cluster-level pod CIDRs of a node: ``spec.podCIDRs``, or IPAM blocks claimed through the API.

A block is claimed by creating the ``IPAMBlock`` object whose name is derived from its CIDR
(:func:`calyx.model.block_name`) with ``spec.affinity: host:<node>``. The API server makes the
create atomic: when two nodes race for the same block, one gets 201 and the other 409 and moves
on to the next free block. Blocks of a deleted Node are released by :mod:`calyx.cni.gc`.

New blocks and addresses come only from pools that allocate: not ``disabled``, selecting the
node, and not refused by :func:`calyx.ippools.refusals` (overlapping another pool, a Service CIDR
or a node network), the same rules felix and bgpd apply. A block of a disabled or refused pool
stays the node's (its pods keep working) but gives no new address (:func:`allocatable_cidrs`).

The candidate calculation (:func:`candidate_blocks`) is pure; :class:`Api` and
:class:`BlockClaimer` do the API I/O through the official ``kubernetes`` client.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any, Callable, Iterable, Iterator, Mapping

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from calyx import crds, ippools, model
from calyx.cni.config import ERR_API, ERR_IPAM_EXHAUSTED, ERR_TRY_AGAIN_LATER, CniError
from calyx.logs import get_logger
from calyx.specschema import SpecSchemas

IPAMBLOCK_PLURAL = "ipamblocks"
IPPOOL_PLURAL = "ippools"
BGPCONFIGURATION_PLURAL = "bgpconfigurations"
AFFINITY_PREFIX = "host:"
RELIST_AFTER_CONFLICTS = 8
# Every call is bounded: (seconds to connect, seconds to wait for each read). An API server that
# accepts connections but never answers (hung, or a partition dropping its replies) would
# otherwise hold the plugin, and with it the node's IPAM lock, for ever; with the bound the ADD
# fails with 11 (try again later) and the runtime retries it.
REQUEST_TIMEOUT_S = (5.0, 10.0)

log = get_logger("calyx.cni.blocks")


# --- pure ---------------------------------------------------------------------------------

def block_object(cidr: IPv4Network, node: str, pool: str) -> dict[str, Any]:
    """The IPAMBlock object that claims ``cidr`` for ``node``."""
    return {
        "apiVersion": model.API_VERSION,
        "kind": "IPAMBlock",
        "metadata": {"name": model.block_name(cidr)},
        "spec": {"cidr": str(cidr), "affinity": f"{AFFINITY_PREFIX}{node}", "pool": pool},
    }


def candidate_blocks(pool: model.IPPool, taken: Iterable[IPv4Network]) -> Iterator[IPv4Network]:
    """Blocks of ``pool`` (of its blockSize) that overlap no taken block, lowest first."""
    if pool.block_size < pool.cidr.prefixlen:
        raise CniError(ERR_API, f"IPPool {pool.name!r}: spec.blockSize: {pool.block_size}: "
                                f"smaller than the pool's own prefix /{pool.cidr.prefixlen}")
    exact: set[IPv4Network] = set()
    other: list[IPv4Network] = []
    for block in taken:
        if block.prefixlen == pool.block_size:
            exact.add(block)
        elif block.overlaps(pool.cidr):
            other.append(block)
    for candidate in pool.cidr.subnets(new_prefix=pool.block_size):
        if candidate in exact or any(candidate.overlaps(b) for b in other):
            continue
        yield candidate


def allocatable_cidrs(cidrs: Iterable[IPv4Network], pools: Mapping[str, model.IPPool]) -> tuple[IPv4Network, ...]:
    """The node's CIDRs new addresses may come from: those inside a pool that is not disabled
    (``pools``: the accepted ones). The others keep their pods but take no new one."""
    out = []
    for cidr in cidrs:
        pool = model.routing_pool_containing(pools, cidr)
        if pool is not None and not pool.disabled:
            out.append(cidr)
    return tuple(out)


def exhausted_message(node: str, pools: Iterable[model.IPPool]) -> str:
    names = [f"{p.name} ({p.cidr}, blockSize {p.block_size})" for p in pools]
    if not names:
        return (f"IPAM: node {node!r}: no enabled IPPool selects this node "
                f"(check the pools' nodeSelector and disabled fields, and the logs for a pool "
                f"refused because its spec.cidr overlaps another pool, a Service CIDR or a node network)")
    return f"IPAM: node {node!r}: every pool is exhausted, no free block left in: {', '.join(names)}"


# --- API I/O ------------------------------------------------------------------------------

def _api_error(action: str, exc: Exception) -> CniError:
    if isinstance(exc, ApiException):
        if exc.status in (429, 500, 502, 503, 504):
            return CniError(ERR_TRY_AGAIN_LATER, f"{action}: API answered {exc.status} {exc.reason}")
        return CniError(ERR_API, f"{action}: API answered {exc.status} {exc.reason}: {exc.body}")
    return CniError(ERR_TRY_AGAIN_LATER, f"{action}: Kubernetes API unreachable: {exc}")


API_FAILURES = (ApiException, urllib3.exceptions.HTTPError, OSError)


class Api:
    """The few API calls IPAM makes, returning plain dicts (as the model parses them)."""

    def __init__(self, api_client: k8s.ApiClient, request_timeout: tuple[float, float] = REQUEST_TIMEOUT_S):
        self._client = api_client
        self._core = k8s.CoreV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._timeout = request_timeout

    def _plain(self, obj: Any) -> Any:
        return self._client.sanitize_for_serialization(obj)

    def read_node(self, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(self._core.read_node(name, _request_timeout=self._timeout))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_nodes(self) -> list[dict[str, Any]]:   # the nodes' networks: pools overlapping them are refused
        return self._plain(self._core.list_node(_request_timeout=self._timeout)).get("items", [])

    def list_pods_on(self, node: str) -> list[dict[str, Any]]:
        return self._plain(self._core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}", _request_timeout=self._timeout)).get("items", [])

    def list_custom(self, plural: str) -> list[dict[str, Any]]:
        return self._custom.list_cluster_custom_object(model.GROUP, model.VERSION, plural,
                                                       _request_timeout=self._timeout).get("items", [])

    def create_block(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._custom.create_cluster_custom_object(model.GROUP, model.VERSION, IPAMBLOCK_PLURAL, body,
                                                         _request_timeout=self._timeout)

    def read_block(self, name: str) -> dict[str, Any]:
        return self._custom.get_cluster_custom_object(model.GROUP, model.VERSION, IPAMBLOCK_PLURAL, name,
                                                      _request_timeout=self._timeout)

    def delete_block(self, name: str, options: k8s.V1DeleteOptions | None = None) -> None:
        self._custom.delete_cluster_custom_object(model.GROUP, model.VERSION, IPAMBLOCK_PLURAL, name, body=options,
                                                  _request_timeout=self._timeout)


def parse_valid(items: Iterable[Mapping[str, Any]], parse: Callable[[Mapping[str, Any]], Any]) -> dict[str, Any]:
    """name -> parsed object; invalid objects are logged (naming object, field, value) and left out."""
    out: dict[str, Any] = {}
    for raw in items:
        try:
            parsed = parse(raw)
        except model.ValidationError as exc:
            log.warning("ignoring invalid object", error=str(exc))
            continue
        out[raw.get("metadata", {}).get("name", "")] = parsed
    return out


@dataclass
class BlockClaimer:
    """The pod CIDRs of one node, claiming more blocks on demand (an ``ipam.CidrSource``)."""

    api: Api
    node: str
    _schemas: SpecSchemas | None = None      # read from the CRDs at first use
    _node_info: model.NodeInfo | None = None
    _pools: dict[str, model.IPPool] | None = None   # the accepted pools, read at first use

    @property
    def schemas(self) -> SpecSchemas:
        if self._schemas is None:
            self._schemas = crds.spec_schemas()
        return self._schemas

    def _node(self) -> model.NodeInfo:
        if self._node_info is None:
            try:
                raw = self.api.read_node(self.node)
            except API_FAILURES as exc:
                raise _api_error(f"reading Node {self.node!r}", exc) from None
            if raw is None:
                raise CniError(ERR_API, f"IPAM: Node {self.node!r} not found in the API "
                                        f"(check nodename in the CNI config or NODENAME)")
            try:
                self._node_info = model.parse_node(raw)
            except model.ValidationError as exc:
                raise CniError(ERR_API, f"IPAM: {exc}") from None
        return self._node_info

    def _blocks(self) -> tuple[list[dict[str, Any]], dict[str, model.IPAMBlock]]:
        try:
            raw = self.api.list_custom(IPAMBLOCK_PLURAL)
        except API_FAILURES as exc:
            raise _api_error("listing IPAMBlocks", exc) from None
        return raw, parse_valid(raw, lambda obj: model.parse_ipam_block(obj, self.schemas))

    def _list(self, what: str, plural: str, parse: Callable[[Mapping[str, Any]], Any]) -> dict[str, Any]:
        try:
            return parse_valid(self.api.list_custom(plural), parse)
        except API_FAILURES as exc:
            raise _api_error(f"listing {what}", exc) from None

    def accepted_pools(self) -> dict[str, model.IPPool]:
        """The valid IPPools without those :func:`calyx.ippools.refusals` refuses (each refusal logged)."""
        if self._pools is None:
            pools = self._list("IPPools", IPPOOL_PLURAL, lambda obj: model.parse_ippool(obj, self.schemas))
            configs = self._list("BGPConfigurations", BGPCONFIGURATION_PLURAL,
                                 lambda obj: model.parse_bgp_configuration(obj, self.schemas))
            try:
                nodes = parse_valid(self.api.list_nodes(), model.parse_node)
            except API_FAILURES as exc:
                raise _api_error("listing Nodes", exc) from None
            in_use = ippools.pools_in_use(pools, self._blocks()[1].values(), nodes.values())
            refused = ippools.refusals(pools, nodes, model.effective_bgp_configuration(configs), in_use)
            for err in refused.values():
                log.warning("refused resource", kind=err.kind, name=err.name, field=err.field_path,
                            value=repr(err.value), problem=err.problem)
            self._pools = {name: pool for name, pool in pools.items() if name not in refused}
        return self._pools

    def current(self) -> tuple[IPv4Network, ...]:
        """The node's CIDRs new addresses may come from (blocks of disabled or refused pools left out)."""
        node = self._node()
        if node.pod_cidrs:
            return tuple(node.pod_cidrs)
        return allocatable_cidrs(model.node_pod_cidrs(node, self._blocks()[1]), self.accepted_pools())

    def claim_more(self) -> IPv4Network:
        node = self._node()
        if node.pod_cidrs:
            raise CniError(ERR_IPAM_EXHAUSTED, f"IPAM: node {self.node!r}: every address of its "
                           f"spec.podCIDRs {', '.join(map(str, node.pod_cidrs))} is in use")
        eligible = sorted(model.allocating_pools_for_node(self.accepted_pools(), node), key=lambda p: p.name)
        conflicts = 0
        while True:
            raw_blocks, blocks = self._blocks()
            taken = [b.cidr for b in blocks.values()]
            taken_names = {r.get("metadata", {}).get("name") for r in raw_blocks}
            relist = False
            for pool in eligible:
                for cidr in candidate_blocks(pool, taken):
                    name = model.block_name(cidr)
                    if name in taken_names:
                        continue
                    if self._create(cidr, pool.name):
                        return cidr
                    conflicts += 1
                    taken_names.add(name)
                    if conflicts % RELIST_AFTER_CONFLICTS == 0:
                        relist = True
                        break
                if relist:
                    break
            if not relist:
                raise CniError(ERR_IPAM_EXHAUSTED, exhausted_message(self.node, eligible))

    def _create(self, cidr: IPv4Network, pool: str) -> bool:
        """Claim one block: True if this node now owns it, False if another node got it first."""
        body = block_object(cidr, self.node, pool)
        name = body["metadata"]["name"]
        try:
            self.api.create_block(body)
            log.info("claimed block", node=self.node, block=str(cidr), pool=pool)
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise _api_error(f"creating IPAMBlock {name!r}", exc) from None
        except API_FAILURES as exc:
            raise _api_error(f"creating IPAMBlock {name!r}", exc) from None
        # 409: someone holds that name; it is ours only if an earlier, unanswered create of ours made it.
        try:
            existing = model.parse_ipam_block(self.api.read_block(name), self.schemas)
        except (ApiException, model.ValidationError):
            return False
        except API_FAILURES as exc:
            raise _api_error(f"reading IPAMBlock {name!r}", exc) from None
        return existing.node == self.node and existing.cidr == cidr
