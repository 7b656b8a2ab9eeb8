"""What the end-to-end scenarios share: deploying a scenario once per test module, pods on
every node, the pod-to-pod ping matrix, ``bgpd status`` per node, switching the IPPool's IPIP
mode (through the API or ``kubectl apply``), packet captures on the underlay, a continuous
ping that counts lost packets, and the daemons' metrics and routes.

Every wait polls for the condition with a generous timeout; figures (convergence times, lost
packets) are printed, never asserted as timings.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from calyxlab import pods
from calyxlab.lab import REPO_ROOT, Lab
from calyxlab import pytest_plugin
from calyxlab.tools import find_tool
from calyxlab.traffic import (POD_NAMESPACE, Pod, add_pod, format_matrix,  # noqa: F401 (re-exported)
                              ping_matrix, ping_once)

SCENARIOS = REPO_ROOT / "containerlab"
BGPD = str(REPO_ROOT / ".venv" / "bin" / "bgpd")
KUBECTL = find_tool("kubectl")
POOL = "default-ipv4-ippool"
CONVERGE_TIMEOUT = 120.0      # generous: UML is ~10x slower than the host for syscalls
# docs/operations.md states this bound: packets a 20/s ping between pods on different nodes may
# lose over the whole live sequence Always -> Never -> CrossSubnet -> Always.
MAX_LOST_DURING_MODE_SWITCHES = 10
# The daemons' health ports (the chart's defaults; the scenarios' values serve them on every address).
HEALTH_PORTS = {"felix": 9099, "bgpd": 9098}


def topology(scenario: str) -> Path:
    return SCENARIOS / scenario / f"{scenario}.clab.yml"


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = CONVERGE_TIMEOUT,
             interval: float = 0.3) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    return pytest_plugin.wait_for(what, predicate, timeout, interval)


@contextlib.contextmanager
def deployed(request, unique_lab_name: Callable[[str], str], scenario: str,
             kernel: str) -> Iterator[Lab]:
    """Deploy ``containerlab/<scenario>`` for a whole test module; destroy it afterwards.

    Logs are kept (and their path printed) when a test of the module failed.
    """
    started = time.monotonic()
    with pytest_plugin.module_lab(request, unique_lab_name(scenario), topology(scenario),
                                  kernel=kernel) as lab:
        print(f"\n{scenario}: deployed in {time.monotonic() - started:.1f} s "
              f"({lab.kernel} kernel)")
        yield lab


# ----------------------------------------------------------------------------- pods
def add_pods(lab: Lab, nodes: Sequence[str]) -> dict[str, Pod]:
    """One pod per node, the nodes' pods made concurrently (as kubelets would)."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        made = dict(zip(nodes, pool.map(lambda n: add_pod(lab, n), nodes)))
    print(f"pods: {', '.join(f'{p.name}={p.ip}' for p in made.values())} "
          f"({time.monotonic() - started:.1f} s)")
    return made


def pod_exec(lab: Lab, pod: Pod, argv: Sequence[str], timeout: float = 60.0):
    return pods.exec_pod(lab, pod.node, POD_NAMESPACE, pod.name, list(argv), timeout=timeout)


def assert_full_matrix(lab: Lab, pods_: Sequence[Pod], label: str) -> None:
    started = time.monotonic()
    result = ping_matrix(lab, pods_, timeout=CONVERGE_TIMEOUT)
    print(format_matrix(pods_, result))
    print(f"ping matrix ({label}): {sum(result.values())}/{len(result)} pairs in "
          f"{time.monotonic() - started:.1f} s")
    failed = [f"{a}->{b}" for (a, b), ok in result.items() if not ok]
    assert not failed, f"{label}: pod pairs that cannot ping: {', '.join(failed)}"


# ----------------------------------------------------------------------------- routes, bgpd
def routes(lab: Lab, node: str, *selector: str) -> list[dict]:
    res = lab.exec(node, ["ip", "-j", "-4", "route", "show", *selector], check=True)
    return json.loads(res.stdout or "[]")


def bgp_routes(lab: Lab, node: str) -> dict[str, dict]:
    """Kernel routes installed by bgpd (proto bgp), by destination."""
    return {r["dst"]: r for r in routes(lab, node, "proto", "bgp")}


def route_summary(route: dict) -> str:
    """'via NH dev DEV [onlink]' of a JSON route (for messages and mode checks)."""
    text = f"via {route.get('gateway')} dev {route.get('dev')}"
    return text + (" onlink" if "onlink" in route.get("flags", []) else "")


