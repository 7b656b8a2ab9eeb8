"""Bad resources, the reliability suite's cases: objects a user can write that Calyx must not
use, and must not let disturb what is programmed.

Each case either has the API server refuse the object (the CRDs' schema and CEL rules), with the
message naming the field, or, when the API server cannot know (overlap between objects, selector
syntax, a Node without an address or with a malformed annotation), has the daemons refuse it with
a log line and a Warning Event naming object, field and value, while the kernel routes already
programmed stay as they are and no route is written because of it.

The live cases share one cluster (:mod:`faultcluster`: bgpd's daemon lab, node1..3 in a full
mesh with felix and bgpd, a BIRD router peering with every node, a pod on every node), objects
applied with the real kubectl while every pod pings every other: no ping may be lost. The
property-based case feeds CRD-valid but hostile IPPools and BGPPeers through the model into
felix's and bgpd's pure calculations next to a known-good cluster.
"""
from __future__ import annotations

import copy
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path as FilePath
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgpd import importer
from bgpd.export import own_prefixes
from bgpd.peers import Peer, peer_set
from bgpd.rib import Attributes, Path
from calyx import crds, ippools, model
from calyx.model import ValidationError
from calyxlab.pytest_plugin import wait_for
from calyxlab.traffic import PingMatrix
from crdrules import cel_failures
from faultcluster import NODES, ROUTER, Cluster, router_peer
from felix import calc
import faultcluster

sys.path.insert(0, str(FilePath(__file__).resolve().parents[1] / "bgpd"))
from bgpd_lab import peers, status  # noqa: E402

SCHEMAS = crds.spec_schemas()


# --- The API server's view: what it would accept -----------------------------------------------

def crd_accepts(obj: dict[str, Any]) -> bool:
    """Whether the API server would store ``obj``: its spec, with the CRD's defaults, valid
    against the openAPIV3Schema (the validator the model uses) and breaking no CEL rule."""
    kind = obj["kind"]
    spec = SCHEMAS.defaulted(kind, obj.get("spec") or {})
    if not SCHEMAS.validator(kind).is_valid(spec):
        return False
    return cel_failures(dict(crds.crd(kind).schema), {"metadata": obj["metadata"], "spec": spec}) == []


# --- A known-good cluster -------------------------------------------------------------------------

BLOCKS = {"node1": "10.244.1.0/26", "node2": "10.244.2.0/26", "node3": "10.244.3.0/26"}
PODS = {("default", "web-1"): ("node1", "10.244.1.5"), ("default", "web-2"): ("node2", "10.244.2.7")}
EARLY = "2026-01-01T00:00:00Z"      # the good objects' creation time; hostile ones come later
LATE = "2026-06-01T00:00:00Z"


def _custom(kind: str, name: str, spec: dict[str, Any], created: str = EARLY) -> dict[str, Any]:
    return {"apiVersion": "calyx.dev/v1", "kind": kind,
            "metadata": {"name": name, "creationTimestamp": created}, "spec": spec}


def good_objects() -> dict[str, list[dict[str, Any]]]:
    return {
        "pools": [_custom("IPPool", "default", {"cidr": "10.244.0.0/16", "ipipMode": "Never"})],
        "peers": [_custom("BGPPeer", "tor", {"peerIP": ROUTER, "asNumber": 65001})],
        "config": [_custom("BGPConfiguration", "default", {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]})],
        "blocks": [_custom("IPAMBlock", model.block_name(cidr), {"cidr": cidr, "affinity": f"host:{node}",
                                                                  "pool": "default"})
                   for node, cidr in BLOCKS.items()],
        "nodes": [{"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "rack": "a"},
                                "annotations": {model.ANNOTATION_IPV4_ADDRESS: f"{address}/24"}},
                   "status": {"addresses": [{"type": "InternalIP", "address": address}]}}
                  for node, address in NODES.items()],
        "pods": [{"metadata": {"namespace": ns, "name": name},
                  "spec": {"nodeName": node}, "status": {"phase": "Running", "podIP": ip}}
                 for (ns, name), (node, ip) in PODS.items()],
    }


