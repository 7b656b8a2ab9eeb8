"""felix and the IPIP device inside user-mode Linux, whose kernel has ipip: tunl0 is adopted,
addressed, sized and brought up while a pool wants IPIP, keeps decapsulating for the teardown
grace once none does (also across a felix restart), and is then stripped and downed."""
from __future__ import annotations

import json
from pathlib import Path

import kubernetes.client
import pytest

from calyx.kube import client as kube_client
from felixtest_support import wait_for

pytestmark = [pytest.mark.uml, pytest.mark.lab]

TOPOLOGY = Path(__file__).resolve().parents[2] / "containerlab" / "two-nodes.clab.yml"
GRACE = 15     # felix's ipip_teardown_grace here: covers a felix restart in UML, keeps the test short


def tunl0(lab, node: str) -> dict:
    return json.loads(lab.exec(node, ["ip", "-j", "-d", "addr", "show", "tunl0"], check=True).stdout)[0]


POOL = "default-ipv4-ippool"     # the chart's pool (two-nodes has no cluster.yaml of its own)


def put_pool(custom: kubernetes.client.CustomObjectsApi, mode: str) -> None:
    body = {"apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": POOL},
            "spec": {"cidr": "10.244.0.0/16", "ipipMode": mode}}
    try:
        current = custom.get_cluster_custom_object("calyx.dev", "v1", "ippools", POOL)
    except kubernetes.client.ApiException as exc:
        assert exc.status == 404
        custom.create_cluster_custom_object("calyx.dev", "v1", "ippools", body)
        return
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    custom.replace_cluster_custom_object("calyx.dev", "v1", "ippools", POOL, body)


def peer_sends_ipip(lab) -> None:
    """node2 (no felix) routes node1's pod CIDR into its own tunl0, as a peer's bgpd in IPIP
    does; node1 answers over the plain underlay."""
    for argv in (["ip", "addr", "add", "10.244.2.0/32", "dev", "tunl0"], ["ip", "link", "set", "tunl0", "up"],
                 ["ip", "route", "add", "10.244.1.0/24", "via", "10.0.0.1", "dev", "tunl0", "onlink",
                  "src", "10.244.2.0"],
                 ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth1.rp_filter=0"]):
        lab.exec("node2", argv, check=True)
    lab.exec("node1", ["ip", "route", "add", "10.244.2.0/24", "via", "10.0.0.2", "dev", "eth1"], check=True)


def decapsulated(lab) -> bool:
    """node2's IPIP-encapsulated ping to node1's tunnel address is answered."""
    return lab.exec("node2", ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.1.0"]).returncode == 0


def deferrals(lab) -> int:
    return lab.daemon_log("node1", "felix").count("tunnel teardown deferred")


def test_tunl0_lifecycle_follows_the_pools(lab_factory) -> None:
    lab = lab_factory(TOPOLOGY, kernel="uml", daemons=())
    api = kube_client.load(str(lab.kubeconfig))
    try:
        core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
        core.patch_node("node1", {"spec": {"podCIDRs": ["10.244.1.0/24"]}})
        put_pool(custom, "Always")
        assert tunl0(lab, "node1")["operstate"] == "DOWN"      # the ipip module made it; nobody set it up
        felix_env = {"FELIX_ROUTEREFRESHINTERVAL": "3600", "FELIX_IPIPTEARDOWNGRACE": str(GRACE)}
        lab.start_daemons("node1", ["felix"], env=felix_env)

        def tunnel_on() -> bool:
            link = tunl0(lab, "node1")
            return ("UP" in link["flags"] and link["mtu"] == 1480 and link["linkinfo"]["info_kind"] == "ipip"
                    and [(a["local"], a["prefixlen"]) for a in link["addr_info"]] == [("10.244.1.0", 32)])
        wait_for("tunl0 up with 10.244.1.0/32 and MTU 1480", tunnel_on, timeout=120,
                 detail=lambda: tunl0(lab, "node1"))
        mtu_file = str(Path(lab.node_env("node1")["CALYX_RUN_DIR"]) / "mtu")   # inside UML's /run

        def pod_mtu() -> str:
            return lab.exec("node1", ["cat", mtu_file], check=True).stdout
        assert pod_mtu() == "1480\n"
        routes = lab.exec("node1", ["ip", "route", "show", "proto", "80"], check=True).stdout
        assert "blackhole 10.244.1.0/24" in routes

        peer_sends_ipip(lab)
        assert decapsulated(lab), "node2's IPIP to node1's tunnel address gets no answer in Always"

        # A peer that has not switched yet still sends IPIP: node1 keeps decapsulating.
        put_pool(custom, "Never")
        wait_for("felix deferring the teardown", lambda: deferrals(lab) == 1, timeout=60)
        assert tunnel_on() and decapsulated(lab), "tunl0 stopped decapsulating within the grace"
        # A felix restarted within the grace starts it again instead of tearing down.
        lab.stop_daemons("node1", ["felix"])
        assert tunnel_on(), "felix's stop changed tunl0"
        lab.start_daemons("node1", ["felix"], env=felix_env)
        wait_for("the restarted felix deferring the teardown", lambda: deferrals(lab) == 2, timeout=120)
        assert tunnel_on() and decapsulated(lab), "the restarted felix tore tunl0 down within the grace"

        def tunnel_off() -> bool:
            link = tunl0(lab, "node1")
            return "UP" not in link["flags"] and link["addr_info"] == []
        wait_for("tunl0 down without address once the grace is over", tunnel_off, timeout=GRACE + 60,
                 detail=lambda: tunl0(lab, "node1"))
        assert not decapsulated(lab), "node1 still answers IPIP with tunl0 down: the check proves nothing"
        wait_for("pod MTU back to the underlay's", lambda: pod_mtu() == "1500\n", timeout=90)

        put_pool(custom, "CrossSubnet")
        wait_for("tunl0 up again", tunnel_on, timeout=60, detail=lambda: tunl0(lab, "node1"))
        log = lab.daemon_log("node1", "felix")
        assert "IPIP unavailable" not in log
        assert "tunnel address added" in log and "tunnel down" in log
    finally:
        api.close()
