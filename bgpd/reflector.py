"""Route reflection (RFC 4456): which learned paths a route reflector re-advertises, to whom,
and with which attributes.

Pure code. Rules:
* Only a node with a cluster ID reflects; only iBGP-learned paths are reflected, only to iBGP
  peers, never back to the peer the path came from (nor to the node that originated it).
* A path from a client goes to every other client and to every non-client; a path from a
  non-client goes to clients only.
* The reflected path keeps NEXT_HOP and its other attributes; ORIGINATOR_ID is set to the
  sender's router ID when absent; our cluster ID is prepended to CLUSTER_LIST.
"""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from bgpd.peers import LocalSpeaker, Peer
from bgpd.rib import Attributes, Path


def should_reflect(local: LocalSpeaker, sender: Peer, target: Peer) -> bool:
    if local.cluster_id is None:
        return False
    if sender.ebgp or target.ebgp or sender.address == target.address:
        return False
    if sender.rr_client:
        return True
    return target.rr_client


def reflected_attributes(local: LocalSpeaker, path: Path) -> Attributes:
    assert local.cluster_id is not None
    originator = path.attrs.originator_id if path.attrs.originator_id is not None else path.peer_router_id
    return replace(path.attrs, originator_id=originator,
                   cluster_list=(local.cluster_id,) + path.attrs.cluster_list)


def reflect(local: LocalSpeaker, path: Path, sender: Peer, target: Peer) -> Attributes | None:
    """The attributes to send ``path`` to ``target`` with, or None when it is not sent."""
    if not should_reflect(local, sender, target):
        return None
    attrs = reflected_attributes(local, path)
    originator: IPv4Address | None = attrs.originator_id
    if originator is not None and originator == target.address:
        return None
    return attrs
