"""Labs on the host kernel: wiring, the API from inside nodes, the CLI, and teardown."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calyxlab import lab as labmod
from calyxlab.lab import Lab, LabError, leftovers
from calyxlab.state import LabNames

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
TOPOS = Path(__file__).resolve().parent / "topologies"
TWO_NODES = REPO / "containerlab" / "two-nodes.clab.yml"
CLI = str(Path(sys.executable).parent / "calyx-lab")


def kubectl_in(lab: Lab, node: str, kubeconfig: Path, *args: str, check: bool = True):
    """kubectl run inside ``node`` (its network view) with the given credentials."""
    return lab.exec(node, ["kubectl", "--kubeconfig", str(kubeconfig), *args], check=check, timeout=60)


def control_plane_handles(lab: Lab) -> list:
    return [labmod.ProcHandle.from_json(p) for p in lab.state.data["control_plane"]]


def assert_gone(lab_name: str, handles=()) -> None:
    assert leftovers(lab_name) == []
    for h in handles:
        assert not labmod.procs.alive(h.pid, h.start_time), f"{h.name} (pid {h.pid}) survived"


def test_two_nodes_wired_registered_and_destroyed(lab_factory) -> None:
    lab = lab_factory(TWO_NODES, kernel="host")
    # the link between the nodes carries traffic
    lab.exec("node1", ["ping", "-c1", "-W2", "10.0.0.2"], check=True)
    # mgmt: eth0 holds the assigned address, and there is no default route through the host
    subnet = lab.topology.mgmt.subnet
    assert lab.nodes["node1"].mgmt_ipv4 == str(subnet.network_address + 2)
    assert lab.nodes["node2"].mgmt_ipv4 == str(subnet.network_address + 3)
    assert lab.exec("node1", ["ip", "route", "show", "default"], check=True).stdout == ""
    assert lab.exec("node2", ["ip", "-4", "-o", "addr", "show", "eth0"],
                    check=True).stdout.split()[3] == f"{subnet.network_address + 3}/24"
    # the real API, over TLS on the mgmt bridge, from inside a node
    assert lab.api_url == f"https://{subnet.network_address + 1}:6443"
    assert {h.name for h in control_plane_handles(lab)} == {
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    nodes = json.loads(kubectl_in(lab, "node2", lab.kubeconfig, "get", "nodes", "-o", "json").stdout)
    by_name = {n["metadata"]["name"]: n for n in nodes["items"]}
    assert sorted(by_name) == ["node1", "node2"]
    n1 = by_name["node1"]
    assert n1["metadata"]["labels"]["kubernetes.io/hostname"] == "node1"
    assert n1["metadata"]["labels"]["topology.kubernetes.io/zone"] == "lab"
    assert {"type": "InternalIP", "address": "10.0.0.1"} in n1["status"]["addresses"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in n1["status"]["conditions"])
    # kubectl on the host with the lab's kubeconfig
    out = subprocess.run(["kubectl", "--kubeconfig", str(lab.kubeconfig), "get", "nodes",
                          "-o", "name"], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["node/node1", "node/node2"]
    # each node registered itself with its own kubelet identity, and the Node authorizer and
    # NodeRestriction hold it to its own object
    node1 = lab.node_kubeconfig("node1")
    assert kubectl_in(lab, "node1", node1, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
                      ).stdout == "system:node:node1"
    assert kubectl_in(lab, "node1", node1, "get", "node", "node1", "-o", "name").stdout.strip() == "node/node1"
    denied = kubectl_in(lab, "node1", node1, "label", "node", "node2", "hijacked=yes", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    denied = kubectl_in(lab, "node1", node1, "get", "secrets", "-A", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    # a background process belongs to the lab
    sleeper = lab.spawn("node1", ["sleep", "300"])
    assert lab.alive(sleeper)
    handles = lab.processes() + control_plane_handles(lab)
    assert [r["state"] for r in lab.inspect()] == ["running", "running"]
    lab.destroy()
    assert_gone(lab.name, handles)
    assert not LabNames(lab.name).state_file.exists()
    lab.destroy()            # idempotent
    assert_gone(lab.name)


def test_spawn_kill_and_daemon_controls(lab_factory, tmp_path: Path) -> None:
    lab = lab_factory(TOPOS / "routers" / "routers.clab.yml", kernel="host")
    log = tmp_path / "loop.log"
    h = lab.spawn("frr", ["sh", "-c", "echo started $$; exec sleep 300"], log=log, name="loop")
    assert lab.alive(h)
    for _ in range(100):
        if log.exists() and log.read_text().startswith("started"):
            break
        time.sleep(0.05)
    assert log.read_text().strip() == f"started {h.pid}"
    lab.kill(h)
    assert not lab.alive(h) and h not in lab.processes()
    bird = [p for p in lab.processes("bird") if p.name == "bird"]
    assert len(bird) == 1 and lab.alive(bird[0])
    lab.stop_daemons("bird", which=["bird"])
    assert not lab.alive(bird[0]) and lab.processes("bird") == []
    with pytest.raises(LabError, match="node frr: image 'quay.io/frrouting/frr:8.4.4' is not a "
                                       "calyx/node image"):
        lab.start_daemons("frr")


def test_cli_deploy_inspect_exec_destroy(unique_lab_name, mgmt_subnet) -> None:
    name = unique_lab_name("cli")
    topo = str(TOPOS / "failing.clab.yml")
    ok_topo = TOPOS / "routers" / "routers.clab.yml"
    try:
        res = subprocess.run([CLI, "deploy", "-t", str(ok_topo), "--name", name, "--kernel",
                              "host", "--mgmt-subnet", str(mgmt_subnet)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert f"clab-{name}-frr" in res.stdout and "Node gobgp: started gobgpd" in res.stdout
        res = subprocess.run([CLI, "inspect", "--name", name, "-o", "json"],
                             capture_output=True, text=True, check=True)
        rows = json.loads(res.stdout)[name]
        assert [(r["name"], r["kind"], r["state"], r["ipv4_address"]) for r in rows] == [
            (f"clab-{name}-{n}", "linux", "running", f"{mgmt_subnet.network_address + i}/24")
            for i, n in ((2, "frr"), (3, "bird"), (4, "gobgp"))]
        table = subprocess.run([CLI, "inspect", "--name", name], capture_output=True, text=True,
                               check=True).stdout
        assert "| 1 | clab-" in table and "IPv4 Address" in table
        res = subprocess.run([CLI, "exec", "--name", name, "--node", "bird", "--", "sh", "-c",
                              "echo out; echo err >&2; exit 7"], capture_output=True, text=True)
        assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
        res = subprocess.run([CLI, "exec", "--name", name, "--node", "nope", "--", "true"],
                             capture_output=True, text=True)
        assert res.returncode == 1 and "has no node 'nope'" in res.stderr
        res = subprocess.run([CLI, "deploy", "-t", str(ok_topo), "--name", name, "--kernel",
                              "host"], capture_output=True, text=True)
        assert res.returncode == 1 and "is already deployed" in res.stderr
    finally:
        res = subprocess.run([CLI, "destroy", "--name", name, "--cleanup"], capture_output=True,
                             text=True)
    assert res.returncode == 0 and f"Destroyed lab '{name}'" in res.stdout
    assert_gone(name)
    # a failing exec line: clear message, and the deploy removes what it built
    res = subprocess.run([CLI, "deploy", "-t", topo, "--name", name, "--kernel", "host",
                          "--mgmt-subnet", str(mgmt_subnet)], capture_output=True, text=True)
    assert res.returncode == 1
    assert ("calyx-lab: error: node b: exec 'ip route add 10.9.0.0/16 via 10.77.0.1' exited 2: "
            in res.stderr), res.stderr
    assert_gone(name)
    subprocess.run([CLI, "destroy", "--name", name, "--cleanup"], check=True,
                   capture_output=True)
    assert not LabNames(name).state_dir.exists()


def test_refusals_before_anything_is_built(lab_factory, unique_lab_name, mgmt_subnet) -> None:
    name = unique_lab_name("refuse")
    bad = TOPOS / "routers" / "routers.clab.yml"
    # the mgmt subnet of a running lab cannot be reused
    first = lab_factory(bad, kernel="host")
    with pytest.raises(LabError, match=r"/mgmt/ipv4-subnet: .* is already in use on this machine "
                                       rf"by {first.names.bridge}"):
        Lab.deploy(bad, name=name, mgmt_subnet=str(first.topology.mgmt.subnet), kernel="host")
    with pytest.raises(LabError, match="--kernel 'qemu': choose one of host, uml, auto"):
        Lab.deploy(bad, name=name, mgmt_subnet=str(mgmt_subnet), kernel="qemu")
    assert leftovers(name) == []


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running_in(namespace: str) -> list[str]:
    """Command names of the processes in a namespace."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True,
                          text=True).stdout.split()
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return names


