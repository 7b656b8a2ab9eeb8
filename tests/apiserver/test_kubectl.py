"""The real kubectl against the emulator: discovery, get (server-side tables), apply, delete, CRDs."""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from calyxlab.apiserver import EmbeddedAPIServer
from calyxlab.tools import find_tool
from apitest_support import FIXTURE_CRDS

KUBECTL = find_tool("kubectl")


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path):
        self.base = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), "--request-timeout=30s"]

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.base + list(args), input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def out(self, *args: str, stdin: str | None = None) -> str:
        return self.run(*args, stdin=stdin).stdout


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


@pytest.fixture
def kubectl(server: EmbeddedAPIServer, tmp_path: Path) -> Kubectl:
    return Kubectl(server.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "cache")


@pytest.fixture
def bare_kubectl(tmp_path: Path) -> Iterator[Kubectl]:
    """kubectl against an emulator that starts with no CRDs at all."""
    srv = EmbeddedAPIServer(crds=[]).start()
    try:
        yield Kubectl(srv.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "cache")
    finally:
        srv.stop()


POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: node-1
  containers:
  - name: main
    image: nginx:1
"""

NODE = """
apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels: {node-role.kubernetes.io/control-plane: ""}
status:
  addresses: [{type: InternalIP, address: 172.31.9.2}]
  conditions: [{type: Ready, status: "True"}]
  nodeInfo: {kubeletVersion: v1.32.0, osImage: Debian, kernelVersion: "6.1", containerRuntimeVersion: none,
             architecture: amd64, bootID: "", kubeProxyVersion: "", machineID: "", operatingSystem: linux,
             systemUUID: ""}
"""

POOL = """
apiVersion: calyx.dev/v1
kind: IPPool
metadata:
  name: default-pool
spec:
  cidr: 10.244.0.0/16
  ipipMode: Always
  blockSize: 26