def node_block(lab: Lab, node: str) -> str:
    """The block a node owns: its blackhole route (felix programs one per affine block)."""
    blocks = [r["dst"] for r in routes(lab, node, "type", "blackhole")]
    assert len(blocks) == 1, f"node {node}: expected one blackhole block route, got {blocks}"
    return blocks[0]


def bgpd_status(lab: Lab, node: str) -> dict:
    res = lab.exec(node, [BGPD, "status", "-o", "json"], env=lab.node_env(node), timeout=60)
    assert res.returncode == 0, f"node {node}: bgpd status exited {res.returncode}: {res.stderr}"
    return json.loads(res.stdout)


def bgpd_status_table(lab: Lab, node: str) -> str:
    return lab.exec(node, [BGPD, "status"], env=lab.node_env(node), timeout=60).stdout


def sessions(status: dict) -> dict[str, tuple[str, str]]:
    """peer address -> (peer type, state)."""
    return {p["peer_address"]: (p["peer_type"], p["state"]) for p in status["peers"]}


def wait_sessions(lab: Lab, node: str, expected: dict[str, str]) -> dict:
    """Wait until ``node`` has exactly the ``expected`` peers (address -> type), Established."""
    want = {addr: (kind, "Established") for addr, kind in expected.items()}
    started = time.monotonic()
    status = wait_for(f"node {node}: sessions {want}",
                      lambda: (s := bgpd_status(lab, node)) and sessions(s) == want and s)
    print(f"node {node}: {len(want)} sessions Established after "
          f"{time.monotonic() - started:.1f} s")
    return status


# ----------------------------------------------------------------------------- the IPPool
def custom_api(lab: Lab):
    from kubernetes import client as k8s
    from calyx.kube import client as kube_client
    return k8s.CustomObjectsApi(kube_client.load(str(lab.kubeconfig)))


def core_api(lab: Lab):
    from kubernetes import client as k8s
    from calyx.kube import client as kube_client
    return k8s.CoreV1Api(kube_client.load(str(lab.kubeconfig)))


def set_ipip_mode_api(lab: Lab, mode: str) -> None:
    custom_api(lab).patch_cluster_custom_object("calyx.dev", "v1", "ippools", POOL,
                                                {"spec": {"ipipMode": mode}})


def kubectl(lab: Lab, *args: str, input: str | None = None) -> str:
    """Run kubectl against the lab's API as its admin; its output (fails the test on error)."""
    res = subprocess.run([KUBECTL, *args], input=input, text=True, capture_output=True,
                         timeout=60, env={**os.environ, "KUBECONFIG": str(lab.kubeconfig)})
    assert res.returncode == 0, f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr}"
    return res.stdout.strip()


def set_ipip_mode_kubectl(lab: Lab, mode: str, cidr: str = "10.244.0.0/16") -> str:
    manifest = (f"apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata:\n  name: {POOL}\n"
                f"spec:\n  cidr: {cidr}\n  blockSize: 26\n  ipipMode: {mode}\n"
                f"  nodeSelector: all()\n")
    return kubectl(lab, "apply", "-f", "-", input=manifest)


def expected_route_ok(route: dict | None, next_hop: str, encapsulated: bool) -> bool:
    if route is None or route.get("gateway") != next_hop:
        return False
    if encapsulated:
        return route.get("dev") == "tunl0" and "onlink" in route.get("flags", [])
    return route.get("dev") != "tunl0"


def wait_install_modes(lab: Lab, node: str, expected: dict[str, tuple[str, bool]]) -> None:
    """Wait until ``node``'s bgp routes match block -> (next hop, encapsulated)."""
    def ok() -> bool:
        have = bgp_routes(lab, node)
        return all(expected_route_ok(have.get(block), nh, encap)
                   for block, (nh, encap) in expected.items())
    try:
        wait_for(f"node {node}: routes {expected}", ok)
    except AssertionError:
        have = {k: route_summary(v) for k, v in bgp_routes(lab, node).items()}
        raise AssertionError(f"node {node}: routes did not reach {expected}; kernel has {have}")


# ----------------------------------------------------------------------------- captures
ENCAP = re.compile(r"IP (\d+\.\d+\.\d+\.\d+) > (\d+\.\d+\.\d+\.\d+): IP (\S+) > (\S+): ICMP")
PLAIN = re.compile(r"IP (\d+\.\d+\.\d+\.\d+) > (\d+\.\d+\.\d+\.\d+): ICMP")
# tcpdump prints a VXLAN packet as the outer UDP line, then the inner packet on the next line
VXLAN = re.compile(r"IP (\d+\.\d+\.\d+\.\d+)\.\d+ > (\d+\.\d+\.\d+\.\d+)\.4789: VXLAN.*vni (\d+)")


