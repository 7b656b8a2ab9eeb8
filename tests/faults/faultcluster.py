"""The reliability suite's live cluster for the bad-resource and hostile-peer cases: bgpd's daemon
lab (``tests/bgpd/labs/daemon``: node1..3 in a full mesh with felix and bgpd on the host kernel,
a BIRD router in AS 65001 peering with every node) with a pod on every node, wired as the CNI
plugin wires one (:mod:`calyx.cni.netsetup`: the cali veth, the pod's /32 and its gateway), so a
continuous ping between every ordered pair of pods measures what a fault costs the workloads.

The pods' addresses come from the nodes' ``spec.podCIDRs`` (the lab's blocks, no IPAM): felix
adopts each pod's /32, bgpd announces the blocks over the mesh. :class:`Cluster` measures the
routes felix and bgpd own and their write counters, follows the daemons' logs and Events, and
applies objects with the real kubectl.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any, Iterator

import yaml

from calyx.naming import cali_interface_name
from calyxlab import pods
from calyxlab.pytest_plugin import module_lab, wait_for
from calyxlab.tools import find_tool
from calyxlab.traffic import POD_NAMESPACE, Pod
from podpings import wire_pod

DAEMON_LAB = FilePath(__file__).resolve().parents[1] / "bgpd" / "labs" / "daemon" / "daemon.clab.yml"
NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12", "node3": "10.0.0.13"}
LAB_CIDRS = {"node1": "10.244.1.0/24", "node2": "10.244.2.0/24", "node3": "10.244.3.0/24"}
ROUTER, ROUTER_AS = "10.0.0.254", 65001
ROUTER_NET = "198.51.100.0/24"
LAB_PODS = {node: Pod(node, f"web-{i}", f"10.244.{i}.5") for i, node in enumerate(NODES, start=1)}
PROGRAMMED = {"80", "bgp"}                   # route protocols: felix's and bgpd's
# One command per node: its routes and both daemons' metrics.
PROBE = r"""
import json, subprocess, urllib.request
def metrics(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return answer.read().decode()
    except OSError:
        return None     # the daemon is not serving (yet)
routes = subprocess.run(["ip", "-j", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout
print(json.dumps({"routes": json.loads(routes or "[]"), "felix": metrics(9099), "bgpd": metrics(9098)}))
"""


def custom(kind: str, name: str, spec: dict[str, Any], created: str | None = None) -> dict[str, Any]:
    """A calyx.dev/v1 object (``created``: its creationTimestamp, for the model's tests)."""
    metadata: dict[str, Any] = {"name": name}
    if created:
        metadata["creationTimestamp"] = created
    return {"apiVersion": "calyx.dev/v1", "kind": kind, "metadata": metadata, "spec": spec}


def router_peer(name: str = "office-router", **spec: Any) -> dict[str, Any]:
    return custom("BGPPeer", name, {"peerIP": ROUTER, "asNumber": ROUTER_AS, **spec})


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """The sum of the samples of ``name`` (with labels starting with ``labels``) in an exposition."""
    prefix = f"{name}{{{labels}" if labels else name
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix) and (labels or line[len(name):len(name) + 1] in (" ", "{")))


@dataclass(frozen=True)
class Measure:
    """The cluster at one instant: each node's felix and bgpd routes, and the daemons' write counters."""

    programmed: dict[str, frozenset[str]]
    route_writes: int         # felix's route writes plus bgpd's, every node
    felix_writes: int         # every netlink change felix made (routes, tunnel, VXLAN, nftables)


@dataclass
class Cluster:
    lab: Any
    kubectl_binary: str

    @property
    def pods(self) -> list[Pod]:
        return list(LAB_PODS.values())

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kubectl_binary, "--kubeconfig", str(self.lab.kubeconfig), *args],
                              input=stdin, capture_output=True, text=True, timeout=60)

    def apply(self, *docs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(list(docs)))

    def must(self, proc: subprocess.CompletedProcess[str]) -> str:
        assert proc.returncode == 0, f"kubectl {' '.join(proc.args[3:])} failed:\n{proc.stderr}"
        return proc.stdout

    def measure(self) -> Measure:
        programmed, route_writes, felix_writes = {}, 0, 0
        for node in NODES:
            res = self.lab.exec(node, [sys.executable, "-c", PROBE], check=True)
            seen = json.loads(res.stdout)
            down = [daemon for daemon in ("felix", "bgpd") if seen[daemon] is None]
            assert not down, f"{node}: {', '.join(down)} not serving /metrics"
            programmed[node] = frozenset(
                " ".join(f"{k}={r[k]}" for k in ("type", "dst", "gateway", "dev", "protocol", "flags") if r.get(k))
                for r in seen["routes"] if str(r.get("protocol")) in PROGRAMMED)
            route_writes += int(metric_sum(seen["felix"], "felix_netlink_writes_total", 'object="route"')
                                + metric_sum(seen["bgpd"], "bgpd_route_writes_total"))
            felix_writes += int(metric_sum(seen["felix"], "felix_netlink_writes_total"))
        return Measure(programmed, route_writes, felix_writes)

    def log_marks(self) -> dict[tuple[str, str], int]:
        return {(node, daemon): self._log(node, daemon).stat().st_size for node in NODES for daemon in ("felix", "bgpd")}

    def _log(self, node: str, daemon: str) -> FilePath:
        return self.lab.names.log_dir(node) / f"{daemon}.log"

    def logged_since(self, marks: dict[tuple[str, str], int], node: str, daemon: str, *needles: str) -> str | None:
        """The first line ``daemon`` on ``node`` logged since ``marks`` containing every needle."""
        with open(self._log(node, daemon), errors="replace") as log:
            log.seek(marks[(node, daemon)])
            return next((line.strip() for line in log if all(n in line for n in needles)), None)

    def wait_logged(self, marks: dict[tuple[str, str], int], daemons: tuple[str, ...], *needles: str,
                    nodes: tuple[str, ...] = tuple(NODES)) -> dict[str, str]:
        """Until ``nodes``' ``daemons`` logged a line with every needle; the first node's line of each."""
        found: dict[str, str] = {}
        for node in nodes:
            for daemon in daemons:
                line = wait_for(f"{daemon} on {node} logging {needles}",
                                lambda n=node, d=daemon: self.logged_since(marks, n, d, *needles), timeout=60)
                found.setdefault(daemon, line)
        return found

    def events(self, name: str, reason: str) -> list[str]:
        out = self.must(self.kubectl("get", "events", "-A", "-o", "json", "--field-selector",
                                     f"involvedObject.name={name},reason={reason}"))
        return [e["message"] for e in json.loads(out)["items"]]


