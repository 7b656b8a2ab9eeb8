"""``calyxctl trace`` in the scenarios: the real console script run inside a node against the
lab's API (felix and bgpd answer on the nodes' addresses: the scenarios' chart values set
``metricsOnAllInterfaces``), and its hops compared with what each node's kernel matches
(``ip route get fibmatch``) for the same address.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import permutations
from pathlib import Path
from typing import Mapping

from calyxlab.traffic import POD_NAMESPACE, Pod
from e2e_support import wait_for

CALYXCTL = str(Path(sys.executable).parent / "calyxctl")
PARALLEL_TRACES = 4


def _run(lab, node: str | None, argv: list[str]) -> subprocess.CompletedProcess:
    env = {"KUBECONFIG": str(lab.kubeconfig)}
    if node is None:
        return subprocess.run(argv + lab.calyxctl_reach(), env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=180)
    return lab.exec(node, argv, env=env, timeout=180)


def trace(lab, src: str, dst: str, *options: str, node: str | None = "node1",
          text: bool = False) -> tuple[int, dict, str]:
    """``calyxctl trace SRC DST OPTIONS -o json`` run on ``node``, or on the lab's host (None:
    in user-mode Linux a process starts ten times slower): (exit status, the JSON answer, and
    with ``text`` the readable form too, printed)."""
    res = _run(lab, node, [CALYXCTL, "trace", src, dst, *options, "-o", "json"])
    assert res.returncode in (0, 1), f"calyxctl trace exited {res.returncode}: {res.stderr}"
    readable = ""
    if text:
        readable = _run(lab, node, [CALYXCTL, "trace", src, dst, *options]).stdout
        print(f"{node or 'host'}$ calyxctl trace {src} {dst} {' '.join(options)}\n{readable}")
    return res.returncode, json.loads(res.stdout), readable


def fibmatch(lab, node: str, ip: str) -> str:
    """What the kernel of ``node`` matches for ``ip``, written as calyxctl's route facts are."""
    res = lab.exec(node, ["ip", "-N", "-j", "route", "get", "fibmatch", ip])
    if res.returncode != 0:         # a blackhole, or no route at all
        return f"no usable route: {res.stderr.strip()}"
    route = json.loads(res.stdout)[0]
    kind = route.get("type", "unicast")
    prefix = route["dst"] if "/" in route["dst"] else f"{route['dst']}/32"
    parts = [prefix if kind == "unicast" else f"{kind} {prefix}"]
    if route.get("gateway"):
        parts.append(f"via {route['gateway']}")
    if route.get("dev"):
        parts.append(f"dev {route['dev']}")
    if "onlink" in route.get("flags", []):
        parts.append("onlink")
    parts.append(f"proto {route.get('protocol', '3')}")     # ip -j leaves out proto boot (3)
    return " ".join(parts)


def route_text(hop: dict) -> str:
    """A hop's matched route in the same form (without the owner's name)."""
    route = hop["route"]
    parts = [route["dst"] if route["kind"] == "unicast" else f"{route['kind']} {route['dst']}"]
    if route["gateway"]:
        parts.append(f"via {route['gateway']}")
    if route["dev"]:
        parts.append(f"dev {route['dev']}")
    if route["onlink"]:
        parts.append("onlink")
    parts.append(f"proto {route['proto']}")
    return " ".join(parts)


def check_every_pair(lab, pods: Mapping[str, Pod], encapsulation: str | Mapping[tuple[str, str], str],
                     namespace: str = POD_NAMESPACE, node: str | None = "node1") -> None:
    """Every ordered pair of ``pods`` (node -> pod, one per node) traced, a few at a time: the
    path is complete, three hops (the source pod, the source node's route, the delivery), each
    hop's route the one the kernel of that hop's node matches, leaving with ``encapsulation``
    (or a mapping (source node, destination node) -> encapsulation); the first pair's trace is
    printed."""
    pairs = list(permutations(sorted(pods), 2))

    def check(a: str, b: str) -> None:
        src, dst = pods[a], pods[b]
        where = f"trace {a} -> {b}"
        answers: list[dict] = []

        def complete() -> bool:      # the nodes may still be converging
            answers.append(trace(lab, f"{namespace}/{src.name}", f"{namespace}/{dst.name}", node=node)[1])
            if not answers[-1]["complete"]:
                print(f"{where}: not complete yet: {answers[-1]['problems']}")
            return answers[-1]["complete"]
        wait_for(f"{where}: the path complete", complete, interval=2.0)
        hops = answers[-1]["hops"]
        assert [h["node"] for h in hops] == [a, a, b], f"{where}: {hops}"
        assert route_text(hops[0]) == fibmatch(lab, a, src.ip), where
        assert route_text(hops[1]) == fibmatch(lab, a, dst.ip), where
        assert route_text(hops[2]) == fibmatch(lab, b, dst.ip), where
        want = encapsulation if isinstance(encapsulation, str) else encapsulation[(a, b)]
        assert hops[1]["encapsulation"] == want, f"{where}: {hops[1]}"

    with ThreadPoolExecutor(max_workers=PARALLEL_TRACES) as pool:
        for future in [pool.submit(check, a, b) for a, b in pairs]:
            future.result()
    a, b = pairs[0]
    trace(lab, f"{namespace}/{pods[a].name}", f"{namespace}/{pods[b].name}", node=node, text=True)
