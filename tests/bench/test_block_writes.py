"""The benchmarks give running nodes their blocks as Calyx IPAM does: IPAMBlock objects created
concurrently through the real API server (a real server has no bulk create), timed from the
first create sent to the last one answered."""
from __future__ import annotations

from ipaddress import IPv4Network

import kubernetes.client
import pytest

from bench.testbed import BlockWrites
from calyx import crds, model
from calyx.cni import blocks as cni_blocks


def _blocks(api: kubernetes.client.ApiClient) -> dict[str, model.IPAMBlock]:
    return cni_blocks.parse_valid(cni_blocks.Api(api).list_custom(cni_blocks.IPAMBLOCK_PLURAL),
                                  lambda obj: model.parse_ipam_block(obj, crds.spec_schemas()))


def test_blocks_are_created_concurrently_as_calyx_ipam_names_them_and_timed(kube) -> None:
    cidrs = [str(c) for c in list(IPv4Network("100.64.0.0/20").subnets(new_prefix=26))[:40]]
    claims = [("node-a", c) for c in cidrs[:30]] + [("node-b", c) for c in cidrs[30:]]
    api = kube.client()
    try:
        writes = BlockWrites(api, claims, pool="bench", writers=4).start().join(300)
        assert writes.count == 40
        assert writes.started is not None and writes.finished is not None and writes.seconds > 0
        stored = _blocks(api)
        assert set(stored) == {model.block_name(c) for c in cidrs}
        for node, cidr in claims:
            block = stored[model.block_name(cidr)]
            assert (block.node, str(block.cidr), block.pool, block.deleted) == (node, cidr, "bench", False)
        # a node without spec.podCIDRs has exactly its IPAMBlocks, as felix and bgpd read them
        a = model.NodeInfo(name="node-a")
        assert [str(c) for c in model.node_pod_cidrs(a, stored)] == sorted(cidrs[:30], key=IPv4Network)
    finally:
        api.close()


def test_a_refused_create_is_raised_and_stops_the_other_writers(kube) -> None:
    api = kube.client()
    try:
        BlockWrites(api, [("node-a", "100.64.0.0/26")]).start().join(120)
        taken_first = [("node-b", "100.64.0.0/26")] + [("node-b", f"100.65.{i}.0/26") for i in range(200)]
        writes = BlockWrites(api, taken_first, writers=1).start()
        with pytest.raises(RuntimeError, match=r"creating IPAMBlock 100-64-0-0-26 \(host:node-b\): HTTP 409"):
            writes.join(120)
        assert len(_blocks(api)) == 1                       # nothing after the refused one
        with pytest.raises(RuntimeError, match="409"):
            writes.check()
    finally:
        api.close()


def test_no_blocks_take_no_time(kube) -> None:
    api = kube.client()
    try:
        assert BlockWrites(api, []).start().join(60).seconds == 0
    finally:
        api.close()
