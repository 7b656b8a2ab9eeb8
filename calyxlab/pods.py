"""Pods in the lab, made the way kubelet makes them: a network namespace for the sandbox, the
Calyx CNI plugin called with CNI_COMMAND=ADD inside the node (so it runs on the node's kernel,
UML included) - on a node whose Calyx runs from the chart's DaemonSet, the plugin and
configuration its install-cni put in the node's /opt/cni/bin and /etc/cni/net.d, so the
plugin uses the chart's calyx-cni-plugin identity; elsewhere the virtualenv's plugin, with a
token of that same ServiceAccount - then the Pod's status (podIP/podIPs, Running) written with the node's kubelet
credentials, as the Node authorizer allows for a pod bound to that node.
Deleting is the reverse: DEL, the namespace removed, the Pod deleted.

A pod's namespace is ``clab-<lab>-<node>-pod-<namespace>-<name>``: inside the lab's own prefix,
so ``calyx-lab destroy`` removes pods left behind. ``calyx-lab pod add|del|exec|list`` is the
command-line face (:func:`register` adds it to the ``calyx-lab`` parser).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from calyx.kube import client as kube_client

if TYPE_CHECKING:
    from calyxlab.backend import Result
    from calyxlab.lab import Lab

CNI_IFNAME = "eth0"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"
CONFLIST_NAME = "10-calyx.conflist"
CNI_TIMEOUT_S = 120.0
NETNS_NAME_MAX = 200          # well under NAME_MAX; longer names are shortened with a hash
POD_IMAGE = "calyx/lab-pod"


class PodError(RuntimeError):
    """A pod the lab could not create or delete; the message names pod, node and cause."""


def pod_netns(lab_name: str, node: str, namespace: str, name: str) -> str:
    """The sandbox namespace of a pod (pure)."""
    full = f"clab-{lab_name}-{node}-pod-{namespace}-{name}"
    if len(full) <= NETNS_NAME_MAX:
        return full
    digest = hashlib.sha1(full.encode()).hexdigest()[:12]
    return f"{full[:NETNS_NAME_MAX - 13]}-{digest}"


def container_id(lab_name: str, node: str, namespace: str, name: str) -> str:
    """A stable sandbox ID per pod, so add and delete agree without remembering it (pure)."""
    return hashlib.sha256(f"{lab_name}/{node}/{namespace}/{name}".encode()).hexdigest()[:32]


def netconf(kubeconfig: str, node: str, run_dir: str) -> dict:
    """The network configuration kubelet's runtime would pass (what `calyx-cni install` writes)."""
    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calyx",
            "kubeconfig": kubeconfig, "nodename": node, "run_dir": run_dir}


def cni_env(command: str, cid: str, netns_path: str, namespace: str, name: str) -> dict[str, str]:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns_path,
            "CNI_IFNAME": CNI_IFNAME, "CNI_PATH": CNI_BIN_DIR,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"}


def pod_body(namespace: str, name: str, node: str, labels: Mapping[str, str] | None = None,
             ports: Sequence[Mapping] = ()) -> dict:
    """The Pod as created; its labels are ``app: NAME`` unless given (a Service selects them),
    its container declares ``ports`` (NetworkPolicy's named ports refer to them)."""
    container: dict = {"name": "main", "image": POD_IMAGE}
    if ports:
        container["ports"] = [dict(p) for p in ports]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": dict(labels) if labels else {"app": name}},
            "spec": {"nodeName": node, "containers": [container]}}


def _plugin_argv() -> list[str]:
    return [str(Path(sys.executable).parent / "calyx-cni")]


def installed_netconf(lab: "Lab", node: str) -> dict:
    """The network configuration the chart's install-cni wrote on ``node``, as the container
    runtime hands it to the plugin (the conflist's name and version, its plugin's fields)."""
    res = lab.exec(node, ["cat", f"{CNI_CONF_DIR}/{CONFLIST_NAME}"])
    if res.returncode != 0:
        raise PodError(f"node {node}: no {CNI_CONF_DIR}/{CONFLIST_NAME} (has the calyx pod's "
                       f"install-cni run there?): {res.stderr.strip()}")
    conflist = json.loads(res.stdout)
    return {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}


