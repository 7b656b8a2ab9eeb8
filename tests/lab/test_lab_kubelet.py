"""Calyx installed with helm and run by the lab's kubelet: one Running pod per node, the
daemons under the chart's identities, restarts with back-off, and `helm uninstall` leaving
nothing running. One host-kernel lab for the module (plain routing, no IPIP)."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from calyxlab import chart, pods, procs, pytest_plugin
from calyxlab.kubelet.records import Records
from calyxlab.lab import Lab, leftovers
from calyxlab.pytest_plugin import wait_for
from calyxlab.tools import find_tool

pytestmark = pytest.mark.lab

TOPOLOGY = Path(__file__).resolve().parent / "kubelet" / "kubelet.clab.yml"
NAMESPACE = "calyx-system"
NODES = ("node1", "node2")


@pytest.fixture(scope="module")
def lab(request, unique_lab_name) -> Lab:
    with pytest_plugin.module_lab(request, unique_lab_name("kubelet"), TOPOLOGY, kernel="host") as lab:
        yield lab


def kubectl(lab: Lab, *args: str) -> str:
    proc = subprocess.run([find_tool("kubectl"), "--kubeconfig", str(lab.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def calyx_pods(lab: Lab) -> dict[str, dict]:
    """node -> the calyx DaemonSet's pod there (a pod not bound to a node yet is left out)."""
    items = json.loads(kubectl(lab, "get", "pods", "-n", NAMESPACE, "-o", "json",
                               "-l", f"app.kubernetes.io/instance={chart.RELEASE}"))["items"]
    return {p["spec"]["nodeName"]: p for p in items if p["spec"].get("nodeName")}


def container_status(pod: dict, name: str) -> dict:
    return next(s for s in pod["status"].get("containerStatuses", []) if s["name"] == name)


def all_ready(lab: Lab) -> bool:
    found = calyx_pods(lab)
    return set(found) == set(NODES) and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        for p in found.values())


