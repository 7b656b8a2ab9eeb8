"""How ``calyxctl trace`` shows a :class:`~calyxctl.trace.analysis.Trace`: a readable hop list,
or JSON (``-o json``) with the same content.

Pure code.
"""
from __future__ import annotations

import dataclasses
import json
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from calyxctl.trace.analysis import Trace
from calyxctl.trace.facts import PodEnd

MARKS = {True: "ok", False: "FAIL", None: ""}


def _end(end: Any) -> str:
    if isinstance(end, PodEnd):
        return f"{end} ({end.ip}, node {end.node})"
    return str(end)


def text(trace: Trace) -> str:
    via = f"{trace.service} ({trace.service.ip}) -> " if trace.service is not None else ""
    lines = [f"trace {_end(trace.src)} -> {via}{_end(trace.dst)}", ""]
    width = max((len(f.label) for hop in trace.hops for f in hop.facts), default=6)
    for hop in trace.hops:
        lines.append(f"{hop.number:>2}  {hop.title}")
        for fact in hop.facts:
            mark = MARKS[fact.ok]
            lines.append(f"      {fact.label:<{width}}  {fact.text}" + (f"   [{mark}]" if mark else ""))
    lines.append("")
    if trace.complete:
        lines.append("result: the path is complete")
        return "\n".join(lines) + "\n"
    broken = [p for p in trace.problems if p.severity == "broken"]
    lines.append(f"result: the path is BROKEN at hop {broken[0].hop} (node {broken[0].node})" if broken
                 else "result: the path works, with problems")
    for problem in trace.problems:
        lines.append(f"  [{problem.severity}] hop {problem.hop}, node {problem.node}: {problem.cause}: {problem.message}")
        lines.append(f"      fix: {problem.fix}")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (IPv4Address, IPv4Network)):
        return str(value)
    return value


def _end_json(end: Any) -> dict[str, Any]:
    if isinstance(end, PodEnd):
        return {"kind": "pod", "namespace": end.namespace, "name": end.name, "ip": str(end.ip), "node": end.node,
                "veth": end.veth}
    return {"kind": "address", "ip": str(end.ip)}


def as_json(trace: Trace) -> str:
    broken = [p for p in trace.problems if p.severity == "broken"]
    body = {"src": _end_json(trace.src), "dst": _end_json(trace.dst), "complete": trace.complete,
            "broken_at": {"hop": broken[0].hop, "node": broken[0].node} if broken else None,
            "service": _plain(trace.service), "hops": _plain(trace.hops), "problems": _plain(trace.problems)}
    return json.dumps(body, indent=2) + "\n"
