"""felix as a process with the real API and kernel, enforcing NetworkPolicy: a policy selecting
a local pod makes it program ``ip calyx-policy`` (the pod's chain, the peer set holding the
selected pods' addresses); a peer pod losing its label is one element removed and no chain
rewritten; a restarted felix adopts the table with no write; deleting the policy removes the
table. Real traffic through such a table is tests/felix/test_policy_nft_kernel.py."""
from __future__ import annotations

import json

from felix.dataplane import policynft
from felix.dataplane.nfttable import LibNftables
from felixtest_support import Bed, wait_for

POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "web", "namespace": "default"},
          "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                "ports": [{"port": 80}]}]}}


def policy_writes(bed: Bed) -> float:
    return bed.metric("felix_netlink_writes_total", labels='object="policy"')


def table(nft: LibNftables) -> policynft.ObservedTable | None:
    listing = nft.list_table(policynft.FAMILY, policynft.TABLE)
    return None if listing is None else policynft.parse_table(listing)


def networking(bed: Bed):
    import kubernetes.client
    return kubernetes.client.NetworkingV1Api(bed.api)


def label(bed: Bed, pod: str, labels: dict) -> None:
    bed.core.patch_namespaced_pod(pod, "default", {"metadata": {"labels": labels}})


def test_felix_programs_updates_adopts_and_removes_the_policy_table(bed: Bed) -> None:
    nft = LibNftables(bed.netns)
    bed.create_node()
    bed.put_pool()
    bed.create_pod("web", "10.244.0.10")
    bed.core.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"app": "web"}}})
    bed.create_pod("client", "10.244.0.11")
    label(bed, "client", {"role": "client"})
    web_device = bed.add_pod_link("web")
    bed.add_pod_link("client")

    first = bed.start_felix()
    bed.wait_ready(first)
    assert table(nft) is None and bed.metric("felix_policy_available") == 1   # nothing selected yet

    networking(bed).create_namespaced_network_policy("default", POLICY)
    chain = policynft.chain_name("Ingress", web_device)

    def peers() -> set[str] | None:
        t = table(nft)
        if t is None or chain not in t.chains or t.maps.get(policynft.TO_ENDPOINT, {}).get(web_device) != chain:
            return None
        return {e for name, (_, elements) in t.sets.items() if name.startswith("pods-") for e in elements}

    wait_for("web's chain with the client in its peer set", lambda: peers() == {"10.244.0.11"},
             detail=lambda: table(nft))
    assert policy_writes(bed) == 1
    digests = dict(table(nft).chains)
    status, body = bed.http("/v1/policy?pod=default/web&peer=10.244.0.11&port=80")
    view = json.loads(body)
    assert status == 200 and view["selected_by"] == ["default/web"] and view["egress"].startswith("not isolated")
    assert view["ingress"] == ["from pods role=client in namespace default, TCP 80"]
    assert view["verdict"]["allowed"] is True
    status, body = bed.http("/v1/policy?pod=default/web&peer=10.244.0.11&port=81")
    assert json.loads(body)["verdict"]["allowed"] is False

    label(bed, "client", {"role": "other"})
    wait_for("the client out of the peer set", lambda: peers() == set(), detail=lambda: table(nft))
    assert policy_writes(bed) == 2 and table(nft).chains == digests      # elements only
    assert first.stop() == 0 and peers() == set()                      # stopping leaves it as it is

    second = bed.start_felix()
    bed.wait_ready(second)
    assert policy_writes(bed) == 0                                     # adopted: nothing written
    networking(bed).delete_namespaced_network_policy("web", "default")
    wait_for("ip calyx-policy removed", lambda: table(nft) is None)
    assert "policy table remove" in second.log() and "NetworkPolicy unavailable" not in second.log()
