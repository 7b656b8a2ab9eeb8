"""``python -m calyxlab.demo`` (``make demo``): a three-node Calyx cluster deployed, shown
routing pods over IPIP, switched live to plain BGP and then to VXLAN, the three modes summed
up side by side, and destroyed.

Steps: deploy ``containerlab/mesh3`` (kernel chosen automatically: user-mode Linux when this
kernel has no ipip; Calyx installed with ``helm`` and run by each node's kubelet), the calyx
pods (``kubectl get pods -n calyx-system -o wide``), one pod per node through the CNI plugin, ``bgpd status`` on every node,
the routes and ``tunl0`` on node1, the pod-to-pod ping matrix; then the IPPool's ``ipipMode``
is set to ``Never`` through the API while a pod pings another every 50 ms, the routes are shown
again and the matrix is run again; then the pool moves to ``vxlanMode: Always`` the same way
(felix takes every remote block over in place and programs ``vxlan.calico``, its neighbours and
FDB entries), and a table compares the three modes: node1's route to node2's block, and the
pings lost during each switch. Last, ``calyxctl trace`` walks the path from node1's pod to
node2's, hop by hop, from what each node's felix reads in its kernel. The lab is destroyed at
the end, also when a step fails, on Ctrl-C and on SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from calyxlab.cli import format_table
from calyxlab.lab import REPO_ROOT, Lab, leftovers, subnet_in_use
from calyxlab.subnets import claim_free_subnet, release_subnet
from calyxlab.tools import find_tool
from calyxlab.topology import load
from calyxlab.traffic import ContinuousPing, Pod, add_pod, format_matrix, ping_matrix

TOPOLOGY = REPO_ROOT / "containerlab" / "mesh3" / "mesh3.clab.yml"
NODES = ("node1", "node2", "node3")
POOL = "default-ipv4-ippool"
BGPD = str(Path(sys.executable).parent / "bgpd")
CALYXCTL = str(Path(sys.executable).parent / "calyxctl")
CONVERGE_TIMEOUT = 120.0


class DemoError(RuntimeError):
    """A demo step did not give the expected result."""


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def show(lab: Lab, node: str, argv: list[str]) -> str:
    print(f"$ calyx-lab exec --name {lab.name} --node {node} -- {' '.join(argv)}", flush=True)
    res = lab.exec(node, argv, env=lab.node_env(node), timeout=120)
    sys.stdout.write(res.stdout + res.stderr)
    sys.stdout.flush()
    if res.returncode != 0:
        raise DemoError(f"node {node}: {' '.join(argv)} exited {res.returncode}")
    return res.stdout


def wait_until(what: str, predicate, timeout: float = CONVERGE_TIMEOUT) -> float:
    """Poll ``predicate``; the seconds it took. Raises DemoError after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)
    return time.monotonic() - started


def sessions_established(lab: Lab, node: str) -> bool:
    res = lab.exec(node, [BGPD, "status", "-o", "json"], env=lab.node_env(node), timeout=60)
    if res.returncode != 0:
        return False
    peers = json.loads(res.stdout)["peers"]
    return len(peers) == len(NODES) - 1 and all(p["state"] == "Established" for p in peers)


def bgp_routes(lab: Lab, node: str) -> list[dict]:
    res = lab.exec(node, ["ip", "-j", "-4", "route", "show", "proto", "bgp"], timeout=60)
    return json.loads(res.stdout or "[]") if res.returncode == 0 else []


def routes_in_mode(lab: Lab, encapsulated: bool) -> bool:
    """Every node has a BGP route to each other node's block, through tunl0 or not."""
    for node in NODES:
        found = bgp_routes(lab, node)
        if len(found) != len(NODES) - 1 or any(
                (r.get("dev") == "tunl0") != encapsulated for r in found):
            return False
    return True


def vxlan_routes(lab: Lab, node: str) -> list[dict]:
    res = lab.exec(node, ["ip", "-j", "-4", "route", "show", "dev", "vxlan.calico"], timeout=60)
    found = json.loads(res.stdout or "[]") if res.returncode == 0 else []
    return [r for r in found if r.get("gateway")]


def routes_in_vxlan(lab: Lab) -> bool:
    """Every node routes each other node's block through vxlan.calico (felix's routes)."""
    return all(len(vxlan_routes(lab, node)) == len(NODES) - 1 and not bgp_routes(lab, node)
               for node in NODES)


def route_to(lab: Lab, node: str, block: str) -> str:
    """``node``'s route to ``block`` as ``ip route`` prints it."""
    return lab.exec(node, ["ip", "route", "show", block], timeout=60).stdout.strip()


def block_of(lab: Lab, node: str) -> str:
    res = lab.exec(node, ["ip", "-j", "-4", "route", "show", "type", "blackhole"], timeout=60)
    return json.loads(res.stdout or "[]")[0]["dst"]