def test_destroy_after_the_deploying_cli_was_killed(unique_lab_name, mgmt_subnet) -> None:
    name = unique_lab_name("crash")
    names = LabNames(name)
    proc = subprocess.Popen([CLI, "deploy", "-t", str(TOPOS / "slow.clab.yml"), "--name", name,
                             "--kernel", "host", "--mgmt-subnet", str(mgmt_subnet)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # killed while node b's exec line (sleep 60) runs: API server up, namespaces built
        wait_for(lambda: "sleep" in running_in(names.namespace("b")), 60,
                 "node b's exec line to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = leftovers(name)
        assert f"namespace {names.namespace('a')}" in left
        assert any(item.startswith("control-plane process") for item in left)
    finally:
        if proc.poll() is None:
            proc.kill()
        res = subprocess.run([CLI, "destroy", "--name", name, "--cleanup"], capture_output=True,
                             text=True)
    assert res.returncode == 0, res.stderr
    assert_gone(name)


def test_destroy_without_state_file_finds_leftovers_by_name(lab_factory) -> None:
    lab = lab_factory(TWO_NODES, kernel="host")
    sleeper = lab.spawn("node2", ["sleep", "300"])
    control_plane = control_plane_handles(lab)
    lab.names.state_file.unlink()
    assert labmod.destroy(lab.name) is True
    assert_gone(lab.name, [sleeper, *control_plane])


def test_daemons_can_be_left_to_the_test(lab_factory) -> None:
    lab = lab_factory(TWO_NODES, kernel="host", daemons=())
    assert lab.processes() == []
    env = lab.node_env("node2")
    # the chart's ServiceAccount, not the admin: daemons a test starts have the chart's rights
    assert env["NODENAME"] == "node2"
    assert env["KUBECONFIG"] == str(lab.service_account_kubeconfig("calyx")) != str(lab.kubeconfig)
    assert env["CALYX_NAMESPACE"] == "calyx-system"
    assert env["CALYX_RUN_DIR"].endswith(f"/{lab.name}/node2/calyx")
    # the node's own view mounts its run dir on /run/calyx
    lab.exec("node2", ["sh", "-c", "echo x > /run/calyx/probe"], check=True)
    assert Path(env["CALYX_RUN_DIR"], "probe").read_text() == "x\n"
    with pytest.raises(LabError, match=r"node node1: unknown daemon\(s\) kubelet "
                                       r"\(choose from felix, bgpd\)"):
        lab.start_daemons("node1", ["kubelet"])


def test_sigterm_during_deploy_cleans_up(unique_lab_name, mgmt_subnet) -> None:
    name = unique_lab_name("term")
    proc = subprocess.Popen([CLI, "deploy", "-t", str(TOPOS / "slow.clab.yml"), "--name", name,
                             "--kernel", "host", "--mgmt-subnet", str(mgmt_subnet)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "sleep" in running_in(LabNames(name).namespace("b")), 60,
                 "node b's exec line to start")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 143, out
        assert "cleaning up" in out
        assert leftovers(name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([CLI, "destroy", "--name", name, "--cleanup"], capture_output=True)