def snapshot_of(pools: list[model.IPPool], peers: list[model.BGPPeer]) -> tuple[model.Snapshot, dict]:
    """The snapshot a daemon builds: the good cluster plus ``pools`` and ``peers`` already
    parsed, with the pools Calyx refuses left out (:func:`calyx.ippools.without_refused_pools`,
    as the datastore does); and every pool's conflict."""
    good = good_objects()
    all_pools = [model.parse_ippool(o, SCHEMAS) for o in good["pools"]] + pools
    all_peers = [model.parse_bgp_peer(o, SCHEMAS) for o in good["peers"]] + peers
    snapshot = model.Snapshot(
        nodes={n.name: n for n in map(model.parse_node, good["nodes"])},
        pods={p.key: p for p in map(model.parse_pod, good["pods"])},
        ippools={p.name: p for p in all_pools},
        bgp_configuration=model.effective_bgp_configuration(
            [model.parse_bgp_configuration(o, SCHEMAS) for o in good["config"]]),
        bgp_peers={p.name: p for p in all_peers},
        blocks={b.name: b for b in (model.parse_ipam_block(o, SCHEMAS) for o in good["blocks"])},
    )
    return ippools.without_refused_pools(snapshot)


def learned_block_paths(node: str) -> dict[IPv4Network, Path]:
    """What ``node`` learns in the mesh: every other node's block, from that node."""
    return {IPv4Network(BLOCKS[other]): Path(IPv4Network(BLOCKS[other]), Attributes(IPv4Address(address)),
                                             IPv4Address(address), IPv4Address(address), ebgp=False)
            for other, address in NODES.items() if other != node}


def desired(snapshot: model.Snapshot) -> dict[str, Any]:
    """Per node: felix's desired routes, bgpd's sessions, its own prefixes and the install
    decisions of the blocks it learns."""
    out: dict[str, Any] = {}
    for node, address in NODES.items():
        facts = calc.LocalFacts(node, underlay_mtu=1500, subnet=IPv4Network("10.0.0.0/24"), underlay_device="eth1")
        dataplane = calc.desired_dataplane(snapshot, facts)
        info = snapshot.nodes[node]
        ctx = importer.ImportContext(
            local=IPv4Interface(f"{address}/24"), own_networks=model.node_pod_cidrs(info, snapshot.blocks),
            pools=dict(snapshot.ippools),
            cluster_next_hops=frozenset(IPv4Address(a) for n, a in NODES.items() if n != node))
        paths = learned_block_paths(node)
        out[node] = {
            "routes": dict(dataplane.routes),
            "peers": peer_set(snapshot, node),
            "own": own_prefixes(snapshot, node),
            "refusals": {p: importer.refusal(path, True, ctx) for p, path in paths.items()},
            "installs": importer.decide(paths, ctx),
        }
    return out


GOOD_SNAPSHOT, GOOD_CONFLICTS = snapshot_of([], [])
GOOD = desired(GOOD_SNAPSHOT)
# Checked here, before any generated example: the CEL interpreter raises the recursion limit
# the first time it runs, which hypothesis would otherwise see change under a test.
GOOD_OBJECTS_VALID = all(crd_accepts(o) for key in ("pools", "peers", "config", "blocks")
                         for o in good_objects()[key])


def test_the_good_cluster_is_whole():
    """The reference the property compares with: every pod and block routed, every session up."""
    assert GOOD_OBJECTS_VALID
    assert GOOD_CONFLICTS == {}
    for node, want in GOOD.items():
        assert IPv4Network(BLOCKS[node]) in want["routes"]
        assert {str(a) for a in want["peers"]} == {a for n, a in NODES.items() if n != node} | {ROUTER}
        assert want["own"] == (IPv4Network(BLOCKS[node]),)
        assert set(want["refusals"].values()) == {None}
        assert {d.pool for d in want["installs"].values()} == {"default"}
    assert IPv4Network("10.244.1.5/32") in GOOD["node1"]["routes"]
    assert IPv4Network("10.244.2.7/32") in GOOD["node2"]["routes"]


