"""pytest fixtures for tests that need a Kubernetes API but no lab (loaded by ``tests/conftest.py``).

- ``control_plane`` (session): one real control plane for the whole run (etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler), listening on every address of the host on a free
  port, with Calyx's CRDs installed. Started on first use (~10 s), stopped at the end.
- ``kube`` (function): a :class:`KubeAccess` on it — admin kubeconfig and clients, kubeconfigs
  for clients that dial another address (a test namespace's gateway) or act as a node — and a
  clean slate: what a test created (Calyx resources, Nodes, Pods, Secrets, Events) is deleted
  after it, so every test starts from an empty cluster but for the system's own objects.

A test that stops the API server (an outage) starts it again through :meth:`KubeAccess.restart_api`
or leaves it to the fixture, which restarts it before cleaning up.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from calyx.kube import client as kube_client
from calyx.kube import resources
from calyxlab import manifests
from calyxlab.controlplane import cluster, pki

CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "calyx" / "crds"
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
CALYX_KINDS = (resources.IPPOOLS, resources.BGPCONFIGURATIONS, resources.BGPPEERS, resources.IPAMBLOCKS)


@dataclass
class KubeAccess:
    """The session's control plane as one test sees it (see the module docstring)."""

    control_plane: cluster.ControlPlane
    workdir: Path

    @property
    def kubeconfig(self) -> Path:
        """Admin credentials, dialing the loopback."""
        return self.control_plane.admin_kubeconfig

    @property
    def port(self) -> int:
        return self.control_plane.ports.api

    def client(self) -> kubernetes.client.ApiClient:
        return kube_client.load(str(self.kubeconfig))

    def kubeconfig_at(self, address: str, name: str = "kubeconfig",
                      identity: pki.ClientIdentity = pki.ADMIN) -> Path:
        """A kubeconfig for ``identity`` dialing the API at ``address`` (any host address works:
        the server listens on all of them, and the certificate is checked by name)."""
        return self.control_plane.kubeconfig_for(identity, self.workdir / name, address=address)

    def node_kubeconfig(self, node: str, address: str = "127.0.0.1") -> Path:
        """``node``'s kubelet credentials (``system:node:NODE``)."""
        return self.kubeconfig_at(address, f"{node}.kubeconfig", pki.node_identity(node))

    def stop_api(self, *, grace: float = 3.0) -> None:
        """Stop kube-apiserver (etcd and the data stay): an API outage. SIGKILL follows SIGTERM
        after ``grace`` seconds: with watches open it may take longer than that to drain them."""
        self.control_plane.stop_component(cluster.APISERVER, grace=grace)

    def restart_api(self) -> None:
        """Start kube-apiserver again (if stopped) and wait until it serves."""
        if not self.control_plane.running(cluster.APISERVER):
            self.control_plane.start_component(cluster.APISERVER)
        self.control_plane.wait_api_ready()


def delete_test_objects(api: kubernetes.client.ApiClient) -> None:
    """Delete what tests create: Calyx resources, Nodes, and the Pods, Secrets and Events of
    every namespace but the system ones. Pods go at once (grace 0): no kubelet confirms."""
    custom = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    for kind in CALYX_KINDS:
        custom.delete_collection_cluster_custom_object(kind.group, kind.version, kind.plural)
    core.delete_collection_node()
    for ns in core.list_namespace().items:
        name = ns.metadata.name
        if name in SYSTEM_NAMESPACES:
            continue
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        core.delete_collection_namespaced_secret(name)
        core.delete_collection_namespaced_event(name)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> Iterator[cluster.ControlPlane]:
    cp = cluster.start(tmp_path_factory.mktemp("control-plane"), address="0.0.0.0")
    try:
        manifests.install_crds(str(cp.admin_kubeconfig), CRD_DIR)
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def kube(control_plane: cluster.ControlPlane, tmp_path: Path) -> Iterator[KubeAccess]:
    access = KubeAccess(control_plane, tmp_path)
    yield access
    access.restart_api()
    api = access.client()
    try:
        delete_test_objects(api)
    except ApiException as exc:      # a failed clean-up would leak into the next test: say so
        raise RuntimeError(f"cleaning the test cluster failed: {kube_client.describe_error(exc)}") from exc
    finally:
        api.close()