"""


def test_get_nodes_and_namespaces(kubectl: Kubectl) -> None:
    assert "No resources found" in kubectl.run("get", "nodes").stderr
    assert kubectl.out("apply", "-f", "-", stdin=NODE).strip() == "node/node-1 created"
    rows = table(kubectl.out("get", "nodes"))
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows[1][:3] == ["node-1", "Ready", "control-plane"] and rows[1][4] == "v1.32.0"
    wide = table(kubectl.out("get", "nodes", "-o", "wide"))
    assert "INTERNAL-IP" in wide[0] and "172.31.9.2" in wide[1]
    namespaces = [row[0] for row in table(kubectl.out("get", "ns"))[1:]]
    assert namespaces == ["default", "kube-node-lease", "kube-public", "kube-system"]


def test_apply_update_and_delete_a_pod(kubectl: Kubectl) -> None:
    assert kubectl.out("apply", "-f", "-", stdin=POD).strip() == "pod/web created"
    assert kubectl.out("apply", "-f", "-", stdin=POD).strip() == "pod/web unchanged"
    assert kubectl.out("apply", "-f", "-", stdin=POD.replace("nginx:1", "nginx:2")).strip() == "pod/web configured"
    obj = json.loads(kubectl.out("get", "pod", "web", "-o", "json"))
    assert obj["spec"]["containers"] == [{"name": "main", "image": "nginx:2"}]
    assert obj["metadata"]["generation"] == 2
    rows = table(kubectl.out("get", "pods", "-o", "wide", "-l", "app=web"))
    assert rows[0][:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[1][:3] == ["web", "0/1", "Pending"] and "node-1" in rows[1]
    kubectl.out("label", "pod", "web", "tier=front")
    assert table(kubectl.out("get", "pods", "-l", "tier in (front)"))[1][0] == "web"
    assert kubectl.out("delete", "-f", "-", stdin=POD).strip() == 'pod "web" deleted'
    assert "No resources found" in kubectl.run("get", "pods").stderr


def test_custom_kind_apply_get_wide_and_delete(kubectl: Kubectl) -> None:
    assert kubectl.out("apply", "-f", "-", stdin=POOL).strip() == "ippool.calyx.dev/default-pool created"
    rows = table(kubectl.out("get", "ippools"))
    assert rows[0] == ["NAME", "CIDR", "IPIP", "AGE"]
    assert rows[1][:3] == ["default-pool", "10.244.0.0/16", "Always"]
    wide = table(kubectl.out("get", "ippools", "-o", "wide"))
    assert wide[0] == ["NAME", "CIDR", "IPIP", "BLOCK", "AGE"]
    assert wide[1][:4] == ["default-pool", "10.244.0.0/16", "Always", "26"]
    assert table(kubectl.out("get", "ipp", "default-pool"))[1][0] == "default-pool"     # short name
    kubectl.out("patch", "ippool", "default-pool", "--type=merge", "-p", '{"spec":{"ipipMode":"Never"}}')
    assert json.loads(kubectl.out("get", "ippool", "default-pool", "-o", "json"))["spec"]["ipipMode"] == "Never"
    assert kubectl.out("delete", "ippool", "default-pool").strip() == 'ippool.calyx.dev "default-pool" deleted'
    assert "No resources found" in kubectl.run("get", "ippools").stderr


def test_invalid_custom_object_is_refused_with_field_and_value(kubectl: Kubectl) -> None:
    bad = kubectl.run("apply", "-f", "-", stdin=POOL.replace("Always", "Sometimes"), check=False)
    assert bad.returncode != 0
    assert "spec.ipipMode" in bad.stderr and "Sometimes" in bad.stderr
    unknown = kubectl.run("apply", "-f", "-", stdin=POOL + "  colour: blue\n", check=False)
    assert unknown.returncode != 0 and 'unknown field "spec.colour"' in unknown.stderr


def test_crd_applied_at_runtime_is_served(bare_kubectl: Kubectl) -> None:
    missing = bare_kubectl.run("get", "ippools", check=False)
    assert missing.returncode != 0 and 'the server doesn\'t have a resource type "ippools"' in missing.stderr
    crd = (FIXTURE_CRDS / "ippools.yaml").read_text()
    assert bare_kubectl.out("apply", "-f", "-", stdin=crd).strip() == \
        "customresourcedefinition.apiextensions.k8s.io/ippools.calyx.dev created"
    established = json.loads(bare_kubectl.out("get", "crd", "ippools.calyx.dev", "-o", "json"))
    assert {c["type"]: c["status"] for c in established["status"]["conditions"]}["Established"] == "True"
    bare_kubectl.out("apply", "-f", "-", stdin=POOL)
    assert table(bare_kubectl.out("get", "ippools"))[1][:2] == ["default-pool", "10.244.0.0/16"]
    bare_kubectl.out("delete", "crd", "ippools.calyx.dev")
    gone = bare_kubectl.run("get", "ippools", check=False)
    assert gone.returncode != 0


def test_unknown_field_on_builtin_kind_is_refused(kubectl: Kubectl) -> None:
    bad = kubectl.run("apply", "-f", "-", stdin=POD.replace("  nodeName: node-1", "  nodeNmae: node-1"),
                      check=False)
    assert bad.returncode != 0 and 'unknown field "spec.nodeNmae"' in bad.stderr
    assert "No resources found" in kubectl.run("get", "pods").stderr


def test_get_watch_prints_table_rows(kubectl: Kubectl, core) -> None:
    core.create_node({"metadata": {"name": "n1"}})
    proc = subprocess.Popen(kubectl.base + ["get", "nodes", "-w"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(60, proc.kill)      # a silent watch fails the test instead of hanging it
    guard.start()
    try:
        assert proc.stdout.readline().split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        assert proc.stdout.readline().split()[0] == "n1"
        core.create_node({"metadata": {"name": "n2"}})
        assert proc.stdout.readline().split()[:2] == ["n2", "Unknown"]
    finally:
        guard.cancel()
        proc.kill()
        proc.communicate(timeout=30)


def test_create_generators_send_protobuf_and_work(kubectl: Kubectl) -> None:
    """kubectl create namespace/secret/service encode their bodies in protobuf, not JSON."""
    assert kubectl.out("create", "namespace", "calyx-system").strip() == "namespace/calyx-system created"
    kubectl.out("create", "secret", "generic", "bgp-password", "-n", "calyx-system",
                "--from-literal=password=s3cr3t")
    secret = json.loads(kubectl.out("get", "secret", "bgp-password", "-n", "calyx-system", "-o", "json"))
    assert secret["type"] == "Opaque" and secret["data"] == {"password": "czNjcjN0"}
    kubectl.out("create", "service", "nodeport", "web", "-n", "calyx-system", "--tcp=80:8080",
                "--node-port=30080")
    spec = json.loads(kubectl.out("get", "svc", "web", "-n", "calyx-system", "-o", "json"))["spec"]
    assert spec["type"] == "NodePort" and spec["selector"] == {"app": "web"}
    assert spec["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080,
                              "nodePort": 30080}]
    assert spec["clusterIP"].startswith("10.96.")
    assert kubectl.out("delete", "namespace", "calyx-system").strip() == 'namespace "calyx-system" deleted'
    assert kubectl.run("get", "secret", "-n", "calyx-system").stderr.startswith("No resources found")
