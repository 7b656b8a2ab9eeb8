"""felix as a real process in a scratch namespace, fed by a real kube-apiserver over HTTPS."""
from __future__ import annotations

import queue
import subprocess
import time

import pytest

from calyx.netlink import RouteMonitor
from felixtest_support import Bed, pod_line, wait_for
from scratch import ip

pytestmark = pytest.mark.lab


def test_pod_routes_follow_the_api_and_wait_for_their_link(bed: Bed) -> None:
    bed.create_node()
    bed.put_pool()
    bed.add_pod_link("web-1")
    bed.create_pod("web-1", "10.244.1.5")
    felix = bed.start_felix()
    bed.wait_ready(felix)
    wait_for("web-1 route and block blackhole", lambda: set(bed.felix_routes()) == {
        pod_line("web-1", "10.244.1.5"), "blackhole 10.244.1.0/24"}, detail=bed.felix_routes)
    assert bed.http("/livez")[0] == 200
    assert (bed.run_dir / "mtu").read_text() == "1450\n"        # eth0's MTU, no IPIP

    # a pod whose interface the CNI plugin has not made yet is pending, then programmed
    bed.create_pod("web-2", "10.244.1.6")
    wait_for("web-2 pending", lambda: bed.metric("felix_routes_pending") == 1)
    assert pod_line("web-2", "10.244.1.6") not in bed.felix_routes()
    bed.add_pod_link("web-2")
    wait_for("web-2 route after its link appeared", lambda: pod_line("web-2", "10.244.1.6") in bed.felix_routes())
    assert bed.metric("felix_routes_pending") == 0

    # deleted and finished pods lose their route; other pods keep theirs
    bed.delete_pod("web-1")
    wait_for("web-1 route removed", lambda: pod_line("web-1", "10.244.1.5") not in bed.felix_routes())
    bed.set_pod_status("web-2", {"phase": "Succeeded"})
    wait_for("web-2 route removed", lambda: bed.felix_routes() == ["blackhole 10.244.1.0/24"])
    assert "event=\"route removed\"" in felix.log() or "route removed" in felix.log()
    assert bed.metric("felix_routes_desired") == 1
    assert felix.stop() == 0


def test_foreign_routes_are_left_alone_and_old_pod_routes_adopted(bed: Bed) -> None:
    bed.create_node()
    bed.put_pool()
    dev = bed.add_pod_link("db-0")
    ip("route", "add", "10.244.1.9/32", "dev", dev, "scope", "link", "proto", "static", netns=bed.netns)
    ip("route", "add", "10.244.2.0/24", "via", bed.host_ip, "proto", "186", netns=bed.netns)
    ip("route", "add", "10.244.3.0/24", "via", bed.host_ip, "proto", "static", netns=bed.netns)
    bed.create_pod("db-0", "10.244.1.9")
    felix = bed.start_felix()
    bed.wait_ready(felix)
    wait_for("adopted db-0 route", lambda: pod_line("db-0", "10.244.1.9") in bed.felix_routes())
    assert f"10.244.2.0/24 via {bed.host_ip} dev eth0 proto bgp" in bed.routes()
    assert f"10.244.3.0/24 via {bed.host_ip} dev eth0 proto static" in bed.routes()


def test_restart_with_everything_in_place_writes_nothing_and_loses_nothing(bed: Bed) -> None:
    bed.create_node()
    bed.put_pool()
    for i in range(20):
        bed.add_pod_link(f"p{i}")
        bed.create_pod(f"p{i}", f"10.244.1.{10 + i}")
    first = bed.start_felix()
    bed.wait_ready(first)
    wait_for("all routes", lambda: len(bed.felix_routes()) == 21)
    assert bed.metric("felix_netlink_writes_total") >= 21

    removals: queue.Queue = queue.Queue()
    monitor = RouteMonitor(lambda route, present: None if present else removals.put(route), netns=bed.netns).start()
    try:
        assert first.stop() == 0
        assert len(bed.felix_routes()) == 21           # stopping leaves the dataplane as it is
        second = bed.start_felix()
        bed.wait_ready(second)
        assert bed.metric("felix_netlink_writes_total") == 0
        assert bed.metric("felix_routes_programmed") == 21
    finally:
        monitor.stop()
    assert removals.empty(), f"routes disappeared during the restart: {list(removals.queue)}"
    assert len(bed.felix_routes()) == 21


