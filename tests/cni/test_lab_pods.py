"""Pods made in a lab as kubelet would: reachable from their node over the cali interface,
recorded in the API, and gone again after delete."""
from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client as k8s

from calyx import naming
from calyx.kube import client as kube_client
from calyxlab import cli, pods

pytestmark = pytest.mark.lab

TOPOLOGY = Path(__file__).with_name("pods.clab.yml")


def _pool(lab, cidr: str) -> None:
    api = kube_client.load(str(lab.kubeconfig))
    k8s.CustomObjectsApi(api).create_cluster_custom_object("calyx.dev", "v1", "ippools", {
        "apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": "lab-pool"},
        "spec": {"cidr": cidr, "blockSize": 28}})


def test_lab_pod_is_wired_recorded_reachable_and_deleted(lab_factory):
    lab = lab_factory(TOPOLOGY, kernel="host")
    _pool(lab, "10.96.0.0/24")
    ip_a = pods.add_pod(lab, "node1", "default", "pod-a")
    ip_b = pods.add_pod(lab, "node1", "default", "pod-b")
    ip_c = pods.add_pod(lab, "node2", "other", "pod-c")
    assert (ip_a, ip_b) == ("10.96.0.1", "10.96.0.2")
    assert ip_c == "10.96.0.17"                    # node2 claimed the next block

    host_if = naming.cali_interface_name("default", "pod-a")
    route = lab.exec("node1", ["ip", "route", "show", f"{ip_a}/32"], check=True).stdout
    assert f"dev {host_if} proto 80 scope link" in route
    ping = lab.exec("node1", ["ping", "-c", "2", "-W", "2", ip_a])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    same_node = pods.exec_pod(lab, "node1", "default", "pod-b", ["ping", "-c", "1", "-W", "2", ip_a])
    assert same_node.returncode == 0, same_node.stdout + same_node.stderr

    core = k8s.CoreV1Api(kube_client.load(str(lab.kubeconfig)))
    pod = core.read_namespaced_pod("pod-a", "default")
    assert pod.spec.node_name == "node1" and pod.status.pod_ip == ip_a and pod.status.phase == "Running"
    assert [p.ip for p in pod.status.pod_ips] == [ip_a]

    pods.delete_pod(lab, "default", "pod-a")
    assert host_if not in lab.exec("node1", ["ip", "link"]).stdout
    assert pods.pod_netns(lab.name, "node1", "default", "pod-a") not in pods.list_pod_namespaces(lab)
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["pod-b"]
    pods.delete_pod(lab, "default", "pod-a", node="node1")      # idempotent

    # The address is free again for the next pod on node1.
    assert pods.add_pod(lab, "node1", "default", "pod-d") == ip_a


def test_pod_cli_verbs(lab_factory, capsys):
    lab = lab_factory(TOPOLOGY, kernel="host")
    _pool(lab, "10.97.0.0/24")

    def run(*argv: str) -> int:      # the real calyx-lab command line
        return cli.main(list(argv))

    assert run("pod", "add", "--name", lab.name, "--node", "node2", "web/nginx") == 0
    assert "pod web/nginx on node2: 10.97.0.1" in capsys.readouterr().out
    assert run("pod", "exec", "--name", lab.name, "web/nginx", "--", "ip", "-4", "addr", "show", "eth0") == 0
    assert "inet 10.97.0.1/32" in capsys.readouterr().out
    assert run("pod", "list", "--name", lab.name) == 0
    assert "web/nginx\tnode2\t10.97.0.1\tRunning" in capsys.readouterr().out
    assert run("pod", "del", "--name", lab.name, "web/nginx") == 0
    assert pods.list_pod_namespaces(lab) == []


def test_add_pod_on_unknown_node_or_without_pool_fails_cleanly(lab_factory):
    lab = lab_factory(TOPOLOGY, kernel="host")
    with pytest.raises(pods.PodError, match="node 'node9' is not in lab"):
        pods.add_pod(lab, "node9", "default", "x")
    with pytest.raises(pods.PodError, match=r"ADD failed: CNI error 100: .*no enabled IPPool"):
        pods.add_pod(lab, "node1", "default", "x")
    assert pods.list_pod_namespaces(lab) == []


@pytest.mark.uml
def test_lab_pods_in_uml_kernel(lab_factory):
    """The same wiring when the lab's kernel is user-mode Linux (the plugin runs inside it)."""
    lab = lab_factory(TOPOLOGY, kernel="uml")
    _pool(lab, "10.98.0.0/24")
    ip_a = pods.add_pod(lab, "node1", "default", "u-a")
    ip_b = pods.add_pod(lab, "node1", "default", "u-b")
    assert (ip_a, ip_b) == ("10.98.0.1", "10.98.0.2")
    ping = lab.exec("node1", ["ping", "-c", "1", "-W", "3", ip_a])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    pod_ping = pods.exec_pod(lab, "node1", "default", "u-b", ["ping", "-c", "1", "-W", "3", ip_a])
    assert pod_ping.returncode == 0, pod_ping.stdout + pod_ping.stderr
    pods.delete_pod(lab, "default", "u-a")
    assert naming.cali_interface_name("default", "u-a") not in lab.exec("node1", ["ip", "link"]).stdout


def test_felix_keeps_the_route_of_a_pod_being_created(lab_factory):
    """The lab makes pods in kubelet's order (Pod in the API first, then CNI ADD, then its
    address in status), so a running felix never deletes the route the plugin just wrote."""
    import time
    lab = lab_factory(TOPOLOGY, kernel="host")
    _pool(lab, "10.99.0.0/24")
    lab.start_daemons("node1", ["felix"])
    mtu = f"{lab.node_env('node1')['CALYX_RUN_DIR']}/mtu"
    deadline = time.monotonic() + 60
    while lab.run_root(["test", "-s", mtu]).returncode != 0:      # felix has synced
        assert time.monotonic() < deadline, lab.daemon_log("node1", "felix")[-2000:]
        time.sleep(0.1)
    monitor = lab.spawn("node1", ["ip", "monitor", "route"], name="route-monitor")
    try:
        ip = pods.add_pod(lab, "node1", "default", "fresh")
        deadline = time.monotonic() + 30
        while f'route added" dst={ip}/32' not in lab.daemon_log("node1", "felix") and \
                'reason="pod default/fresh running"' not in lab.daemon_log("node1", "felix"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(1.0)                       # felix's debounce and a reconcile after the status
        events = Path(monitor.log).read_text()
    finally:
        lab.kill(monitor)
    assert f"Deleted {ip} dev" not in events, f"felix removed the new pod's route:\n{events}"
    assert f"{ip} dev {naming.cali_interface_name('default', 'fresh')}" in \
        lab.exec("node1", ["ip", "route", "show", f"{ip}/32"], check=True).stdout
