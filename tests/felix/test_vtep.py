"""felix.vtep: the node's VTEP annotations are patched only when they differ, not sent twice
while the watch lags, sent again when someone else changes them, and retried after a failure."""
from __future__ import annotations

from ipaddress import IPv4Address
from typing import Mapping

from calyx import model
from felix.vtep import VtepPublisher
from felix.vxlancalc import vtep_annotations

WANT = vtep_annotations(IPv4Address("10.244.1.0"), "66:00:00:00:00:01")
GONE = vtep_annotations(None, None)
BARE = model.NodeInfo("node-a")
PUBLISHED = model.NodeInfo("node-a", vxlan_tunnel_address=IPv4Address("10.244.1.0"),
                           vxlan_tunnel_mac="66:00:00:00:00:01")


class Annotator:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str | None]]] = []
        self.fail = False

    def annotate(self, node: str, annotations: Mapping[str, str | None]) -> None:
        if self.fail:
            raise ConnectionRefusedError("API unreachable")
        self.calls.append((node, dict(annotations)))


def test_patches_only_differences_and_once_per_change() -> None:
    api = Annotator()
    vtep = VtepPublisher(api, "node-a")
    assert not vtep.sync(BARE, GONE)                        # nothing to withdraw: no call
    assert vtep.sync(BARE, WANT) and api.calls == [("node-a", WANT)]
    assert not vtep.sync(BARE, WANT)                        # the watch has not shown it yet
    assert not vtep.sync(PUBLISHED, WANT)                   # now it has
    assert not vtep.sync(PUBLISHED, None)                   # None: leave as is (teardown grace)
    assert vtep.sync(PUBLISHED, GONE) and api.calls[-1] == ("node-a", GONE)
    assert len(api.calls) == 2


def test_a_change_made_by_someone_else_is_corrected() -> None:
    api = Annotator()
    vtep = VtepPublisher(api, "node-a")
    vtep.sync(BARE, WANT)
    tampered = model.NodeInfo("node-a", vxlan_tunnel_address=IPv4Address("10.244.1.9"),
                              vxlan_tunnel_mac="66:00:00:00:00:01")
    assert vtep.sync(tampered, WANT) and len(api.calls) == 2


def test_a_failed_patch_is_retried() -> None:
    api = Annotator()
    api.fail = True
    vtep = VtepPublisher(api, "node-a")
    assert not vtep.sync(BARE, WANT) and vtep.retry_wanted
    api.fail = False
    assert vtep.sync(BARE, WANT) and not vtep.retry_wanted and api.calls == [("node-a", WANT)]
