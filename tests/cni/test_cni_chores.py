"""What felix does for the CNI plugin besides routing: it keeps the CNI kubeconfig's token in step
with the rotating service-account token, and (on the node with the smallest name) releases the
blocks of deleted nodes, without anyone running ``calyx-cni gc``. A real felix process in the
node namespace, against a real kube-apiserver."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from kubernetes import client as k8s

from calyx.cni import blocks, install, ipam, token
from calyx.kube import client as kube_client

pytestmark = pytest.mark.lab

FELIX = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "felix"


def _wait(what: str, predicate, timeout: float = 60.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{log.read_text()[-3000:]}" if log else ""))


def _rotate(sa_dir: Path, value: str) -> None:
    """Like the kubelet's projected volume: the new file appears by a rename."""
    tmp = sa_dir / ".token.new"
    tmp.write_text(value)
    os.rename(tmp, sa_dir / "token")


def _token_in(kubeconfig: Path) -> str:
    return json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]


def _service_account(tmp_path: Path, first_token: str) -> tuple[Path, Path]:
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    _rotate(sa_dir, first_token)
    kubeconfig = tmp_path / "net.d" / install.KUBECONFIG_NAME
    install.write_atomically(str(kubeconfig), json.dumps(install.render_kubeconfig(
        "https://10.96.0.1:443", b"old-ca", "token-at-install")), 0o600)
    return sa_dir, kubeconfig


def test_refresher_follows_a_rotating_token_file(tmp_path):
    sa_dir, kubeconfig = _service_account(tmp_path, "token-1")
    refresher = token.KubeconfigRefresher(str(kubeconfig), service_account_dir=str(sa_dir), interval=0.05)
    assert refresher.refresh_once() is True
    assert refresher.refresh_once() is False                      # nothing changed: not rewritten
    written = json.loads(kubeconfig.read_text())
    assert written["users"][0]["user"]["token"] == "token-1"
    assert written["clusters"][0]["cluster"]["server"] == "https://10.96.0.1:443"
    assert "old-ca" not in kubeconfig.read_text() and oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    stop = threading.Event()
    thread = threading.Thread(target=refresher.run, args=(stop,))
    thread.start()
    try:
        for value in ("token-2", "token-3"):
            _rotate(sa_dir, value)
            _wait(f"kubeconfig holding {value}", lambda v=value: _token_in(kubeconfig) == v, timeout=30)
        (sa_dir / "token").unlink()                               # a failed read is retried, file kept
        time.sleep(0.2)
        assert _token_in(kubeconfig) == "token-3"
        _rotate(sa_dir, "token-4")
        _wait("kubeconfig holding token-4", lambda: _token_in(kubeconfig) == "token-4", timeout=30)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert not [p for p in kubeconfig.parent.iterdir() if p.name.startswith(".")]


def test_refresher_names_a_file_it_cannot_use(tmp_path):
    sa_dir, kubeconfig = _service_account(tmp_path, "token-1")
    kubeconfig.write_text("{not json")
    with pytest.raises(token.KubeconfigError, match=f"{kubeconfig}: not the JSON calyx-cni install writes"):
        token.KubeconfigRefresher(str(kubeconfig), service_account_dir=str(sa_dir)).refresh_once()
    assert kubeconfig.read_text() == "{not json"


def _pod(name: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]}}


@pytest.mark.timeout(300)
def test_felix_refreshes_the_cni_token_and_collects_deleted_nodes_blocks_and_leaked_addresses(cluster, tmp_path):
    sa_dir, kubeconfig = _service_account(tmp_path, "token-1")
    cluster.create_pool("pool-c", "10.97.0.0/24", block_size=28)
    cluster.create_node("zz-gone")           # node-a (felix's node) is the smallest name: it collects
    api = blocks.Api(kube_client.load(cluster.kubeconfig))
    blocks.BlockClaimer(api, cluster.node).claim_more()
    blocks.BlockClaimer(api, "zz-gone").claim_more()
    core = k8s.CoreV1Api(cluster.api)
    core.create_namespaced_pod("default", _pod("leftover", "zz-gone"))

    # An address this node's records hold for a pod that no longer exists (a sandbox lost without DEL).
    store = ipam.AddressStore(str(tmp_path / "run"))
    with store.locked():
        store.write(ipam.State(allocations=(ipam.Allocation(IPv4Address("10.97.0.5"), "lost", "eth0", "default",
                                                            "lost-pod", "cali0"),)))

    log_path = tmp_path / "felix.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "FELIX_", "CALYX_"))},
           "NODENAME": cluster.node, "KUBECONFIG": cluster.kubeconfig, "CALYX_RUN_DIR": str(tmp_path / "run"),
           "CALYX_LOG_LEVEL": "info", "CALYX_CNI_KUBECONFIG": str(kubeconfig), "CALYX_CNI_TOKEN_DIR": str(sa_dir),
           "FELIX_IPAMGCINTERVAL": "0.5", "FELIX_IPAMGCNODEGRACE": "2",
           "FELIX_IPAMGCLEAKGRACE": "1"}
    with open(log_path, "wb") as log:
        felix = subprocess.Popen(["ip", "netns", "exec", cluster.node_ns, str(FELIX)], env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait("the CNI kubeconfig holding the current token", lambda: _token_in(kubeconfig) == "token-1", log=log_path)
        _rotate(sa_dir, "token-2")
        _wait("the CNI kubeconfig holding the rotated token", lambda: _token_in(kubeconfig) == "token-2", log=log_path)

        core.delete_node("zz-gone")
        time.sleep(4)                        # twice the grace: only the pod still bound holds the block
        owners = sorted(b["spec"]["affinity"] for b in cluster.blocks())
        assert owners == ["host:node-a", "host:zz-gone"], log_path.read_text()[-3000:]
        core.delete_namespaced_pod("leftover", "default", grace_period_seconds=0)   # no kubelet to confirm
        _wait("the deleted node's block released",
              lambda: [b["spec"]["affinity"] for b in cluster.blocks()] == ["host:node-a"], log=log_path)
        assert "released block of deleted node" in log_path.read_text()
        _wait("the lost pod's address released", lambda: store.read().allocations == (), log=log_path)
        assert "released leaked address" in log_path.read_text()
        assert "token-2" not in log_path.read_text()         # credentials are never logged
    finally:
        felix.terminate()
        try:
            felix.wait(timeout=30)
        except subprocess.TimeoutExpired:
            felix.kill()
            felix.wait(timeout=30)