@dataclass(frozen=True)
class Packet:
    outer_src: str | None      # set for encapsulated packets
    outer_dst: str | None
    src: str
    dst: str
    encap: str | None = None   # "ipip", "vxlan" or None (plain)
    vni: int | None = None     # VXLAN network identifier


def parse_tcpdump(text: str) -> list[Packet]:
    out = []
    outer: re.Match | None = None     # a VXLAN line whose inner packet comes next
    for line in text.splitlines():
        if m := VXLAN.search(line):
            outer = m
            continue
        if m := ENCAP.search(line):
            out.append(Packet(m[1], m[2], m[3], m[4], "ipip"))
        elif (m := PLAIN.search(line)) and outer is not None:
            out.append(Packet(outer[1], outer[2], m[1], m[2], "vxlan", int(outer[3])))
        elif m := PLAIN.search(line):
            out.append(Packet(None, None, m[1], m[2]))
        outer = None
    return out



def capture_icmp(lab: Lab, node: str, iface: str, src: Pod, dst: Pod, count: int = 4,
                 timeout: float = 60.0) -> list[Packet]:
    """Capture ``count`` ICMP packets of a ping ``src`` -> ``dst`` on ``node``'s ``iface``,
    whether IPIP-encapsulated (IP protocol 4), VXLAN-encapsulated (UDP 4789) or plain. tcpdump
    runs inside the lab node."""
    log = lab.names.log_dir(node) / f"tcpdump-{secrets.token_hex(3)}.log"
    # inner ICMP: IPIP's inner header follows the outer one; VXLAN's follows UDP (8), VXLAN (8)
    # and the inner Ethernet header (14)
    bpf = (f"(ip proto 4 and ip[20+9] == 1) or (udp port 4789 and udp[8+8+14+9] == 1) "
           f"or (icmp and host {dst.ip})")
    handle = lab.spawn(node, ["tcpdump", "-l", "-nn", "-i", iface, "-c", str(count), bpf],
                       log=log, name="tcpdump")
    try:
        wait_for(f"tcpdump listening on {node}:{iface}",
                 lambda: "listening on" in log.read_text(errors="replace")
                 if log.exists() else False, timeout=timeout)
        deadline = time.monotonic() + timeout
        while lab.alive(handle) and time.monotonic() < deadline:
            pod_exec(lab, src, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", dst.ip])
        text = log.read_text(errors="replace")
    finally:
        lab.kill(handle, grace=2)
        with contextlib.suppress(OSError):
            log.unlink()
    packets = [p for p in parse_tcpdump(text) if {p.src, p.dst} == {src.ip, dst.ip}]
    assert packets, f"{node}:{iface}: no ICMP packet of {src.ip} -> {dst.ip} captured:\n{text}"
    return packets


# ----------------------------------------------------------------------------- daemons' figures
def daemon_metric(lab, node: str, daemon: str, name: str) -> float:
    """The sum of every sample of metric ``name`` on ``daemon``'s /metrics, read from this host
    at ``node``'s management address (the scenario's values listen on every address)."""
    url = f"http://{lab.nodes[node].mgmt_ipv4}:{HEALTH_PORTS[daemon]}/metrics"
    with urllib.request.urlopen(url, timeout=20) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"))


def calyx_routes(lab, node: str) -> list[dict]:
    """felix's (proto 80) and bgpd's (proto bgp) routes in ``node``'s kernel."""
    return routes(lab, node, "proto", "80") + routes(lab, node, "proto", "bgp")


def relist_counts(lab, nodes) -> dict[tuple[str, str], float]:
    """How many times each daemon of ``nodes`` has listed the API again since it started."""
    return {(n, d): daemon_metric(lab, n, d, "calyx_datastore_relists_total") for n in nodes for d in HEALTH_PORTS}


def wait_relisted(lab, before: dict[tuple[str, str], float], why: str) -> None:
    """Until every daemon counted in ``before`` has relisted once more."""
    for (node, daemon), count in before.items():
        wait_for(f"node {node}: {daemon} relisting {why}",
                 lambda n=node, d=daemon, c=count: daemon_metric(lab, n, d, "calyx_datastore_relists_total") > c)