def _add_pod(cluster: Cluster, pod: Pod) -> None:
    """The pod's sandbox namespace and its wiring on its node, as the CNI plugin makes them,
    then the Pod in the API, Running with its address (what the kubelet reports)."""
    lab = cluster.lab
    netns = pods.pod_netns(lab.name, pod.node, POD_NAMESPACE, pod.name)
    lab.run_root(["ip", "netns", "add", netns], check=True)
    wire_pod(lab.names.namespace(pod.node), netns, cali_interface_name(POD_NAMESPACE, pod.name), pod.ip, mtu=1500)
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod.name, "namespace": POD_NAMESPACE},
            "spec": {"nodeName": pod.node, "containers": [{"name": "c", "image": "busybox"}]}}
    wait_for(f"the pod {pod.name} created (its namespace's service account may come late)",
             lambda: cluster.apply(body).returncode == 0, timeout=60)
    cluster.must(cluster.kubectl(
        "patch", "pod", pod.name, "-n", POD_NAMESPACE, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": {"phase": "Running", "podIP": pod.ip, "podIPs": [{"ip": pod.ip}]}})))


def wait_programmed(cluster: Cluster) -> Measure:
    """Until every node holds its pod's /32, its block, the other nodes' blocks and the router's
    network, and nothing else of felix's or bgpd's."""
    def whole() -> Measure | None:
        try:
            seen = cluster.measure()
        except AssertionError:      # a daemon still starting
            return None
        for node in NODES:
            got = " ".join(sorted(seen.programmed[node]))
            pod = LAB_PODS[node]
            wanted = [f"dst={LAB_CIDRS[node]}", f"dst={ROUTER_NET} gateway={ROUTER}",
                      f"dst={pod.ip} dev={cali_interface_name(POD_NAMESPACE, pod.name)}"]
            wanted += [f"dst={LAB_CIDRS[o]} gateway={NODES[o]}" for o in NODES if o != node]
            if not all(w in got for w in wanted) or len(seen.programmed[node]) != len(wanted):
                return None
        return seen
    return wait_for("every node's pod, block and BGP routes", whole, timeout=120)


def deploy(request: Any, name: str) -> Iterator[Cluster]:
    """The daemon lab with felix and bgpd on every node, the router peered with every node and a
    pod on every node: every kind of route programmed, the pods reaching each other. Destroyed
    afterwards (the pods' namespaces with it), even on failure."""
    with module_lab(request, name, DAEMON_LAB, kernel="host", daemons=("felix", "bgpd")) as lab:
        cluster = Cluster(lab, find_tool("kubectl"))
        cluster.must(cluster.apply(router_peer()))
        for pod in LAB_PODS.values():
            _add_pod(cluster, pod)
        wait_programmed(cluster)
        yield cluster
