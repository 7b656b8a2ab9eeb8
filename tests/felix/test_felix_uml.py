"""felix and the IPIP device inside user-mode Linux, whose kernel has ipip: tunl0 is adopted,
addressed, sized and brought up while a pool wants IPIP, and stripped and downed when none does."""
from __future__ import annotations

import json
from pathlib import Path

import kubernetes.client
import pytest

from calyx.kube import client as kube_client
from felixtest_support import wait_for

pytestmark = [pytest.mark.uml, pytest.mark.lab]

TOPOLOGY = Path(__file__).resolve().parents[2] / "containerlab" / "two-nodes.clab.yml"


def tunl0(lab, node: str) -> dict:
    return json.loads(lab.exec(node, ["ip", "-j", "-d", "addr", "show", "tunl0"], check=True).stdout)[0]


def put_pool(custom: kubernetes.client.CustomObjectsApi, mode: str) -> None:
    body = {"apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": "default"},
            "spec": {"cidr": "10.244.0.0/16", "ipipMode": mode}}
    try:
        current = custom.get_cluster_custom_object("calyx.dev", "v1", "ippools", "default")
    except kubernetes.client.ApiException as exc:
        assert exc.status == 404
        custom.create_cluster_custom_object("calyx.dev", "v1", "ippools", body)
        return
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    custom.replace_cluster_custom_object("calyx.dev", "v1", "ippools", "default", body)


def test_tunl0_lifecycle_follows_the_pools(lab_factory) -> None:
    lab = lab_factory(TOPOLOGY, kernel="uml", daemons=())
    api = kube_client.load(str(lab.kubeconfig))
    try:
        core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
        core.patch_node("node1", {"spec": {"podCIDRs": ["10.244.1.0/24"]}})
        put_pool(custom, "Always")
        assert tunl0(lab, "node1")["operstate"] == "DOWN"      # the ipip module made it; nobody set it up
        lab.start_daemons("node1", ["felix"], env={"FELIX_ROUTEREFRESHINTERVAL": "3600"})

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

        put_pool(custom, "Never")

        def tunnel_off() -> bool:
            link = tunl0(lab, "node1")
            return "UP" not in link["flags"] and link["addr_info"] == []
        wait_for("tunl0 down without address", tunnel_off, timeout=60, detail=lambda: tunl0(lab, "node1"))
        wait_for("pod MTU back to the underlay's", lambda: pod_mtu() == "1500\n", timeout=30)

        put_pool(custom, "CrossSubnet")
        wait_for("tunl0 up again", tunnel_on, timeout=60, detail=lambda: tunl0(lab, "node1"))
        log = lab.daemon_log("node1", "felix")
        assert "IPIP unavailable" not in log
        assert "tunnel address added" in log and "tunnel down" in log
    finally:
        api.close()
