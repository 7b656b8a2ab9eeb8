"""felix's ServiceAccount token stops being valid, then the kubelet writes a new one: felix runs
with the in-cluster configuration (the token and CA files a pod gets, mounted where every pod
has them, in felix's own mount namespace) and its token is bound to an object that is then
deleted, so the API refuses it with 401 once felix dials again (an API restart makes it). felix keeps every route and stays live; once the new
token is in the file it reads it and follows the API again, without a restart."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import kubernetes.client
import pytest

from calyxlab.controlplane.kubeconfig import SERVER_NAME
from felixtest_support import FELIX, NODE, ROUTED_PODS, RUNNING_PODS, Bed, FelixProcess, routes_once_web1_is_gone, wait_for

# About two minutes, most of it the client's minute between reads of the token file: full suite only.
pytestmark = [pytest.mark.lab, pytest.mark.fault, pytest.mark.fault_full]

ACCOUNT = "felix-token-test"
IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The kubernetes client re-reads an in-cluster token file at most once a minute.
REREAD_S = 60.0


def bound_token(bed: Bed, anchor: str) -> str:
    """A token of ServiceAccount ACCOUNT that is valid while Secret ``anchor`` exists."""
    core = bed.core
    secret = core.create_namespaced_secret("default", {"metadata": {"name": anchor}})
    issued = core.create_namespaced_service_account_token(ACCOUNT, "default", {
        "spec": {"audiences": [], "expirationSeconds": 3600,
                 "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": anchor,
                                    "uid": secret.metadata.uid}}})
    return issued.status.token


def start_in_cluster_felix(bed: Bed, secrets_dir: Path) -> FelixProcess:
    """felix in the bed's namespace with ``secrets_dir`` mounted where a pod's ServiceAccount
    files are, in a mount namespace of its own (the host's paths are left alone). It dials the
    API by the name its certificate carries, which that namespace's hosts file resolves."""
    log_path = bed.workdir / "felix-in-cluster.log"
    hosts = bed.workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{bed.host_ip} {SERVER_NAME}\n")
    script = (f"mount -t tmpfs tmpfs /run && mkdir -p {IN_CLUSTER_DIR} && "
              f"mount --bind {secrets_dir} {IN_CLUSTER_DIR} && mount --bind {hosts} /etc/hosts && exec {FELIX}")
    environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    environ.update({"NODENAME": NODE, "KUBERNETES_SERVICE_HOST": SERVER_NAME,
                    "KUBERNETES_SERVICE_PORT": str(bed.kube.port), "CALYX_RUN_DIR": str(bed.run_dir),
                    "CALYX_HEALTH_HOST": "0.0.0.0", "CALYX_LOG_LEVEL": "info",
                    "FELIX_ROUTEREFRESHINTERVAL": "3600"})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", bed.netns, "unshare", "--mount", "sh", "-c", script],
                                env=environ, stdout=log, stderr=subprocess.STDOUT)
    felix = FelixProcess(proc, log_path)
    bed.felixes.append(felix)
    return felix


def write_token(secrets_dir: Path, token: str) -> None:
    """Replace the token file atomically, as the kubelet does."""
    tmp = secrets_dir / ".token.tmp"
    tmp.write_text(token)
    os.replace(tmp, secrets_dir / "token")


def test_a_revoked_token_then_a_new_one_keeps_every_route(bed: Bed, tmp_path: Path, fault_record) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(bed.api)
    bed.core.create_namespaced_service_account("default", {"metadata": {"name": ACCOUNT}})
    rbac.create_cluster_role_binding({
        "metadata": {"name": ACCOUNT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": "default"}]})
    try:
        bed.create_node()
        bed.put_pool()
        for pod, pod_ip in ROUTED_PODS.items():
            bed.add_pod_link(pod)
            bed.create_pod(pod, pod_ip)
        residents = {pod: bed.add_running_pod(pod, pod_ip) for pod, pod_ip in RUNNING_PODS.items()}
        secrets_dir = tmp_path / "serviceaccount"
        secrets_dir.mkdir()
        (secrets_dir / "ca.crt").write_bytes(bed.kube.control_plane.pki.ca.cert.read_bytes())
        (secrets_dir / "namespace").write_text("default")
        write_token(secrets_dir, bound_token(bed, "felix-token-a"))
        felix = start_in_cluster_felix(bed, secrets_dir)
        bed.wait_ready(felix)
        wait_for("routes", lambda: len(bed.felix_routes()) == 3 + len(RUNNING_PODS))
        programmed = sorted(bed.felix_routes())
        writes = bed.metric("felix_netlink_writes_total")
        with fault_record.case("felix's ServiceAccount token revoked (401), a new one written later",
                               "every route kept, 0 writes, live, 0 lost; new token read without restart") as case:
            with bed.pings(residents) as pings:
                bed.core.delete_namespaced_secret("felix-token-a", "default")    # token A now refused
                new_token = bound_token(bed, "felix-token-b")
                # watches opened with token A outlive it; an API restart makes felix dial again
                bed.kube.stop_api()
                bed.kube.restart_api()
                wait_for("felix refused with its old token", lambda: "401" in felix.log(), timeout=60)
                bed.delete_pod("web-1")          # felix cannot learn this with token A
                until = time.monotonic() + REREAD_S + 10   # past felix's next read of the old file
                while time.monotonic() < until:
                    assert sorted(bed.felix_routes()) == programmed, "routes changed while the token was refused"
                    assert bed.http("/livez")[0] == 200, "felix not live while its token was refused"
                    time.sleep(5)
                case.route_writes = int(bed.metric("felix_netlink_writes_total") - writes)
                assert case.route_writes == 0
                write_token(secrets_dir, new_token)
                renewed = time.monotonic()
                wait_for("web-1's route removed with the new token",
                         lambda: set(bed.felix_routes()) == routes_once_web1_is_gone(),
                         timeout=REREAD_S + 60)
                case.recovery_s = time.monotonic() - renewed
            pings.record(case)
            assert felix.proc.poll() is None, "felix restarted"
    finally:
        rbac.delete_cluster_role_binding(ACCOUNT)
        bed.core.delete_namespaced_service_account(ACCOUNT, "default")
