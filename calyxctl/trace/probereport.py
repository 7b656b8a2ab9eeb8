"""What ``calyxctl trace --probe`` saw, in the order of the path: the echo request's sightings
node by node along the path, then the reply's back, whether the reply reached the source pod,
and where the request (or the reply) was seen last.

Pure code: a :class:`~calyxctl.trace.facts.ProbeResult` in, a :class:`ProbeReport` out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from calyxctl.trace.facts import ProbeResult, ProbeSighting

REQUEST, REPLY = "echo-request", "echo-reply"


@dataclass(frozen=True)
class ProbeReport:
    result: ProbeResult
    sightings: tuple[ProbeSighting, ...]          # requests along the path, then replies back
    answered: bool                                # a reply went into the source pod's veth
    last_request: ProbeSighting | None            # where the request was seen last on the way
    last_reply: ProbeSighting | None              # where the reply was seen last on the way back

    @property
    def sent(self) -> bool:
        return self.result.send.sent


def report(result: ProbeResult, path: Sequence[str], src_veth: str) -> ProbeReport:
    """``result`` read along ``path`` (the nodes in the order the packet crosses them, the
    source node first); ``src_veth`` the source pod's host-side veth."""
    order = list(dict.fromkeys([*path, *result.watches]))

    def of(kind: str, nodes: Sequence[str]) -> list[ProbeSighting]:
        return [s for node in nodes for s in result.sightings(node) if s.kind == kind]
    requests = of(REQUEST, order)
    replies = of(REPLY, list(reversed(order)))
    answered = any(s.node == order[0] and s.device == src_veth and s.direction == "out" for s in replies)
    return ProbeReport(result, tuple(requests + replies), answered,
                       requests[-1] if requests else None, replies[-1] if replies else None)


def describe(sighting: ProbeSighting) -> str:
    """Where a sighting was, in words: ``node1 eth1 (out, VXLAN 10.0.1.11 -> 10.0.2.13)``."""
    outer = f", {sighting.encap.upper()} {sighting.outer_src} -> {sighting.outer_dst}" \
        if sighting.encap != "none" else ""
    return f"{sighting.node} {sighting.device} ({sighting.direction}{outer})"
