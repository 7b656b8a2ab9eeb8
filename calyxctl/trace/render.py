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
    if trace.probe is not None:
        lines += ["", *_probe_lines(trace)]
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


def _probe_lines(trace: Trace) -> list[str]:
    probe = trace.probe
    assert probe is not None
    result = probe.result
    lines = [f"probe  echo request from {trace.src} to {result.dst} (id {result.probe_id})"]
    if not probe.sent:
        return lines + [f"      not sent: {result.send.error}"]
    for s in probe.sightings:
        outer = f"  {s.encap.upper()} {s.outer_src} -> {s.outer_dst}" if s.encap != "none" else ""
        lines.append(f"      {s.node:<10} {s.device:<16} {s.direction:<3}  {s.kind} {s.src} -> {s.dst}{outer}")
    for watch in result.watches.values():
        if watch.error is not None:
            lines.append(f"      {watch.node:<10} not watched: {watch.error}")
    lines.append(f"      answered: the reply reached {trace.src}" if probe.answered else "      NOT answered")
    return lines


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


def _probe_json(trace: Trace) -> dict[str, Any] | None:
    probe = trace.probe
    if probe is None:
        return None
    return {"id": probe.result.probe_id, "dst": str(probe.result.dst), "sent": probe.sent,
            "send_error": probe.result.send.error, "answered": probe.answered,
            "sightings": _plain(probe.sightings),
            "last_request": _plain(probe.last_request), "last_reply": _plain(probe.last_reply),
            "unwatched": {w.node: w.error for w in probe.result.watches.values() if w.error is not None}}


def as_json(trace: Trace) -> str:
    broken = [p for p in trace.problems if p.severity == "broken"]
    body = {"src": _end_json(trace.src), "dst": _end_json(trace.dst), "complete": trace.complete,
            "broken_at": {"hop": broken[0].hop, "node": broken[0].node} if broken else None,
            "service": _plain(trace.service), "hops": _plain(trace.hops), "problems": _plain(trace.problems),
            "probe": _probe_json(trace)}
    return json.dumps(body, indent=2) + "\n"