# --- Hostile but CRD-valid objects -------------------------------------------------------------

# Selector texts: valid ones that select much or nothing, broken ones, absurd ones.
SELECTORS = st.one_of(
    st.sampled_from(["all()", "", "   ", "rack == 'a'", "!has(rack)", "rack in {}", "rack ==", "has(",
                     "a == 'b' && ", "kubernetes.io/hostname == 'node1'", "x in (a,b", "((all())",
                     "k == \"v\" || !all()", "!", "node1", "a=b,c!=d", "a b c", "==", "'", "all() all()",
                     "has(x) && (y == 'z' || !has(w))", "\x00", "rack == 'a\u00e9'", "\u00e9 == 'x'"]),
    st.integers(1, 3000).map(lambda n: "(" * n + "all()" + ")" * n),
    st.integers(1, 3000).map(lambda n: "!" * n + "has(rack)"),
    st.integers(1, 500).map(lambda n: " && ".join(["has(a)"] * n)),
    st.text(max_size=40),
)
OCTET = st.integers(0, 255)
ADDRESSES = st.one_of(st.sampled_from(["10.244.0.0", "10.244.1.0", "10.244.1.5", "10.96.0.0", "10.0.0.0",
                                       "10.0.0.11", ROUTER, "0.0.0.0", "255.255.255.255", "127.0.0.1",
                                       "198.51.100.0", "10.245.0.0"]),
                      st.tuples(OCTET, OCTET, OCTET, OCTET).map(lambda t: ".".join(map(str, t))))
DURATIONS = st.sampled_from(["0", "1s", "2.999s", "3s", "90s", "65535s", "65536s", "18h12m15s", "1.5h",
                             "0.5ms", "1ns", "999999999h", ".5s"])
MODES = st.sampled_from(["Always", "CrossSubnet", "Never"])
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)


@st.composite
def hostile_pool(draw: st.DrawFn, index: int) -> dict[str, Any]:
    prefix = draw(st.integers(0, 32))
    cidr = f"{draw(ADDRESSES)}/{prefix}"
    if draw(st.integers(0, 3)):      # mostly a proper network; else host bits may be set
        cidr = str(IPv4Network(cidr, strict=False))
    spec: dict[str, Any] = {"cidr": cidr}
    if draw(st.booleans()):
        spec["blockSize"] = draw(st.integers(max(20, prefix), 32))
    for key in ("ipipMode", "vxlanMode"):
        if draw(st.booleans()):
            spec[key] = draw(MODES)
    for key in ("natOutgoing", "disabled", "disableBGPExport"):
        if draw(st.booleans()):
            spec[key] = draw(st.booleans())
    if draw(st.booleans()):
        spec["nodeSelector"] = draw(SELECTORS)
    return _custom("IPPool", f"hostile-pool-{index}", spec, created=LATE)