def _call_plugin(lab: "Lab", node: str, command: str, namespace: str, name: str) -> "Result":
    if lab.runs_kubelet(node):
        # As a container runtime does: the conflist and the plugin install-cni put on the node.
        conf = installed_netconf(lab, node)
        argv = [f"{CNI_BIN_DIR}/{conf['type']}"]
    else:
        from calyxlab.lab import CNI_SERVICE_ACCOUNT
        conf = netconf(str(lab.service_account_kubeconfig(CNI_SERVICE_ACCOUNT)), node,
                       lab.node_env(node)["CALYX_RUN_DIR"])
        argv = _plugin_argv()
    netns = pod_netns(lab.name, node, namespace, name)
    return lab.exec(node, argv, timeout=CNI_TIMEOUT_S, input=json.dumps(conf),
                    env={**cni_env(command, container_id(lab.name, node, namespace, name),
                                   f"/var/run/netns/{netns}", namespace, name),
                         "CALYX_LOG_LEVEL": "warning"})


def _plugin_error(res: "Result") -> str:
    try:
        body = json.loads(res.stdout)
        return f"CNI error {body.get('code')}: {body.get('msg')}"
    except ValueError:
        return (res.stderr or res.stdout).strip()[-2000:]


def _core(lab: "Lab", node: str | None = None):
    """The core API as the lab's admin, or as ``node``'s kubelet (what writes a pod's status)."""
    from kubernetes import client as k8s
    kubeconfig = lab.node_kubeconfig(node) if node else lab.kubeconfig
    return k8s.CoreV1Api(kube_client.load(str(kubeconfig)))


def _create_api_pod(core, namespace: str, name: str, node: str,
                    labels: Mapping[str, str] | None, ports: Sequence[Mapping] = ()) -> None:
    """Create the Pod (waiting out a brand-new namespace's missing ServiceAccount); one that
    exists already is fine."""
    from kubernetes.client.exceptions import ApiException

    from calyxlab.controlplane.cluster import create_once_admitted
    try:
        create_once_admitted(lambda: core.create_namespaced_pod(namespace, pod_body(namespace, name, node, labels, ports)))
    except ApiException as exc:
        if exc.status != 409:
            raise PodError(f"pod {namespace}/{name}: API create failed: {exc.status} "
                           f"{exc.reason}: {exc.body}") from None


def _ensure_namespace(core, namespace: str) -> None:
    """Create the Kubernetes Namespace if it is missing (as an operator would before a Pod)."""
    from kubernetes.client.exceptions import ApiException
    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    except ApiException as exc:
        if exc.status != 409:
            raise PodError(f"Namespace {namespace!r}: create failed: {exc.status} {exc.reason}") from None


def add_pod(lab: "Lab", node: str, namespace: str, name: str,
            labels: Mapping[str, str] | None = None, ports: Sequence[Mapping] = ()) -> str:
    """Create pod ``namespace/name`` on ``node``; returns its IPv4 address.

    The order is kubelet's: the Pod exists in the API, scheduled to the node, before its
    sandbox is wired (felix then knows the cali device belongs to a pod still being set up and
    leaves the CNI plugin's route alone); its address is reported once ADD has returned.
    """
    if node not in lab.nodes:
        raise PodError(f"pod {namespace}/{name}: node {node!r} is not in lab {lab.name!r}")
    core = _core(lab)
    _ensure_namespace(core, namespace)
    _create_api_pod(core, namespace, name, node, labels, ports)
    netns = pod_netns(lab.name, node, namespace, name)
    res = lab.run_root(["ip", "netns", "add", netns])
    if res.returncode != 0:
        _delete_api_pod(core, namespace, name)
        raise PodError(f"pod {namespace}/{name}: cannot create namespace {netns}: {res.stderr.strip()}")
    try:
        lab.run_root(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        res = _call_plugin(lab, node, "ADD", namespace, name)
        if res.returncode != 0:
            raise PodError(f"pod {namespace}/{name} on node {node}: ADD failed: {_plugin_error(res)}")
        address = json.loads(res.stdout)["ips"][0]["address"].split("/")[0]
        _core(lab, node).patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": "Running", "podIP": address, "podIPs": [{"ip": address}],
            "conditions": [{"type": "Ready", "status": "True"}]}})
        return address
    except BaseException:
        _call_plugin(lab, node, "DEL", namespace, name)
        lab.run_root(["ip", "netns", "del", netns])
        _delete_api_pod(core, namespace, name)
        raise


def _delete_api_pod(core, namespace: str, name: str) -> None:
    from kubernetes.client.exceptions import ApiException
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise PodError(f"pod {namespace}/{name}: API delete failed: {exc.status} {exc.reason}") from None


def pod_node(lab: "Lab", namespace: str, name: str) -> str:
    """The node a pod was scheduled to (from the API)."""
    from kubernetes.client.exceptions import ApiException
    try:
        pod = _core(lab).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        raise PodError(f"pod {namespace}/{name}: not found in the API ({exc.status})") from None
    if not pod.spec or not pod.spec.node_name:
        raise PodError(f"pod {namespace}/{name}: spec.nodeName is not set")
    return pod.spec.node_name