def daemon_pid(lab: Lab, node: str, container: str) -> int:
    return lab.daemon_pid(node, container)


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def in_container(pid: int, *argv: str) -> str:
    """Run ``argv`` in the mount namespace of process ``pid`` (what the container sees)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-m", *argv], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_one_running_ready_pod_per_node(lab: Lab) -> None:
    wait_for("the calyx pods Ready on both nodes", lambda: all_ready(lab), 90)
    table = kubectl(lab, "get", "pods", "-n", NAMESPACE, "-o", "wide").splitlines()
    rows = [line.split() for line in table[1:]]
    assert sorted(r[6] for r in rows) == list(NODES), table
    for row in rows:
        assert row[1:3] == ["2/2", "Running"], table
    pods_by_node = calyx_pods(lab)
    for node in NODES:
        pod = pods_by_node[node]
        assert pod["status"]["podIP"] == lab.internal_ip(node)
        assert [s["state"] for s in pod["status"]["initContainerStatuses"]][0]["terminated"]["exitCode"] == 0
    # the node's Lease is renewed by its kubelet, with the node's identity
    lease = json.loads(kubectl(lab, "get", "lease", "-n", "kube-node-lease", "node1", "-o", "json"))
    assert lease["spec"]["holderIdentity"] == "node1"


def test_daemons_run_with_the_charts_identities(lab: Lab) -> None:
    wait_for("the calyx pods Ready", lambda: all_ready(lab), 90)
    pod = calyx_pods(lab)["node1"]
    for container in ("felix", "bgpd"):
        pid = daemon_pid(lab, "node1", container)
        sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
        claims = jwt_claims(in_container(pid, "cat", f"{sa_dir}/token"))
        assert claims["sub"] == f"system:serviceaccount:{NAMESPACE}:calyx"
        assert claims["kubernetes.io"]["pod"]["name"] == pod["metadata"]["name"]
        assert in_container(pid, "cat", f"{sa_dir}/namespace") == NAMESPACE
        assert "BEGIN CERTIFICATE" in in_container(pid, "cat", f"{sa_dir}/ca.crt")
        env = dict(line.split("=", 1) for line in
                   Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in line)
        assert env["NODENAME"] == "node1" and env["CALYX_NAMESPACE"] == NAMESPACE
        assert env["KUBERNETES_SERVICE_HOST"] == str(lab.topology.mgmt.gateway)
        assert "KUBECONFIG" not in env
    # The CNI plugin's kubeconfig on the node carries the narrower calyx-cni-plugin identity.
    kubeconfig = json.loads(lab.exec("node1", ["cat", "/etc/cni/net.d/calyx-kubeconfig"], check=True).stdout)
    token = kubeconfig["users"][0]["user"]["token"]
    assert jwt_claims(token)["sub"] == f"system:serviceaccount:{NAMESPACE}:calyx-cni-plugin"
    # Under those identities nothing was refused.
    for node in NODES:
        for daemon in ("felix", "bgpd"):
            log = lab.daemon_log(node, daemon)
            assert log and "Forbidden" not in log and " 403" not in log, f"{daemon} on {node}:\n{log[-2000:]}"


def test_pods_on_both_nodes_reach_each_other(lab: Lab) -> None:
    wait_for("the calyx pods Ready", lambda: all_ready(lab), 90)
    a = pods.add_pod(lab, "node1", "default", "a")
    b = pods.add_pod(lab, "node2", "default", "b")
    try:
        wait_for("a -> b", lambda: pods.exec_pod(lab, "node1", "default", "a",
                                                 ["ping", "-c1", "-W1", b]).returncode == 0, 60)
        assert pods.exec_pod(lab, "node2", "default", "b", ["ping", "-c1", "-W1", a]).returncode == 0
        # The plugin ran from the node's /opt/cni/bin, as install-cni put it there.
        assert lab.exec("node1", ["test", "-x", "/opt/cni/bin/calyx"]).returncode == 0
    finally:
        pods.delete_pod(lab, "default", "a", "node1")
        pods.delete_pod(lab, "default", "b", "node2")


def test_a_killed_container_is_restarted_and_counted(lab: Lab) -> None:
    wait_for("the calyx pods Ready", lambda: all_ready(lab), 90)
    before = container_status(calyx_pods(lab)["node2"], "felix")["restartCount"]
    os.kill(daemon_pid(lab, "node2", "felix"), signal.SIGKILL)

    def restarted():
        status = container_status(calyx_pods(lab)["node2"], "felix")
        return status if status["restartCount"] == before + 1 and "running" in status["state"] else None
    status = wait_for("felix on node2 restarted", restarted, 40)
    assert status["lastState"]["terminated"]["exitCode"] == 137
    wait_for("the calyx pods Ready again", lambda: all_ready(lab), 60)


def test_a_restarted_kubelet_adopts_its_containers(lab: Lab) -> None:
    wait_for("the calyx pods Ready", lambda: all_ready(lab), 90)
    before = {c: daemon_pid(lab, "node1", c) for c in ("felix", "bgpd")}
    lab.stop_kubelet("node1", containers=False)
    lab.start_kubelet("node1")
    wait_for("the restarted kubelet's status", lambda: all_ready(lab), 30)
    assert {c: daemon_pid(lab, "node1", c) for c in ("felix", "bgpd")} == before
    assert container_status(calyx_pods(lab)["node1"], "bgpd")["restartCount"] == 0


def test_helm_upgrade_rolls_the_pods(lab: Lab) -> None:
    wait_for("the calyx pods Ready", lambda: all_ready(lab), 90)
    before = {node: pod["metadata"]["uid"] for node, pod in calyx_pods(lab).items()}
    chart.upgrade(str(lab.kubeconfig), NAMESPACE, ["logLevel=debug"])

    def rolled():
        now = calyx_pods(lab)
        return set(now) == set(NODES) and all(p["metadata"]["uid"] != before[n] for n, p in now.items()) \
            and all_ready(lab)
    wait_for("every calyx pod replaced and Ready", rolled, 180)
    for node, pod in calyx_pods(lab).items():
        felix = next(c for c in pod["spec"]["containers"] if c["name"] == "felix")
        assert {"name": "CALYX_LOG_LEVEL", "value": "debug"} in felix["env"]
        records = Records(lab.names.kubelet_records(node))
        assert {r.pod_uid for r in records.containers.values()} == {pod["metadata"]["uid"]}


def test_helm_uninstall_stops_everything(lab: Lab) -> None:
    chart.uninstall(str(lab.kubeconfig), NAMESPACE)
    wait_for("the calyx pods gone", lambda: calyx_pods(lab) == {}, 60)
    for node in NODES:
        records = Records(lab.names.kubelet_records(node))
        assert records.containers == {}
        ps = lab.exec(node, ["ps", "-eo", "args"], check=True).stdout
        assert "bin/felix" not in ps and "bin/bgpd" not in ps
    assert "serviceaccount/calyx" not in kubectl(lab, "get", "sa", "-n", NAMESPACE, "-o", "name")


def test_destroy_stops_the_kubelets_and_their_containers(lab_factory) -> None:
    lab = lab_factory(TOPOLOGY, kernel="host")
    kubelets = [(k["pid"], k["start_time"]) for k in lab.state.data["kubelets"]]
    assert len(kubelets) == 2
    records = Records(lab.names.kubelet_records("node1"))
    containers = [(r.pid, r.start_time) for r in records.containers.values()]
    assert len(containers) == 2
    lab.destroy()
    assert leftovers(lab.name) == []
    assert not any(procs.alive(pid, st) for pid, st in kubelets + containers)
    assert not (lab.names.kubelet_dir("node1") / "pods").exists()