def test_a_hand_deleted_route_is_restored_by_the_event_not_the_timer(bed: Bed) -> None:
    bed.create_node()
    bed.put_pool()
    bed.add_pod_link("web-1")
    bed.create_pod("web-1", "10.244.1.5")
    felix = bed.start_felix()                       # resync timer: one hour
    bed.wait_ready(felix)
    wait_for("route", lambda: pod_line("web-1", "10.244.1.5") in bed.felix_routes())
    ip("route", "del", "10.244.1.5/32", netns=bed.netns)
    ip("route", "del", "blackhole", "10.244.1.0/24", netns=bed.netns)
    wait_for("routes restored", lambda: set(bed.felix_routes()) == {
        pod_line("web-1", "10.244.1.5"), "blackhole 10.244.1.0/24"}, timeout=60)


def test_an_invalid_pool_update_removes_nothing(bed: Bed) -> None:
    bed.create_node()
    bed.put_pool()
    bed.add_pod_link("web-1")
    bed.create_pod("web-1", "10.244.1.5")
    felix = bed.start_felix()
    bed.wait_ready(felix)
    wait_for("route", lambda: pod_line("web-1", "10.244.1.5") in bed.felix_routes())
    bed.put_pool(cidr="10.244.0.1/16")              # host bits set: the API stores it, the model refuses it
    wait_for("invalid pool reported", lambda: "invalid resource" in felix.log())
    bed.create_pod("web-2", "10.244.1.6")           # later changes are still handled
    bed.add_pod_link("web-2")
    wait_for("web-2 route", lambda: pod_line("web-2", "10.244.1.6") in bed.felix_routes())
    assert pod_line("web-1", "10.244.1.5") in bed.felix_routes()
    assert "blackhole 10.244.1.0/24" in bed.felix_routes()


def test_api_outage_leaves_the_dataplane_and_felix_catches_up_afterwards(bed: Bed) -> None:
    bed.create_node()
    bed.put_pool()
    for pod, pod_ip in (("web-1", "10.244.1.5"), ("web-2", "10.244.1.6")):
        bed.add_pod_link(pod)
        bed.create_pod(pod, pod_ip)
    felix = bed.start_felix()
    bed.wait_ready(felix)
    wait_for("routes", lambda: len(bed.felix_routes()) == 3)
    port = str(bed.kube.port)
    cuts = [["OUTPUT", "-d", bed.host_ip, "-p", "tcp", "--dport", port, "-j", "REJECT", "--reject-with", "tcp-reset"],
            ["INPUT", "-s", bed.host_ip, "-p", "tcp", "--sport", port, "-j", "DROP"]]
    for cut in cuts:
        subprocess.run(["ip", "netns", "exec", bed.netns, "iptables", "-I", *cut], check=True)
    try:
        bed.delete_pod("web-1")                      # felix cannot see this while cut off
        time.sleep(5)                                # the outage lasts a while
        assert len(bed.felix_routes()) == 3
        assert bed.http("/livez")[0] == 200
        ip("route", "del", "10.244.1.6/32", netns=bed.netns)   # the dataplane is still looked after
        wait_for("web-2 restored during the outage", lambda: pod_line("web-2", "10.244.1.6") in bed.felix_routes())
        assert pod_line("web-1", "10.244.1.5") in bed.felix_routes()
    finally:
        for cut in cuts:
            subprocess.run(["ip", "netns", "exec", bed.netns, "iptables", "-D", *cut], check=True)
    wait_for("web-1 removed once the API is back", lambda: set(bed.felix_routes()) == {
        pod_line("web-2", "10.244.1.6"), "blackhole 10.244.1.0/24"}, timeout=90)


def test_ipip_pool_on_a_kernel_without_ipip_is_reported_and_the_rest_runs(bed: Bed) -> None:
    kernel_has_ipip = ip("link", "add", "cxprobe0", "type", "ipip", netns=bed.netns, check=False).returncode == 0
    bed.create_node()
    bed.put_pool(ipip_mode="Always")
    bed.add_pod_link("web-1")
    bed.create_pod("web-1", "10.244.1.5")
    felix = bed.start_felix()
    bed.wait_ready(felix)
    wait_for("route", lambda: pod_line("web-1", "10.244.1.5") in bed.felix_routes())
    assert bed.metric("felix_ipip_available") == (1 if kernel_has_ipip else 0)
    assert (bed.run_dir / "mtu").read_text() == "1430\n"        # 1450 - 20: pods must fit in IPIP
    if not kernel_has_ipip:
        assert felix.log().count("IPIP unavailable") == 1
    assert bed.http("/metrics", port=9091)[0] == 200