def delete_pod(lab: "Lab", namespace: str, name: str, node: str | None = None) -> None:
    """DEL through the plugin, remove the sandbox namespace, delete the Pod. Idempotent."""
    node = node or pod_node(lab, namespace, name)
    res = _call_plugin(lab, node, "DEL", namespace, name)
    if res.returncode != 0:
        raise PodError(f"pod {namespace}/{name} on node {node}: DEL failed: {_plugin_error(res)}")
    netns = pod_netns(lab.name, node, namespace, name)
    if netns in list_pod_namespaces(lab):
        lab.run_root(["ip", "netns", "del", netns], check=True)
    _delete_api_pod(_core(lab), namespace, name)


def list_pod_namespaces(lab: "Lab") -> list[str]:
    res = lab.run_root(["ip", "netns", "list"], check=True)
    prefix = f"clab-{lab.name}-"
    return [line.split()[0] for line in res.stdout.splitlines()
            if line.split() and line.split()[0].startswith(prefix) and "-pod-" in line.split()[0]]


def exec_pod(lab: "Lab", node: str, namespace: str, name: str, argv: Sequence[str],
             timeout: float | None = 60.0) -> "Result":
    """Run ``argv`` in the pod's network namespace (e.g. ping another pod)."""
    return lab.run_root(["ip", "netns", "exec", pod_netns(lab.name, node, namespace, name), *argv],
                        timeout=timeout)


# --- calyx-lab pod ... ----------------------------------------------------------------------

def _split_ref(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep:
        namespace, name = "default", ref
    if not namespace or not name:
        raise SystemExit(f"calyx-lab pod: {ref!r}: want NAMESPACE/NAME")
    return namespace, name


def _split_label(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise SystemExit(f"calyx-lab pod add: --label {raw!r}: give KEY=VALUE")
    return key, value


def _attach(args: argparse.Namespace) -> "Lab":
    from calyxlab import cli
    from calyxlab.lab import Lab
    return Lab.attach(cli._lab_name(args))


def _cmd_add(args: argparse.Namespace) -> int:
    namespace, name = _split_ref(args.pod)
    labels = dict(_split_label(label) for label in args.label)
    address = add_pod(_attach(args), args.node, namespace, name, labels or None)
    print(f"pod {namespace}/{name} on {args.node}: {address}")
    return 0


def _cmd_del(args: argparse.Namespace) -> int:
    namespace, name = _split_ref(args.pod)
    delete_pod(_attach(args), namespace, name, args.node)
    print(f"pod {namespace}/{name} deleted")
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    namespace, name = _split_ref(args.pod)
    command = [c for c in args.command]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("calyx-lab pod exec: give the command after --")
    lab = _attach(args)
    res = exec_pod(lab, args.node or pod_node(lab, namespace, name), namespace, name, command, timeout=None)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


def _cmd_list(args: argparse.Namespace) -> int:
    lab = _attach(args)
    for pod in _core(lab).list_pod_for_all_namespaces().items:
        print(f"{pod.metadata.namespace}/{pod.metadata.name}\t{pod.spec.node_name}\t"
              f"{(pod.status.pod_ip if pod.status else None) or '-'}\t{(pod.status.phase if pod.status else None) or '-'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pod add|del|exec|list`` to the ``calyx-lab`` command line."""
    pod = subparsers.add_parser("pod", help="pods made as kubelet would: pod add|del|exec|list")
    verbs = pod.add_subparsers(dest="pod_verb", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-t", "--topo", help="topology file (*.clab.yml)")
        p.add_argument("--name", help="lab name (overrides the topology's name)")

    p = verbs.add_parser("add", help="create a pod on a node: pod add -t FILE --node N NAMESPACE/NAME")
    common(p)
    p.add_argument("--node", required=True)
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label of the Pod (repeatable; default app=NAME)")
    p.add_argument("pod")
    p.set_defaults(func=_cmd_add)
    p = verbs.add_parser("del", help="delete a pod: pod del -t FILE NAMESPACE/NAME")
    common(p)
    p.add_argument("--node", help="default: the Pod's spec.nodeName")
    p.add_argument("pod")
    p.set_defaults(func=_cmd_del)
    p = verbs.add_parser("exec", help="run a command in a pod: pod exec -t FILE NAMESPACE/NAME -- CMD...")
    common(p)
    p.add_argument("--node", help="default: the Pod's spec.nodeName")
    p.add_argument("pod")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_exec)
    p = verbs.add_parser("list", help="the lab's pods with node, address and phase")
    common(p)
    p.set_defaults(func=_cmd_list)
