"""The lab kubelet's pure parts: reading a Pod, back-off, the status it writes, the exit
wrapper, the chart values the lab installs with, and hostPath resolution."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from calyxlab import chart, mountpoints, nodeview
from calyxlab.kubelet import backoff, podspec, records, runtime, status
from calyxlab.state import LabNames
from calyxlab.topology import Node, Role

HOST_IP = "10.0.0.1"


def daemonset_pod(**overrides) -> dict:
    """A pod as the DaemonSet controller and admission leave it (trimmed)."""
    pod = {
        "metadata": {"name": "calyx-abcde", "namespace": "calyx-system", "uid": "u-1",
                     "labels": {"app.kubernetes.io/name": "calyx"}},
        "spec": {
            "nodeName": "node1", "hostNetwork": True, "serviceAccountName": "calyx",
            "terminationGracePeriodSeconds": 30,
            "initContainers": [{"name": "install-cni", "image": "calyx/node:1",
                                "command": ["calyx-cni", "install"],
                                "volumeMounts": [{"name": "cni-bin-dir", "mountPath": "/host/opt/cni/bin"}]}],
            "containers": [{
                "name": "felix", "image": "calyx/node:1", "command": ["felix"],
                "args": ["--node", "$(NODENAME)", "$$(NOT)"],
                "env": [{"name": "NODENAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "CALYX_NAMESPACE",
                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "GREETING", "value": "hello $(NODENAME)"}],
                "ports": [{"name": "felix-health", "containerPort": 9099}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "felix-health"},
                                   "periodSeconds": 10},
                "startupProbe": {"httpGet": {"host": "127.0.0.1", "path": "/livez", "port": 9099},
                                 "periodSeconds": 5, "failureThreshold": 60},
                "livenessProbe": {"httpGet": {"host": "127.0.0.1", "path": "/livez", "port": 9099},
                                  "initialDelaySeconds": 10, "failureThreshold": 6},
                "volumeMounts": [
                    {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                     "readOnly": True}]}],
            "volumes": [
                {"name": "cni-bin-dir", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}},
                {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                                                "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}],
        },
    }
    for key, value in overrides.items():
        pod["spec"][key] = value
    return pod


def test_a_daemonset_pod_becomes_a_plan() -> None:
    plan = podspec.parse_pod(daemonset_pod(), HOST_IP)
    assert (plan.ref, plan.node, plan.service_account, plan.host_network) == \
        ("calyx-system/calyx-abcde", "node1", "calyx", True)
    felix = plan.containers[0]
    env = dict(felix.env)
    assert env == {"NODENAME": "node1", "CALYX_NAMESPACE": "calyx-system", "POD_IP": HOST_IP,
                   "GREETING": "hello node1"}
    assert felix.argv == ("felix", "--node", "node1", "$(NOT)")
    assert felix.readiness == podspec.HttpProbe(HOST_IP, 9099, "/readyz", period=10.0)
    assert felix.liveness.host == "127.0.0.1" and felix.liveness.initial_delay == 10
    assert felix.liveness.failure_threshold == 6
    assert felix.startup == podspec.HttpProbe("127.0.0.1", 9099, "/livez", period=5.0, failure_threshold=60)
    assert plan.init_containers[0].init and plan.init_containers[0].readiness is None
    projected = plan.volumes["kube-api-access"]
    assert projected.sources == (
        podspec.TokenProjection("token", 3607),
        podspec.ConfigMapProjection("kube-root-ca.crt", (podspec.KeyToPath("ca.crt", "ca.crt"),)),
        podspec.FieldProjection("namespace", "calyx-system"))
    assert plan.volumes["cni-bin-dir"] == podspec.HostPathVolume("/opt/cni/bin")


@pytest.mark.parametrize("change, message", [
    (lambda p: p["spec"]["containers"][0]["env"].append(
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
     r"pod calyx-system/calyx-abcde: spec.containers\[0\] \(felix\).env\[4\] \(PW\).valueFrom: "
     r"\['secretKeyRef'\] is not supported"),
    (lambda p: p["spec"]["volumes"].append({"name": "disk", "persistentVolumeClaim": {"claimName": "x"}}),
     r"spec.volumes\[2\] \(disk\): volume type \['persistentVolumeClaim'\] is not supported"),
    (lambda p: p["spec"]["containers"][0]["readinessProbe"].update(
        {"httpGet": {"port": "nope", "path": "/"}}),
     r"readinessProbe.httpGet.port: 'nope' names no container port"),
    (lambda p: p["spec"]["containers"][0].pop("command"),
     r"spec.containers\[0\] \(felix\).command: not set"),
    (lambda p: p["spec"]["containers"][0]["volumeMounts"].append({"name": "ghost", "mountPath": "/x"}),
     r"container felix: volumeMount 'ghost' names no volume"),
])
def test_what_the_lab_kubelet_cannot_run_is_named(change, message) -> None:
    pod = daemonset_pod()
    change(pod)
    with pytest.raises(podspec.PodSpecError, match=message):
        podspec.parse_pod(pod, HOST_IP)


def test_backoff_doubles_to_five_minutes_and_forgives_a_long_run() -> None:
    b, delays = backoff.Backoff(), []
    for _ in range(8):
        b = b.after_exit(ran_for=1.0)
        delays.append(b.delay)
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]
    assert b.after_exit(ran_for=600.0).delay == 10


def test_status_follows_init_then_containers_then_readiness() -> None:
    plan = podspec.parse_pod(daemonset_pod(), HOST_IP)
    done = status.Exit(0, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")
    pending = status.pod_status(plan, [status.ContainerState("install-cni", "i")],
                                [status.ContainerState("felix", "i")], HOST_IP, "t0")
    conditions = {c["type"]: c["status"] for c in pending["conditions"]}
    assert pending["phase"] == "Pending" and conditions["Initialized"] == "False"
    assert pending["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    crashed = status.ContainerState("felix", "i", restart_count=2, waiting_reason="CrashLoopBackOff",
                                    waiting_message="back-off 20s",
                                    last_exit=status.Exit(137, "a", "b"))
    running = status.ContainerState("felix", "i", restart_count=2, running_since="t1",
                                    container_id="calyx-lab://42", ready=False)
    s = status.pod_status(plan, [status.ContainerState("install-cni", "i", completed=done)],
                          [crashed], HOST_IP, "t0")
    assert s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
    s = status.pod_status(plan, [status.ContainerState("install-cni", "i", completed=done)],
                          [running], HOST_IP, "t0")
    conditions = {c["type"]: c["status"] for c in s["conditions"]}
    assert s["phase"] == "Running" and conditions == {
        "PodReadyToStartContainers": "True", "Initialized": "True",
        "ContainersReady": "False", "Ready": "False"}
    assert s["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    ready = status.ContainerState("felix", "i", running_since="t1", ready=True)
    s = status.pod_status(plan, [status.ContainerState("install-cni", "i", completed=done)],
                          [ready], HOST_IP, "t0")
    assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "True"
    assert s["podIP"] == s["hostIP"] == HOST_IP


def _wrapper(exit_file: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", runtime.exit_tail(str(exit_file)), "wrapper", *argv],
                            start_new_session=True)


@pytest.mark.parametrize("argv, code", [(["true"], 0), (["sh", "-c", "exit 3"], 3)])
def test_the_exit_wrapper_records_the_exit_status(tmp_path, argv, code) -> None:
    exit_file = tmp_path / "exit"
    assert _wrapper(exit_file, *argv).wait(10) == code
    assert runtime.ContainerRuntime.exit_code(str(exit_file)) == code


def test_the_exit_wrapper_passes_sigterm_on(tmp_path) -> None:
    exit_file = tmp_path / "exit"
    proc = _wrapper(exit_file, "sleep", "60")
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert runtime.ContainerRuntime.exit_code(str(exit_file)) == 128 + signal.SIGTERM
    assert runtime.ContainerRuntime.exit_code(str(tmp_path / "missing")) == 137


def test_created_mount_points_are_removed_only_when_empty(tmp_path) -> None:
    (tmp_path / "host" / "opt" / "cni" / "bin").mkdir(parents=True)
    (tmp_path / "host" / "etc" / "cni").mkdir(parents=True)
    (tmp_path / "host" / "etc" / "cni" / "keep").write_text("x")
    removed = mountpoints.remove_empty_dirs([str(tmp_path / "host")])
    assert str(tmp_path / "host" / "opt") in removed
    assert (tmp_path / "host" / "etc" / "cni" / "keep").exists()
    assert not (tmp_path / "host" / "opt").exists()


def test_a_mount_point_goes_only_when_no_lab_uses_it(tmp_path) -> None:
    registry = mountpoints.Registry(tmp_path / "state")
    host = tmp_path / "host"
    bin_dir, conf_dir = str(host / "opt" / "cni" / "bin"), str(host / "etc" / "cni" / "net.d")
    registry.claim("lab-a", [bin_dir, str(tmp_path)])       # an existing path is nobody's
    (host / "opt" / "cni" / "bin").mkdir(parents=True)      # the view made it
    registry.claim("lab-b", [bin_dir, conf_dir])            # lies in lab-a's /host: shared
    assert registry.release("lab-a") == []
    assert sorted(registry.release("lab-b")) == [str(host), str(host / "etc")]
    assert registry.release("lab-b") == []


def test_records_survive_a_restart(tmp_path) -> None:
    path = tmp_path / "records.json"
    rec = records.ContainerRecord("u-1", "ns/p", "felix", 42, 7, "t", 1.0, 3, "/x/exit")
    records.Records(path).put(rec)
    assert records.Records(path).containers == {"u-1/felix": rec}
    records.Records(path).drop("u-1", "felix")
    assert records.Records(path).containers == {}


def test_host_paths_resolve_to_the_nodes_own_directories() -> None:
    names = LabNames("lab1")
    node = Node(name="node1", kind="linux", image="calyx/node:latest", role=Role.CLUSTER)
    run = names.node_run_dir("node1")
    assert nodeview.host_path(names, node, "/var/run/calyx") == str(run / "calyx")
    assert nodeview.host_path(names, node, "/run/calyx/ipam") == str(run / "calyx" / "ipam")
    assert nodeview.host_path(names, node, "/opt/cni/bin") == str(run / "cni-bin")
    assert nodeview.host_path(names, node, "/etc/cni/net.d") == str(run / "cni-conf")
    assert nodeview.host_path(names, node, "/lib/modules") == "/lib/modules"


def test_the_lab_installs_the_chart_pointing_at_its_api() -> None:
    docs = [{"kind": "IPPool", "metadata": {"name": "p"}},
            {"kind": "BGPConfiguration", "metadata": {"name": "default"}}]
    assert chart.lab_values("172.20.0.1", 6443, docs) == {
        "kubernetesServiceEndpoint": {"host": "172.20.0.1", "port": "6443"},
        "ipPool": {"create": False}, "bgp": {"createConfiguration": False}}
    assert chart.lab_values("172.20.0.1", 6443, []) == {
        "kubernetesServiceEndpoint": {"host": "172.20.0.1", "port": "6443"}}


def test_the_image_stays_visible_under_a_volume_covering_it() -> None:
    roots = runtime.image_roots("/tmp/ci/calyx", "/tmp/ci/calyx/.venv", "/usr")
    assert roots == ("/usr", "/tmp/ci/calyx")
    tmp = nodeview.Mount("/state/pod/volumes/tmp", "/tmp")
    run = nodeview.Mount("/state/node/calyx", "/var/run/calyx")
    stage = Path("/state/pod/image-roots")
    assert runtime.keep_visible(roots, (run, tmp), stage) == (
        nodeview.Mount("/tmp/ci/calyx", "/state/pod/image-roots/0"), run, tmp,
        nodeview.Mount("/state/pod/image-roots/0", "/tmp/ci/calyx"))
    assert runtime.keep_visible(("/work/calyx",), (run, tmp), stage) == (run, tmp)
