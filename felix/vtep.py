"""Publishing this node's VXLAN tunnel endpoint: felix keeps the ``calyx.dev/ipv4-vxlan-tunnel-addr``
and ``calyx.dev/vxlan-tunnel-mac`` annotations of its own Node equal to what the VXLAN manager
says (the address and MAC of ``vxlan.calico``; absent when VXLAN is not wanted).

The Node is patched only when the annotations it carries (as the datastore shows it) differ
from the wanted ones, and the same change is not sent again while the watch has not shown it
yet. The API is reached through the injected :class:`NodeAnnotator` (:class:`KubeNodeAnnotator`
in the daemon, an in-memory one in tests).
"""
from __future__ import annotations

from typing import Mapping, Protocol

import kubernetes.client

from calyx import model
from calyx.kube import client as kube_client
from calyx.kube import resources
from calyx.logs import get_logger
from felix.vxlancalc import published_vtep


class NodeAnnotator(Protocol):
    def annotate(self, node: str, annotations: Mapping[str, str | None]) -> None:
        """Set (value) or remove (None) annotations of a Node; raises on failure."""
        ...


class KubeNodeAnnotator:
    """A JSON merge patch of the Node's ``metadata.annotations`` (null removes a key)."""

    def __init__(self, api: kubernetes.client.ApiClient):
        self._api = api

    def annotate(self, node: str, annotations: Mapping[str, str | None]) -> None:
        resources.patch_object(self._api, resources.NODES, node, {"metadata": {"annotations": dict(annotations)}})


class VtepPublisher:
    """Owned by felix's main thread."""

    def __init__(self, annotator: NodeAnnotator, node_name: str):
        self._annotator = annotator
        self._node_name = node_name
        self._sent: tuple[tuple[tuple[str, str | None], ...], tuple[tuple[str, str | None], ...]] | None = None
        self._log = get_logger("felix.vtep")
        self.patches = 0
        self.retry_wanted = False      # the last patch failed: call sync again soon

    def sync(self, node: model.NodeInfo | None, want: Mapping[str, str | None] | None) -> bool:
        """Patch the Node when its VTEP annotations differ from ``want`` (None: leave them);
        returns True when a patch was sent."""
        self.retry_wanted = False
        if want is None or node is None:
            return False
        have = published_vtep(node)
        if dict(want) == have:
            self._sent = None
            return False
        attempt = (tuple(sorted(want.items())), tuple(sorted(have.items())))
        if attempt == self._sent:
            return False        # sent already; the watch has not shown it yet
        try:
            self._annotator.annotate(self._node_name, want)
        except Exception as exc:   # the API's answer or a connection error: tried again next pass
            self._log.warning("VXLAN tunnel endpoint not published", node=self._node_name,
                              error=kube_client.describe_error(exc, api_message=True))
            self.retry_wanted = True
            return False
        self._sent = attempt
        self.patches += 1
        removed = all(value is None for value in want.values())
        self._log.info("VXLAN tunnel endpoint withdrawn" if removed else "VXLAN tunnel endpoint published",
                       node=self._node_name, **{key.rsplit("/", 1)[1]: value for key, value in want.items()})
        return True