@st.composite
def hostile_peer(draw: st.DrawFn, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        port = draw(st.one_of(st.none(), st.integers(1, 65535)))
        spec["peerIP"] = draw(ADDRESSES) + ("" if port is None else f":{port}")
        spec["asNumber"] = draw(st.one_of(st.sampled_from([1, 64512, 65001, 4294967295]),
                                          st.integers(1, 4294967295)))
    else:
        spec["peerSelector"] = draw(SELECTORS)
    where = draw(st.sampled_from(["global", "node", "nodeSelector"]))
    if where == "node":
        spec["node"] = draw(st.one_of(st.sampled_from(list(NODES)), NAMES))
    elif where == "nodeSelector":
        spec["nodeSelector"] = draw(SELECTORS)
    if draw(st.booleans()):
        spec["holdTime"] = draw(DURATIONS)
    if draw(st.booleans()):
        spec["maxRestartTime"] = draw(DURATIONS)
    if draw(st.booleans()):
        spec["keepOriginalNextHop"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["sourceAddress"] = draw(st.sampled_from(["UseNodeIP", "None"]))
    if draw(st.booleans()):
        spec["failureDetectionMode"] = draw(st.sampled_from(["None", "BFDIfDirectlyConnected"]))
    if draw(st.booleans()):
        spec["password"] = {"secretKeyRef": {"name": draw(NAMES), "key": draw(NAMES)}}
    return _custom("BGPPeer", f"hostile-peer-{index}", spec, created=LATE)


@st.composite
def hostile_objects(draw: st.DrawFn) -> list[dict[str, Any]]:
    pools = [draw(hostile_pool(i)) for i in range(draw(st.integers(0, 4)))]
    peers = [draw(hostile_peer(i)) for i in range(draw(st.integers(0, 4)))]
    return [o for o in pools + peers if crd_accepts(o)]


def check_error_names(err: ValidationError, obj: dict[str, Any]) -> None:
    """The error names the object's kind and name, a field of its spec and the value."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    assert (err.kind, err.name) == (kind, name), str(err)
    assert err.field_path.startswith("spec."), str(err)
    assert str(err).startswith(f"{kind} {name!r}: {err.field_path}: {err.value!r}: "), str(err)
    assert err.problem, str(err)


def same_or_replaced_by_hostile_peer(good: Peer, now: Peer | None) -> bool:
    """A good session is kept as it was, or taken over by an accepted hostile BGPPeer naming the
    same address (an explicit BGPPeer wins over the mesh, as in Calico): never lost."""
    return now is not None and (now == good or now.source.startswith("BGPPeer/hostile-peer-"))


def check_hostile_objects(objects: list[dict[str, Any]], seen: Counter) -> None:
    pools, peers = [], []
    for obj in objects:
        seen[obj["kind"]] += 1
        raw = copy.deepcopy(obj)
        try:
            if obj["kind"] == "IPPool":
                pools.append(model.parse_ippool(raw, SCHEMAS))
            else:
                peers.append(model.parse_bgp_peer(raw, SCHEMAS))
        except ValidationError as err:
            check_error_names(err, obj)
            seen[f"{obj['kind']} refused by the model"] += 1
    snapshot, conflicts = snapshot_of(pools, peers)
    assert "default" in snapshot.ippools and "default" not in conflicts
    for name, conflict in conflicts.items():
        assert conflict.refused and name.startswith("hostile-pool-"), conflict
        err = conflict.error
        cidr = str(next(p.cidr for p in pools if p.name == name))
        assert (err.kind, err.name, err.field_path, err.value) == ("IPPool", name, "spec.cidr", cidr), str(err)
        assert str(err).startswith(f"IPPool {name!r}: spec.cidr: {cidr!r}: overlaps "), str(err)
        seen["IPPool refused for an overlap"] += 1
    now = desired(snapshot)
    for node, want in GOOD.items():
        got = now[node]
        assert {dst: got["routes"].get(dst) for dst in want["routes"]} == want["routes"], node
        for address, session in want["peers"].items():
            assert same_or_replaced_by_hostile_peer(session, got["peers"].get(address)), (node, address)
        assert got["own"] == want["own"], node
        assert got["refusals"] == want["refusals"], node
        assert got["installs"] == want["installs"], node


def run_hostile_objects(fault_record, examples: int) -> None:
    with fault_record.case(f"CRD-valid hostile IPPools and BGPPeers ({examples} generated sets) beside a good cluster",
                           "no exception; good pods, blocks, sessions and imports unchanged; "
                           "each refused object named") as case:
        seen: Counter = Counter()
        check = settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
            given(objects=hostile_objects())(check_hostile_objects))
        check(seen=seen)
        case.detail = "model: " + ", ".join(f"{count} {what}" for what, count in sorted(seen.items()))


@pytest.mark.fault
def test_hostile_pools_and_peers_leave_the_good_cluster_alone(fault_record) -> None:
    run_hostile_objects(fault_record, 200)


@pytest.mark.fault
@pytest.mark.fault_full
def test_many_more_hostile_pools_and_peers_leave_the_good_cluster_alone(fault_record) -> None:
    run_hostile_objects(fault_record, 3000)


# --- Live: bad objects applied with kubectl to a running cluster, pods pinging each other ------------

SETTLE = 2.0        # seconds after the daemons reported the object, for any write it caused to land


def _short(line: str) -> str:
    """A log line without its timestamp, level and logger, for the record."""
    return " ".join(part for part in line.split(" ") if not part.startswith(("ts=", "level=", "logger=")))


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, unique_lab_name) -> Iterator[Cluster]:
    yield from faultcluster.deploy(request, unique_lab_name("fbadres"))


@dataclass(frozen=True)
class ApiRefusal:
    obj: dict[str, Any]
    message: str        # what kubectl apply's error must contain


def _lab_pool(name: str = "pool", **spec: Any) -> dict[str, Any]:
    base = {"cidr": "10.244.0.0/16", "blockSize": 24, "ipipMode": "Never", "nodeSelector": "all()"}
    return _custom("IPPool", name, {**base, **spec})


API_REFUSED = {
    "IPPool blockSize 33": ApiRefusal(
        _lab_pool("pool-b", cidr="10.250.0.0/16", blockSize=33),
        'spec.blockSize: Invalid value: 33: spec.blockSize in body should be less than or equal to 32'),
    "IPPool blockSize 19": ApiRefusal(
        _lab_pool("pool-b", cidr="10.250.0.0/16", blockSize=19),
        'spec.blockSize: Invalid value: 19: spec.blockSize in body should be greater than or equal to 20'),
    "BGPPeer asNumber 0": ApiRefusal(
        router_peer("peer-b", asNumber=0),
        'spec.asNumber: Invalid value: 0: spec.asNumber in body should be greater than or equal to 1'),
    "BGPPeer asNumber 4294967296": ApiRefusal(
        router_peer("peer-b", asNumber=4294967296),
        'spec.asNumber: Invalid value: 4294967296: spec.asNumber in body should be less than or equal to 4294967295'),
    "BGPPeer asNumber \"abc\"": ApiRefusal(
        router_peer("peer-b", asNumber="abc"),
        'spec.asNumber: Invalid value: "string": spec.asNumber in body must be of type integer: "string"'),
    "BGPPeer peerIP 10.0.0.300": ApiRefusal(
        router_peer("peer-b", peerIP="10.0.0.300"),
        'spec.peerIP: Invalid value: "10.0.0.300": spec.peerIP in body should match'),
    "BGPPeer peerIP 10.0.0.254:0": ApiRefusal(
        router_peer("peer-b", peerIP="10.0.0.254:0"),
        'spec.peerIP: Invalid value: "10.0.0.254:0": spec.peerIP in body should match'),
    "the in-use IPPool edited to blockSize 33": ApiRefusal(
        _lab_pool(blockSize=33),
        'spec.blockSize: Invalid value: 33: spec.blockSize in body should be less than or equal to 32'),
}


@pytest.mark.fault
@pytest.mark.lab
@pytest.mark.parametrize("fault", sorted(API_REFUSED))
def test_the_api_refuses_out_of_range_fields(cluster: Cluster, fault_record, fault: str) -> None:
    refusal = API_REFUSED[fault]
    with fault_record.case(f"{fault} (kubectl apply)",
                           "API refuses it naming the field; routes unchanged, 0 lost, 0 route writes") as case:
        before = cluster.measure()
        with PingMatrix(cluster.lab, cluster.pods) as pings:
            proc = cluster.apply(refusal.obj)
            assert proc.returncode != 0 and refusal.message in proc.stderr, proc.stderr
            kind, name = refusal.obj["kind"].lower(), refusal.obj["metadata"]["name"]
            stored = json.loads(cluster.must(cluster.kubectl("get", f"{kind}.calyx.dev", "-o", "json")))["items"]
            if name == "pool":       # the edit was refused: the stored pool is the good one
                assert [o["spec"]["blockSize"] for o in stored if o["metadata"]["name"] == name] == [24]
            else:
                assert name not in {o["metadata"]["name"] for o in stored}
            after = cluster.measure()
        case.packets(pings.lost, pings.sent)
        assert pings.lost == 0
        case.route_writes = after.route_writes - before.route_writes
        assert after.programmed == before.programmed
        assert case.route_writes == 0 and after.felix_writes == before.felix_writes
        said = next(line for line in proc.stderr.splitlines() if refusal.message in line).strip().lstrip("* ")
        case.detail = "refused by the API: " + re.sub(r"should match '.*'$", "should match the CRD's pattern", said)


def _refused_by_daemons(cluster: Cluster, case: Any, bad: dict[str, Any] | tuple[str, Callable[[], Any]],
                        restore: Callable[[], Any], daemons: tuple[str, ...], needles: tuple[str, ...],
                        reason: str | None, event_text: str = "") -> None:
    """Apply ``bad`` (an object, or its name and how to make it bad; the API must store it), wait
    until ``daemons`` on every node logged a line with every needle (and, with ``reason``, a
    Warning Event on the object containing ``event_text``), check nothing programmed changed and
    no route was written; then ``restore`` and check again."""
    if isinstance(bad, dict):
        name, inject = bad["metadata"]["name"], lambda: cluster.must(cluster.apply(bad))
    else:
        name, inject = bad
    before = cluster.measure()
    marks = cluster.log_marks()
    with PingMatrix(cluster.lab, cluster.pods) as pings:
        inject()
        try:
            lines = cluster.wait_logged(marks, daemons, *needles)
            events = []
            if reason is not None:
                events = wait_for(f"a {reason} Event on {name}",
                                  lambda: [m for m in cluster.events(name, reason) if event_text in m], timeout=30)
            time.sleep(SETTLE)
            after = cluster.measure()
            case.route_writes = after.route_writes - before.route_writes
            case.detail = "; ".join(f"{daemon}: {_short(line)}" for daemon, line in lines.items())
            if events:
                case.detail += f"; Event {reason}: {events[0]}"
            assert after.programmed == before.programmed
            assert case.route_writes == 0 and after.felix_writes == before.felix_writes
        finally:        # the next case starts from the good cluster, whatever happened here
            restore()
        time.sleep(SETTLE)
    case.packets(pings.lost, pings.sent)
    assert pings.lost == 0, f"pods lost {pings.lost} of {pings.sent} pings"
    restored = cluster.measure()
    assert restored.programmed == before.programmed
    assert restored.route_writes == before.route_writes


@pytest.mark.fault
@pytest.mark.lab
def test_a_pool_overlapping_the_pool_in_use_is_refused(cluster: Cluster, fault_record) -> None:
    bad = _lab_pool("pool-overlap", cidr="10.244.1.0/24", ipipMode="Always", disableBGPExport=True)
    with fault_record.case("IPPool overlapping the IPPool in use (10.244.1.0/24 inside 10.244.0.0/16)",
                           "felix and bgpd refuse the newer pool naming spec.cidr; routes unchanged, "
                           "0 lost, 0 route writes") as case:
        _refused_by_daemons(
            cluster, case, bad, lambda: cluster.must(cluster.kubectl("delete", "ippool.calyx.dev", "pool-overlap")),
            ("felix", "bgpd"), ('event="refused resource"', "name=pool-overlap", "field=spec.cidr",
                                "'10.244.1.0/24'", "overlaps IPPool 'pool' (10.244.0.0/16)"),
            "ConflictingResource", "IPPool 'pool-overlap': spec.cidr: '10.244.1.0/24': overlaps IPPool 'pool'")


@pytest.mark.fault
@pytest.mark.lab
def test_a_pool_overlapping_the_service_cidr_is_refused(cluster: Cluster, fault_record) -> None:
    bad = _lab_pool("pool-services", cidr="10.96.0.0/16")
    with fault_record.case("IPPool overlapping the Service CIDR (10.96.0.0/16 in 10.96.0.0/12)",
                           "felix and bgpd refuse the pool naming spec.cidr; routes unchanged, "
                           "0 lost, 0 route writes") as case:
        _refused_by_daemons(
            cluster, case, bad, lambda: cluster.must(cluster.kubectl("delete", "ippool.calyx.dev", "pool-services")),
            ("felix", "bgpd"), ('event="refused resource"', "name=pool-services", "field=spec.cidr",
                                "'10.96.0.0/16'", "overlaps the Service CIDR 10.96.0.0/12"),
            "ConflictingResource", "IPPool 'pool-services': spec.cidr: '10.96.0.0/16': overlaps the Service CIDR")


@pytest.mark.fault
@pytest.mark.lab
def test_the_pool_in_use_edited_to_a_broken_node_selector_keeps_its_last_valid_version(
        cluster: Cluster, fault_record) -> None:
    with fault_record.case("the IPPool in use edited to nodeSelector \"rack == 'a\" (does not parse)",
                           "felix and bgpd refuse the edit naming spec.nodeSelector and keep the last "
                           "valid pool; routes unchanged, 0 lost, 0 route writes") as case:
        _refused_by_daemons(
            cluster, case, _lab_pool(nodeSelector="rack == 'a"), lambda: cluster.must(cluster.apply(_lab_pool())),
            ("felix", "bgpd"), ('event="invalid resource"', "kind=IPPool", "name=pool", "field=spec.nodeSelector",
                                "invalid selector at position", "kept_previous=true"),
            "InvalidResource", "spec.nodeSelector: \"rack == 'a\": invalid selector at position")


@pytest.mark.fault
@pytest.mark.lab
def test_a_peer_whose_peer_selector_does_not_parse_is_refused(cluster: Cluster, fault_record) -> None:
    bad = _custom("BGPPeer", "to-reflectors", {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true"})
    with fault_record.case("BGPPeer with peerSelector \"route-reflector == 'true\" (does not parse)",
                           "bgpd refuses it naming spec.peerSelector; sessions and routes unchanged, "
                           "0 lost, 0 route writes") as case:
        sessions = {n: peers(status(cluster.lab, n)) for n in NODES}
        _refused_by_daemons(
            cluster, case, bad, lambda: cluster.must(cluster.kubectl("delete", "bgppeer.calyx.dev", "to-reflectors")),
            ("bgpd",), ('event="invalid resource"', "kind=BGPPeer", "name=to-reflectors",
                        "field=spec.peerSelector", "kept_previous=false"),
            "InvalidResource", "spec.peerSelector: \"route-reflector == 'true\": invalid selector at position")
        _assert_sessions_kept(cluster, sessions)


@pytest.mark.fault
@pytest.mark.lab
def test_the_router_peer_edited_to_a_broken_node_selector_keeps_its_session(cluster: Cluster, fault_record) -> None:
    with fault_record.case("the router's BGPPeer edited to nodeSelector \"rack in {'a'\" (does not parse)",
                           "bgpd refuses the edit naming spec.nodeSelector and keeps the session; routes "
                           "unchanged, 0 lost, 0 route writes") as case:
        sessions = {n: peers(status(cluster.lab, n)) for n in NODES}
        _refused_by_daemons(
            cluster, case, router_peer(nodeSelector="rack in {'a'"), lambda: cluster.must(cluster.apply(router_peer())),
            ("bgpd",), ('event="invalid resource"', "kind=BGPPeer", "name=office-router", "field=spec.nodeSelector",
                        "kept_previous=true"),
            "InvalidResource", "spec.nodeSelector: \"rack in {'a'\": invalid selector at position")
        _assert_sessions_kept(cluster, sessions)


@pytest.mark.fault
@pytest.mark.lab
def test_a_node_without_an_address_gets_no_session_and_is_named(cluster: Cluster, fault_record) -> None:
    node4 = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node4"}, "spec": {"podCIDRs": ["10.244.4.0/24"]}}
    with fault_record.case("Node with no address (no calyx.dev/ipv4-address, no InternalIP)",
                           "bgpd names it and opens no session to it; routes unchanged, 0 lost, 0 route writes") as case:
        sessions = {n: peers(status(cluster.lab, n)) for n in NODES}
        _refused_by_daemons(
            cluster, case, node4, lambda: cluster.must(cluster.kubectl("delete", "node", "node4")),
            ("bgpd",), ("event=node_without_address", "node=node4", "metadata.annotations[calyx.dev/ipv4-address]",
                        "no BGP address"), None)
        _assert_sessions_kept(cluster, sessions)


def _assert_sessions_kept(cluster: Cluster, before: dict[str, dict[str, dict]]) -> None:
    """Every node has the same sessions as before, Established since the same moment."""
    for node, sessions in before.items():
        now = peers(status(cluster.lab, node))
        assert {a: (p["state"], p["since"]) for a, p in now.items()} == \
               {a: (p["state"], p["since"]) for a, p in sessions.items()}, node


BAD_NODES = {
    "a new Node with calyx.dev/ipv4-address '10.0.0.15/33'": (
        "node5", {"calyx.dev/ipv4-address": "10.0.0.15/33"},
        "field=metadata.annotations[calyx.dev/ipv4-address]", "not a valid IPv4 address with prefix"),
    "a new Node with calyx.dev/as-number '4294967296'": (
        "node6", {"calyx.dev/ipv4-address": "10.0.0.16/24", "calyx.dev/as-number": "4294967296"},
        "field=metadata.annotations[calyx.dev/as-number]", "not a valid AS number (1..4294967295)"),
    "node2 annotated calyx.dev/as-number 'abc'": (
        "node2", {"calyx.dev/as-number": "abc"},
        "field=metadata.annotations[calyx.dev/as-number]", "not a valid AS number (1..4294967295)"),
}


@pytest.mark.fault
@pytest.mark.lab
@pytest.mark.parametrize("annotation", sorted(BAD_NODES))
def test_a_node_with_a_malformed_annotation_is_refused(cluster: Cluster, fault_record, annotation: str) -> None:
    name, annotations, field, problem = BAD_NODES[annotation]
    existing = name in NODES
    if existing:       # an edit: the last valid version of the Node stays in use
        inject = lambda: cluster.must(cluster.kubectl(
            "annotate", "node", name, *(f"{k}={v}" for k, v in annotations.items())))
        restore = lambda: cluster.must(cluster.kubectl("annotate", "node", name, *(f"{k}-" for k in annotations)))
    else:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": annotations}}
        inject = lambda: cluster.must(cluster.apply(node))
        restore = lambda: cluster.must(cluster.kubectl("delete", "node", name))
    with fault_record.case(f"{annotation} (annotations are not validated by the API)",
                           "felix and bgpd refuse the Node naming the annotation"
                           + (" and keep its last valid version" if existing else "; no session to it")
                           + "; sessions and routes unchanged, 0 lost, 0 route writes") as case:
        sessions = {n: peers(status(cluster.lab, n)) for n in NODES}
        _refused_by_daemons(
            cluster, case, (name, inject), restore,
            ("felix", "bgpd"), ('event="invalid resource"', "kind=Node", f"name={name}", field, problem,
                                f"kept_previous={str(existing).lower()}"),
            "InvalidResource", f"Node {name}: {field.removeprefix('field=')}: ")
        _assert_sessions_kept(cluster, sessions)
