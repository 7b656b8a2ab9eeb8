"""``python -m calyxlab.kubelet --lab LAB --node NODE``: the lab's kubelet for one node."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from calyx.kube import client as kube_client
from calyxlab import mountpoints, nodeview
from calyxlab.lab import REPO_ROOT
from calyxlab.kubelet.node import NodeKubelet
from calyxlab.kubelet.records import Records
from calyxlab.kubelet.runtime import ContainerRuntime, image_roots, lab_image
from calyxlab.kubelet.volumes import VolumeManager, VolumeSource


def service_env(core) -> dict[str, str]:
    """KUBERNETES_SERVICE_HOST/PORT as kubelet gives every container (the kubernetes Service)."""
    from kubernetes.client.exceptions import ApiException
    try:
        svc = core.read_namespaced_service("kubernetes", "default")
    except ApiException:
        return {}
    port = next((p.port for p in svc.spec.ports or [] if p.name == "https"), 443)
    return {"KUBERNETES_SERVICE_HOST": svc.spec.cluster_ip, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calyxlab.kubelet")
    parser.add_argument("--lab", required=True)
    parser.add_argument("--node", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s node=" + args.node + " %(message)s")
    from kubernetes import client as k8s

    from calyxlab.lab import Lab
    lab = Lab.attach(args.lab)
    node = lab.topology.node(args.node)
    host_ip = lab.internal_ip(args.node) or str(lab.topology.mgmt_addresses[args.node])
    api = kube_client.load(str(lab.node_kubeconfig(args.node)))
    core = k8s.CoreV1Api(api)
    base = lab.names.kubelet_dir(args.node)
    node_dir = str(lab.names.node_run_dir(args.node))

    def host_path(path: str) -> VolumeSource:
        resolved = nodeview.host_path(lab.names, node, path)
        return VolumeSource(resolved, resolved == node_dir or resolved.startswith(node_dir + "/"))

    kubelet = NodeKubelet(
        node=args.node, host_ip=host_ip, core=core, coordination=k8s.CoordinationV1Api(api),
        runtime=ContainerRuntime(lab.backend, lab.names, node, Path(sys.executable).parent,
                                 service_env(core), lab_image(base / "image", sys.executable),
                                 image_roots(str(REPO_ROOT), sys.prefix, sys.base_prefix)),
        volumes=VolumeManager(core, base / "pods", host_path),
        records=Records(lab.names.kubelet_records(args.node)), log_dir=lab.names.log_dir(args.node),
        claim_mount_points=lambda paths: mountpoints.Registry().claim(args.lab, paths))
    signal.signal(signal.SIGTERM, lambda *_: kubelet.stop())
    signal.signal(signal.SIGINT, lambda *_: kubelet.stop())
    logging.getLogger("calyxlab.kubelet").info("kubelet for node %s (%s) running", args.node, host_ip)
    kubelet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
