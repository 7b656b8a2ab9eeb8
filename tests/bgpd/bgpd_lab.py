"""Test support for lab tests that run the real ``bgpd`` daemon in lab nodes: deploying a lab of
``tests/bgpd/labs/`` once per module, the ``bgpd`` command line inside a node, its health
endpoints, kernel routes, changes to the cluster through the lab's API, and a netlink route
monitor (``ip monitor route``) recording every route event in a node.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from calyxlab import manifests
from calyxlab.lab import Lab
from calyxlab import pytest_plugin

LABS = Path(__file__).parent / "labs"
BGPD = str(Path(sys.executable).with_name("bgpd"))
PYTHON = sys.executable
TIMEOUT = 120.0      # generous: UML is ~10x slower than the host for syscalls


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.5) -> Any:
    return pytest_plugin.wait_for(what, predicate, timeout, interval)


@contextlib.contextmanager
def module_lab(request, unique_lab_name: Callable[[str], str], lab_dir: str, kernel: str,
               daemons: tuple[str, ...] = ("bgpd",)) -> Iterator[Lab]:
    """Deploy ``labs/<lab_dir>/<lab_dir>.clab.yml`` for a test module; destroy it afterwards
    (logs are kept, and their path printed, when a test of the module failed)."""
    with pytest_plugin.module_lab(request, unique_lab_name(f"b{lab_dir}"),
                                  LABS / lab_dir / f"{lab_dir}.clab.yml", kernel=kernel,
                                  daemons=daemons) as lab:
        yield lab


def bgpd_cli(lab: Lab, node: str, *args: str):
    """``bgpd ARGS`` inside ``node`` with the node's environment (its control socket)."""
    return lab.exec(node, [BGPD, *args], env=lab.node_env(node), timeout=60)


def status(lab: Lab, node: str) -> dict:
    res = bgpd_cli(lab, node, "status", "-o", "json")
    assert res.returncode == 0, f"node {node}: bgpd status exited {res.returncode}: {res.stderr}"
    return json.loads(res.stdout)


def status_if_running(lab: Lab, node: str) -> dict | None:
    """The status, or None while no bgpd answers (exit 3: starting or stopped)."""
    res = bgpd_cli(lab, node, "status", "-o", "json")
    if res.returncode == 3:
        return None
    assert res.returncode == 0, f"node {node}: bgpd status exited {res.returncode}: {res.stderr}"
    return json.loads(res.stdout)


def routes(lab: Lab, node: str) -> dict:
    res = bgpd_cli(lab, node, "routes", "-o", "json")
    assert res.returncode == 0, f"node {node}: bgpd routes exited {res.returncode}: {res.stderr}"
    return json.loads(res.stdout)


def peers(st: dict) -> dict[str, dict]:
    return {p["peer_address"]: p for p in st["peers"]}


def sessions(st: dict) -> dict[str, tuple[str, str]]:
    """peer address -> (peer type, state)."""
    return {a: (p["peer_type"], p["state"]) for a, p in peers(st).items()}


def mesh_of(nodes: dict[str, str], node: str) -> dict[str, str]:
    """The sessions ``node`` has in a full mesh of ``nodes`` (name -> address)."""
    return {a: "node-to-node mesh" for n, a in nodes.items() if n != node}


def wait_sessions(lab: Lab, node: str, expected: dict[str, str], timeout: float = TIMEOUT) -> dict:
    """Until ``node`` has exactly the ``expected`` peers (address -> peer type), Established."""
    want = {a: (t, "Established") for a, t in expected.items()}
    return wait_for(f"node {node}: sessions {want}",
                    lambda: (s := status_if_running(lab, node)) and sessions(s) == want and s, timeout=timeout)


def http_get(lab: Lab, node: str, port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH inside ``node`` (where the daemon's health server listens)."""
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=10)\n"
            "    print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code); print(e.read().decode())\n")
    res = lab.exec(node, [PYTHON, "-c", code], timeout=60, check=True)
    first, _, body = res.stdout.partition("\n")
    return int(first), body


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of ``name{labels}`` in a Prometheus exposition (None when absent)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return None


def kernel_routes(lab: Lab, node: str, *selector: str) -> dict[str, dict]:
    """Kernel routes by destination (``ip -j route show SELECTOR``)."""
    res = lab.exec(node, ["ip", "-j", "-4", "route", "show", *selector], check=True)
    return {r["dst"]: r for r in json.loads(res.stdout or "[]")}


def bgp_routes(lab: Lab, node: str) -> dict[str, str]:
    """Routes of proto bgp (186) as 'via NH dev DEV [onlink]', by destination."""
    out = {}
    for dst, r in kernel_routes(lab, node, "proto", "bgp").items():
        text = f"via {r.get('gateway')} dev {r.get('dev')}"
        out[dst] = text + (" onlink" if "onlink" in r.get("flags", []) else "")
    return out


def apply(lab: Lab, *docs: dict) -> list[str]:
    """Create or merge objects in the lab's API, as ``kubectl apply`` would."""
    return manifests.apply(str(lab.kubeconfig), docs)


def bgp_peer(name: str, **spec: Any) -> dict:
    return {"apiVersion": "calyx.dev/v1", "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}