def side_by_side(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Rows in aligned columns under their headers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(tuple("-" * w for w in widths))] + [line(r) for r in rows])


def show_matrix(lab: Lab, members: list[Pod], label: str) -> None:
    started = time.monotonic()
    result = ping_matrix(lab, members, timeout=CONVERGE_TIMEOUT)
    print(format_matrix(members, result))
    ok = sum(result.values())
    print(f"{label}: {ok}/{len(result)} pod pairs answer ({time.monotonic() - started:.1f} s)")
    if ok != len(result):
        raise DemoError(f"{label}: {len(result) - ok} pod pairs cannot reach each other")


def kubectl(lab: Lab, *args: str) -> str:
    proc = subprocess.run([find_tool("kubectl"), "--kubeconfig", str(lab.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def calyx_pods_ready(lab: Lab) -> bool:
    pods = json.loads(kubectl(lab, "get", "pods", "-n", "calyx-system", "-o", "json"))["items"]
    ready = {p["spec"]["nodeName"] for p in pods
             if any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions", []))}
    return ready >= set(NODES)


def set_pool_modes(lab: Lab, ipip: str, vxlan: str) -> None:
    from kubernetes import client as k8s
    from calyx.kube import client as kube_client
    k8s.CustomObjectsApi(kube_client.load(str(lab.kubeconfig))).patch_cluster_custom_object(
        "calyx.dev", "v1", "ippools", POOL, {"spec": {"ipipMode": ipip, "vxlanMode": vxlan}})


def switch_under_ping(lab: Lab, members: list[Pod], ipip: str, vxlan: str, arrived) -> tuple[float, int, int]:
    """Set the pool's modes while pod-node1 pings pod-node3 every 50 ms; (seconds until every
    node routes the new way, pings sent, pings lost)."""
    ping = ContinuousPing(lab, members[0], members[2]).start()
    try:
        set_pool_modes(lab, ipip, vxlan)
        took = wait_until(f"routes for ipipMode {ipip} / vxlanMode {vxlan} on every node", arrived)
        time.sleep(1.0)
    finally:
        sent, lost = ping.stop()
    return took, sent, lost


def run(lab: Lab) -> None:
    banner(f"calyx-lab inspect --name {lab.name}")
    print(format_table(lab.inspect()))

    banner("kubectl get pods -n calyx-system -o wide  (the chart's DaemonSet, run by each node's kubelet)")
    wait_until("the calyx pods Ready on every node", lambda: calyx_pods_ready(lab))
    print(kubectl(lab, "get", "pods", "-n", "calyx-system", "-o", "wide"), end="", flush=True)

    banner("one pod per node, created through the CNI plugin as kubelet would")
    with ThreadPoolExecutor(max_workers=len(NODES)) as pool:   # each node's kubelet at once
        members = list(pool.map(lambda node: add_pod(lab, node), NODES))
    for pod in members:
        print(f"pod default/{pod.name} on {pod.node}: {pod.ip}", flush=True)

    banner("bgpd status on every node (node-to-node mesh)")
    for node in NODES:
        wait_until(f"node {node}: {len(NODES) - 1} BGP sessions Established",
                   lambda n=node: sessions_established(lab, n))
        show(lab, node, [BGPD, "status"])

    banner("IPIP Always: node1 reaches the other blocks through tunl0")
    took = wait_until("IPIP routes on every node", lambda: routes_in_mode(lab, True))
    print(f"(routes in place on every node after {took:.1f} s)")
    show(lab, "node1", ["ip", "route"])
    show(lab, "node1", ["ip", "-d", "address", "show", "tunl0"])
    banner("pod-to-pod ping matrix, IPIP Always")
    show_matrix(lab, members, "IPIP Always")

    far_block = block_of(lab, "node2")
    summary = [("IPIP Always", route_to(lab, "node1", far_block), "(initial)")]

    banner("switching the IPPool to ipipMode: Never (plain BGP) while pod-node1 pings "
           "pod-node3 every 50 ms")
    print(f"(the IPPool is patched through the API, as `kubectl patch ippool {POOL} "
          "--type merge -p '{\"spec\":{\"ipipMode\":\"Never\"}}'` would)", flush=True)
    took, sent, lost = switch_under_ping(lab, members, "Never", "Never", lambda: routes_in_mode(lab, False))
    print(f"(every node routes without tunl0 after {took:.1f} s)")
    print(f"continuous ping during the switch: {sent} sent, {lost} lost")
    show(lab, "node1", ["ip", "route"])
    banner("pod-to-pod ping matrix, plain BGP (ipipMode Never)")
    show_matrix(lab, members, "ipipMode Never")
    summary.append(("plain BGP (Never)", route_to(lab, "node1", far_block), f"{lost} of {sent}"))

    banner("switching the IPPool to vxlanMode: Always while pod-node1 pings pod-node3 every 50 ms")
    took, sent, lost = switch_under_ping(lab, members, "Never", "Always", lambda: routes_in_vxlan(lab))
    print(f"(every node routes the other blocks through vxlan.calico after {took:.1f} s; felix "
          "replaced bgpd's routes in place)")
    print(f"continuous ping during the switch: {sent} sent, {lost} lost")
    show(lab, "node1", ["ip", "route"])
    show(lab, "node1", ["ip", "-d", "link", "show", "vxlan.calico"])
    show(lab, "node1", ["ip", "neigh", "show", "dev", "vxlan.calico"])
    show(lab, "node1", ["bridge", "fdb", "show", "dev", "vxlan.calico"])
    banner("pod-to-pod ping matrix, VXLAN Always")
    show_matrix(lab, members, "vxlanMode Always")
    summary.append(("VXLAN Always", route_to(lab, "node1", far_block), f"{lost} of {sent}"))

    banner(f"the three modes side by side: node1's route to node2's block {far_block}")
    print(side_by_side(("mode", "route on node1", "pings lost switching to it"), summary))

    banner(f"calyxctl trace: the path from {members[0].name} to {members[1].name}, hop by hop, as each node's "
           "felix reads its kernel")
    show_trace(lab, members[0], members[1])


def show_trace(lab: Lab, src: Pod, dst: Pod) -> None:
    """``calyxctl trace`` run on this host as on an operator's workstation: the lab's kubeconfig,
    each node's felix and bgpd at its management address."""
    argv = [CALYXCTL, "trace", f"default/{src.name}", f"default/{dst.name}"]
    print(f"$ KUBECONFIG={lab.kubeconfig} calyxctl trace default/{src.name} default/{dst.name} "
          f"--felix NODE=ADDRESS:9099 ... (each node's management address)", flush=True)
    res = subprocess.run(argv + lab.calyxctl_reach(), env={**os.environ, "KUBECONFIG": str(lab.kubeconfig)},
                         capture_output=True, text=True, timeout=180)
    sys.stdout.write(res.stdout + res.stderr)
    sys.stdout.flush()
    if res.returncode not in (0, 1) or "BROKEN" in res.stdout:
        raise DemoError(f"calyxctl trace exited {res.returncode}: the path is broken")
    if res.returncode == 1:       # degraded: the pods made under IPIP keep its MTU
        print("(the pods were made under IPIP, with its MTU; pods made now get VXLAN's, as the fix says)")


def _interrupt(signum: int, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so the lab is destroyed either way."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calyxlab.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", default="auto", choices=("host", "uml", "auto"))
    parser.add_argument("--mgmt-subnet", help="management subnet (default: the topology's, "
                        "or a free 172.31.X.0/24 when that one is in use here)")
    args = parser.parse_args(argv)
    topo = load(TOPOLOGY)
    claimed = None
    subnet = args.mgmt_subnet
    if subnet is None and subnet_in_use(topo.mgmt.subnet):
        claimed = claim_free_subnet()
        subnet = str(claimed)
        print(f"(mgmt subnet {topo.mgmt.subnet} is in use here; using {claimed})")
    name = f"demo-{secrets.token_hex(2)}"
    signal.signal(signal.SIGTERM, _interrupt)
    banner(f"calyx-lab deploy -t {TOPOLOGY.relative_to(REPO_ROOT)} --name {name}")
    status = 0
    try:
        with Lab.deploy(TOPOLOGY, name=name, kernel=args.kernel, printer=print,
                        mgmt_subnet=subnet) as lab:
            try:
                run(lab)
            except KeyboardInterrupt:
                print("\ndemo: interrupted; destroying the lab", file=sys.stderr)
                status = 130
            except Exception as exc:   # any failed step: say what, then destroy
                print(f"\ndemo: failed: {exc}\n(logs: {lab.names.state_dir}/logs)",
                      file=sys.stderr)
                status = 1
            banner(f"calyx-lab destroy --name {name}")
            lab.destroy(cleanup=status != 1)     # a failed step keeps its logs
    except KeyboardInterrupt:
        print("\ndemo: interrupted during deploy; what was built is removed", file=sys.stderr)
        status = 130
    except Exception as exc:
        print(f"demo: failed: {exc}", file=sys.stderr)
        status = 1
    finally:
        if claimed:
            release_subnet(claimed)
    left = leftovers(name)
    if left:
        print(f"demo: left behind: {', '.join(left)}", file=sys.stderr)
        return status or 1
    if status == 0:
        print("demo: done, nothing left behind")
    return status


if __name__ == "__main__":
    sys.exit(main())
