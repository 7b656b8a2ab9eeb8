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
from typing import Iterable, Mapping

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


_MARK = "@@fibmatch"           # opens each address's answer in fibmatches' output
_FAILED = "@@no-fibmatch"      # the kernel had no usable route for it


def fibmatch(lab, node: str, ip: str) -> str:
    """What the kernel of ``node`` matches for ``ip``, written as calyxctl's route facts are."""
    return fibmatches(lab, node, [ip])[ip]


def fibmatches(lab, node: str, ips: Iterable[str]) -> dict[str, str]:
    """:func:`fibmatch` for several addresses in one command on ``node`` (each command in a
    node costs a process start, ten times dearer in user-mode Linux)."""
    ips = sorted(set(ips))
    script = "".join(f"echo '{_MARK} {ip}'; ip -N -j route get fibmatch {ip} 2>&1 || echo '{_FAILED}'; "
                     for ip in ips)
    out = lab.exec(node, ["sh", "-c", script], check=True).stdout
    answers: dict[str, str] = {}
    for chunk in out.split(f"{_MARK} ")[1:]:
        ip, _, body = chunk.partition("\n")
        answers[ip.strip()] = _fib_text(body)
    missing = set(ips) - set(answers)
    assert not missing, f"node {node}: no answer for {sorted(missing)} in {out!r}"
    return answers


def _fib_text(body: str) -> str:
    if _FAILED in body:          # a blackhole, or no route at all
        return f"no usable route: {body.replace(_FAILED, '').strip()}"
    route = json.loads(body)[0]
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

    def complete(a: str, b: str) -> list[dict]:
        src, dst = pods[a], pods[b]
        answers: list[dict] = []

        def done() -> bool:      # the nodes may still be converging
            answers.append(trace(lab, f"{namespace}/{src.name}", f"{namespace}/{dst.name}", node=node)[1])
            if not answers[-1]["complete"]:
                print(f"trace {a} -> {b}: not complete yet: {answers[-1]['problems']}")
            return answers[-1]["complete"]
        wait_for(f"trace {a} -> {b}: the path complete", done, interval=2.0)
        return answers[-1]["hops"]

    with ThreadPoolExecutor(max_workers=PARALLEL_TRACES) as pool:
        hops_of = dict(zip(pairs, pool.map(lambda pair: complete(*pair), pairs)))
        addresses = [p.ip for p in pods.values()]
        kernel = dict(zip(sorted(pods), pool.map(lambda n: fibmatches(lab, n, addresses), sorted(pods))))
    for (a, b), hops in hops_of.items():
        where, src, dst = f"trace {a} -> {b}", pods[a], pods[b]
        assert [h["node"] for h in hops] == [a, a, b], f"{where}: {hops}"
        assert route_text(hops[0]) == kernel[a][src.ip], where
        assert route_text(hops[1]) == kernel[a][dst.ip], where
        assert route_text(hops[2]) == kernel[b][dst.ip], where
        want = encapsulation if isinstance(encapsulation, str) else encapsulation[(a, b)]
        assert hops[1]["encapsulation"] == want, f"{where}: {hops[1]}"
    a, b = pairs[0]
    trace(lab, f"{namespace}/{pods[a].name}", f"{namespace}/{pods[b].name}", node=node, text=True)
