"""Service advertisement at scale: bgpd's datastore and :mod:`bgpd.services` fed from S Services
and E endpoints (EndpointSlices of 10 endpoints each) in a real kube-apiserver.

A control plane (:mod:`calyxlab.controlplane`) gets 100 Nodes, the BGPConfiguration and S
Services (type ClusterIP, one external IP each, ``externalTrafficPolicy: Local``, so that every
Service has /32s to advertise), each with one EndpointSlice of 10 ready endpoints spread over
the nodes, as the EndpointSlice controller writes them (addresses, target Pod, zone,
conditions, ports). Then, for each variant, a fresh Python process imports bgpd, starts a
Datastore on ``bgpd.daemon.watch_specs`` and reports:

* RSS after the imports and once the first advertisement set is calculated (growth: what the
  cached objects and the calculation cost);
* the time from the Datastore's start to that first advertisement set (lists of every watched
  resource, parsing, the calculation);
* the time from one EndpointSlice update that takes this node's last endpoint of a Service
  away to the recalculated set without that Service's /32s (a snapshot and a calculation).

Variants: ``bgpd`` as shipped (Services and EndpointSlices cached cut down to what the parsers
read); the reference ``whole objects``, the same Datastore caching Services and EndpointSlices
whole (only managedFields trimmed), as an informer without a transform would; and ``no Service
watch``, bgpd's other watches alone (the cost of what bgpd watched before Service
advertisement).

    .venv/bin/python -m bench.services [--quick] [--sizes 5000]
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import kubernetes.client

from bench.common import REPO, Report, parse_sizes
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyxlab import manifests
from calyxlab.controlplane import cluster

NODES = 100
ENDPOINTS_PER_SLICE = 10
THIS_NODE = "node-000"
WRITERS = 8
CONFIG = {"serviceClusterIPs": [{"cidr": cluster.DEFAULT_SERVICE_CIDR}],
          "serviceExternalIPs": [{"cidr": "198.18.0.0/15"}]}
VARIANTS = ("bgpd", "whole objects", "no Service watch")
QUIET_LOAD = 2.0       # 1-minute load average a quiet run starts below (bench/RESULTS.md)


def external_ip(i: int) -> str:
    return f"198.18.{i // 256}.{i % 256}"


def service(i: int) -> dict:
    return {"metadata": {"name": f"svc-{i:05d}", "namespace": "bench", "labels": {"app": f"app-{i}"}},
            # No selector: the EndpointSlice controller leaves the slices written here alone.
            "spec": {"type": "ClusterIP", "externalIPs": [external_ip(i)], "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def endpoint_slice(i: int, node_of: list[str]) -> dict:
    name = f"svc-{i:05d}"
    endpoints = []
    for j, node in enumerate(node_of):
        endpoints.append({"addresses": [f"10.{64 + (i * ENDPOINTS_PER_SLICE + j) // 65536}."
                                        f"{(i * ENDPOINTS_PER_SLICE + j) // 256 % 256}.{(i * ENDPOINTS_PER_SLICE + j) % 256}"],
                          "conditions": {"ready": True, "serving": True, "terminating": False},
                          "nodeName": node, "zone": f"zone-{int(node[-3:]) % 3}",
                          "targetRef": {"kind": "Pod", "namespace": "bench", "name": f"{name}-pod-{j}",
                                        "uid": f"00000000-0000-0000-{i:04d}-{j:012d}"}})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{name}-abcde", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "bench.calyx.dev"}},
            "endpoints": endpoints, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def nodes_of(i: int) -> list[str]:
    """Where Service i's endpoints run: 10 consecutive nodes of 100, so THIS_NODE runs
    endpoints of a tenth of the Services."""
    return [f"node-{(i + j) % NODES:03d}" for j in range(ENDPOINTS_PER_SLICE)]


def populate(api: kubernetes.client.ApiClient, count: int) -> float:
    """Create the Nodes, the configuration, ``count`` Services and their slices; seconds taken."""
    started = time.monotonic()
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "bench"}})
    for n in range(NODES):
        resources.create_object(api, resources.NODES, {"metadata": {"name": f"node-{n:03d}", "annotations": {
            "calyx.dev/ipv4-address": f"10.1.{n // 200}.{n % 200 + 1}/16"}}})
    resources.create_object(api, resources.BGPCONFIGURATIONS, {"metadata": {"name": "default"}, "spec": CONFIG})

    def write(i: int) -> None:
        resources.create_object(api, resources.SERVICES, service(i))
        resources.create_object(api, resources.ENDPOINTSLICES, endpoint_slice(i, nodes_of(i)))

    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, range(count)))
    return time.monotonic() - started


# --- the measuring process -----------------------------------------------------------------------

CHILD = r'''
import json, sys, time
from pathlib import Path
from bench.common import rss_mib
import os
from bgpd import daemon as bgpd_daemon
from bgpd.services import service_advertisement
from calyx.kube import client as kube_client, resources
from calyx.kube.datastore import Datastore

kubeconfig, variant, node, moved = sys.argv[1:5]
api = kube_client.load(kubeconfig)
specs = bgpd_daemon.watch_specs()
if variant == "no Service watch":
    specs = [s for s in specs if s.resource not in (resources.SERVICES, resources.ENDPOINTSLICES)]
rss_imports = rss_mib(os.getpid())
started = time.monotonic()
ds = Datastore(api, specs)
if variant == "whole objects":
    for store in ds._stores.values():     # the reference: no cut-down form, objects cached whole
        store.reflector._keep = None
ds.start()
assert ds.wait_synced(600)
first = service_advertisement(ds.snapshot(), node)
first_seconds = time.monotonic() - started
rss_first = rss_mib(os.getpid())
withdraw = None
if variant != "no Service watch":
    # Take this node's endpoint of one Service away: its /32s must leave the set.
    slice_name = f"{moved}-abcde"
    obj = resources.get_object(api, resources.ENDPOINTSLICES, slice_name, "bench")
    prefixes = {p for p, keys in first.addresses.items() if ("bench", moved) in keys}
    assert prefixes, "the moved Service had no /32 on this node"
    endpoints = [e for e in obj["endpoints"] if e["nodeName"] != node]
    t0 = time.monotonic()
    resources.patch_object(api, resources.ENDPOINTSLICES, slice_name, {"endpoints": endpoints}, "bench")
    while True:
        assert time.monotonic() - t0 < 120, "the withdrawal never showed"
        ds.wait_for_change(5.0)
        now = service_advertisement(ds.snapshot(), node)
        if not prefixes & set(now.addresses):
            withdraw = time.monotonic() - t0
            break
    # Put it back for the next variant.
    resources.patch_object(api, resources.ENDPOINTSLICES, slice_name, {"endpoints": obj["endpoints"]}, "bench")
ds.stop()
print(json.dumps({"rss_imports": rss_imports, "rss_first": rss_first, "first_seconds": first_seconds,
                  "addresses": len(first.addresses), "ranges": len(first.ranges), "withdraw_seconds": withdraw,
                  "services": len(ds.snapshot().services), "slices": len(ds.snapshot().endpoint_slices)}))
'''


def measure(kubeconfig: Path, variant: str, moved: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(kubeconfig), variant, THIS_NODE, moved],
                         capture_output=True, text=True, timeout=1800, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{variant}: measuring process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> Report:
    sizes = parse_sizes(__doc__.split("\n\n")[0], (5000,), (200,), argv, "Service counts")
    load_at_start = os.getloadavg()[0]     # the benchmark's own control plane raises it later
    report = Report("Service advertisement: bgpd's datastore and calculation fed from S Services, 10 endpoints each",
                    ".venv/bin/python -m bench.services" + (" --quick" if sizes.quick else ""),
                    ("Services", "endpoints", "variant", "RSS after imports MiB", "RSS at first set MiB",
                     "growth MiB", "first set s", "/32s on this node", "withdraw s"))
    for count in sizes.values:
        with tempfile.TemporaryDirectory(prefix="bench-services-") as workdir:
            plane = cluster.start(Path(workdir) / "control-plane")
            try:
                manifests.install_crds(str(plane.admin_kubeconfig), REPO / "charts" / "calyx" / "crds")
                api = kube_client.load(str(plane.admin_kubeconfig))
                try:
                    seconds = populate(api, count)
                finally:
                    api.close()
                report.note(f"S={count}: {count} Services and {count} EndpointSlices ({count * ENDPOINTS_PER_SLICE} "
                            f"endpoints) over {NODES} Nodes took {seconds:.1f} s to create ({WRITERS} writers).")
                moved = f"svc-{0:05d}"      # node-000 runs one of its endpoints
                for variant in VARIANTS:
                    got = measure(plane.admin_kubeconfig, variant, moved)
                    withdraw = got["withdraw_seconds"]
                    report.add(count, count * ENDPOINTS_PER_SLICE, variant, got["rss_imports"], got["rss_first"],
                               got["rss_first"] - got["rss_imports"], got["first_seconds"], got["addresses"],
                               "-" if withdraw is None else withdraw)
            finally:
                plane.stop()
    report.note("Each variant runs in a fresh process against the same API server. 'first set': from the "
                "Datastore's start (every bgpd watch listed and parsed) to the first service advertisement "
                f"calculated for {THIS_NODE}; 'withdraw': from the EndpointSlice update taking {THIS_NODE}'s "
                "endpoint of one Service away to the recalculated set without that Service's /32s.")
    report.note("Reference: 'whole objects' caches the Services and EndpointSlices as listed (managedFields "
                "trimmed), as an informer without a transform would; 'no Service watch' is bgpd's datastore "
                "without the two new watches.")
    if load_at_start >= QUIET_LOAD:
        report.note(f"Not a quiet run: the 1-minute load average was {load_at_start:.1f} at the start (quiet: "
                    f"below {QUIET_LOAD:.0f}; the machine was shared); the times are pessimistic.")
    report.finish(sizes.results)
    return report


if __name__ == "__main__":
    main()
