"""felix as a real process with a VXLAN CrossSubnet pool, fed by a real kube-apiserver: it creates
vxlan.calico, publishes its VTEP on its own Node, routes a node of another subnet through the
tunnel and a node of its own subnet directly, adopts everything on restart with no write, and
removes device and annotations after the grace when the pool stops wanting VXLAN."""
from __future__ import annotations

import json

import pytest

from felixtest_support import NODE, Bed, wait_for
from scratch import ip

pytestmark = pytest.mark.lab

DEV = "vxlan.calico"
FAR = ("node-far", "192.168.250.2", "10.244.2.0/24", "10.244.2.0", "66:00:00:00:02:02")


def remote_node(bed: Bed, name: str, address: str, pod_cidr: str, vtep: str | None, mac: str | None) -> None:
    annotations = {"calyx.dev/ipv4-vxlan-tunnel-addr": vtep, "calyx.dev/vxlan-tunnel-mac": mac} if vtep else {}
    bed.core.create_node({"metadata": {"name": name, "annotations": annotations}, "spec": {"podCIDRs": [pod_cidr]}})
    bed.core.patch_node_status(name, {"status": {"addresses": [{"type": "InternalIP", "address": address}]}})


def own_annotations(bed: Bed) -> dict[str, str]:
    annotations = bed.core.read_node(NODE).metadata.annotations or {}
    return {k: v for k, v in annotations.items() if "vxlan" in k}


def device_mac(bed: Bed) -> str | None:
    out = ip("-j", "link", "show", DEV, netns=bed.netns, check=False)
    return json.loads(out.stdout)[0]["address"] if out.returncode == 0 else None


def test_vxlan_cross_subnet_from_the_api_alone(bed: Bed) -> None:
    near_ip = bed.node_ip.rsplit(".", 1)[0] + ".3"         # in this node's subnet
    bed.create_node()
    remote_node(bed, *FAR)
    remote_node(bed, "node-near", near_ip, "10.244.3.0/24", None, None)   # no VTEP needed within the subnet
    bed.put_pool(ipip_mode="Never", vxlanMode="CrossSubnet")
    felix = bed.start_felix(FELIX_IPIPTEARDOWNGRACE="2")
    bed.wait_ready(felix)

    far_route = "10.244.2.0/24 via 10.244.2.0 dev vxlan.calico onlink"
    near_route = f"10.244.3.0/24 via {near_ip} dev eth0"
    wait_for("VXLAN and direct routes", lambda: {far_route, near_route} <= set(bed.felix_routes()),
             detail=bed.felix_routes)
    mac = wait_for("the VTEP published", lambda: own_annotations(bed).get("calyx.dev/vxlan-tunnel-mac"),
                   detail=lambda: own_annotations(bed))
    assert own_annotations(bed) == {"calyx.dev/ipv4-vxlan-tunnel-addr": "10.244.1.0",
                                    "calyx.dev/vxlan-tunnel-mac": device_mac(bed)} and mac == device_mac(bed)
    (details,) = json.loads(ip("-d", "-j", "link", "show", DEV, netns=bed.netns).stdout)
    data = details["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["local"], data["learning"], details["mtu"]) == (
        4096, 4789, bed.node_ip, False, 1400)                   # eth0 1450 - 50
    assert ip("-br", "addr", "show", DEV, netns=bed.netns).stdout.split()[2] == "10.244.1.0/32"
    assert ip("neigh", "show", "dev", DEV, netns=bed.netns).stdout.split() == [
        "10.244.2.0", "lladdr", FAR[4], "PERMANENT"]
    fdb = ip("netns", "exec", bed.netns, "bridge", "fdb", "show", "dev", DEV).stdout
    assert f"{FAR[4]} dst {FAR[1]} self permanent" in fdb
    assert (bed.run_dir / "mtu").read_text() == "1400\n"
    assert "no VXLAN route yet" not in felix.log()

    # restart: everything adopted, no write, the same MAC published
    assert felix.stop() == 0
    felix = bed.start_felix(FELIX_IPIPTEARDOWNGRACE="2")
    bed.wait_ready(felix)
    assert bed.metric("felix_netlink_writes_total") == 0
    assert device_mac(bed) == mac and own_annotations(bed)["calyx.dev/vxlan-tunnel-mac"] == mac
    assert "VXLAN tunnel endpoint published" not in felix.log()

    # the pool stops wanting VXLAN: routes go at once, device and annotations after the grace
    bed.put_pool(ipip_mode="Never", vxlanMode="Never")
    wait_for("VXLAN routes removed", lambda: far_route not in bed.felix_routes(), detail=bed.felix_routes)
    wait_for("device removed after the grace", lambda: device_mac(bed) is None, timeout=30)
    wait_for("annotations withdrawn", lambda: own_annotations(bed) == {}, timeout=30,
             detail=lambda: own_annotations(bed))
    assert "VXLAN teardown deferred" in felix.log()
    assert (bed.run_dir / "mtu").read_text() == "1450\n"
