"""``calyx-cni install``: puts the plugin where the container runtime looks for it.

Writes, atomically, ``<bin-dir>/calyx`` (an executable that runs this plugin with the given
Python interpreter), ``<conf-dir>/10-calyx.conflist`` (the network configuration list) and,
when running in a pod, ``<conf-dir>/calyx-kubeconfig`` built from the pod's service account
(the plugin runs on the host, outside the pod, so it needs its own credentials file).
The rendering functions are pure; :func:`run` does the writing.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from typing import Any, Mapping

from calyx import naming
from calyx.cni.config import PLUGIN_TYPE, SPEC_VERSION

CONFLIST_NAME = "10-calyx.conflist"
KUBECONFIG_NAME = "calyx-kubeconfig"
NETWORK_NAME = "k8s-pod-network"
HOST_CONF_DIR = "/etc/cni/net.d"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def render_conflist(*, nodename: str, kubeconfig: str, run_dir: str = naming.DEFAULT_RUN_DIR,
                    mtu: int | None = None, network_name: str = NETWORK_NAME) -> dict[str, Any]:
    plugin: dict[str, Any] = {"type": PLUGIN_TYPE, "kubeconfig": kubeconfig, "nodename": nodename,
                              "run_dir": run_dir}
    if mtu is not None:
        plugin["mtu"] = mtu
    return {"cniVersion": SPEC_VERSION, "name": network_name, "plugins": [plugin]}


def render_wrapper(python: str) -> str:
    return f'#!/bin/sh\n# Calyx CNI plugin\nexec {python} -m calyx.cni.plugin "$@"\n'


def render_kubeconfig(server: str, ca_data: bytes, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "calyx",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_data).decode()}}],
        "users": [{"name": "calyx-cni", "user": {"token": token}}],
        "contexts": [{"name": "calyx", "context": {"cluster": "local", "user": "calyx-cni"}}],
    }


def write_atomically(path: str, text: str, mode: int) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".calyx.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bin-dir", default=None, help="default: CNI_BIN_DIR, else /opt/cni/bin")
    parser.add_argument("--conf-dir", default=None, help="default: CNI_CONF_DIR, else /etc/cni/net.d")
    parser.add_argument("--conf-name", default=None, help=f"default: CNI_CONF_NAME, else {CONFLIST_NAME}")
    parser.add_argument("--nodename", default=None, help="default: NODENAME")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig path the plugin uses on the host (default: write "
                             f"<conf-dir>/{KUBECONFIG_NAME} from this pod's service account)")
    parser.add_argument("--run-dir", default=None, help="default: CALYX_RUN_DIR, else " + naming.DEFAULT_RUN_DIR)
    parser.add_argument("--mtu", type=int, default=None, help="default: read <run-dir>/mtu, written by felix")
    parser.add_argument("--python", default=sys.executable, help="interpreter the installed plugin runs with")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    nodename = args.nodename or environ.get("NODENAME")
    if not nodename:
        print("calyx-cni install: --nodename or NODENAME is required", file=sys.stderr)
        return 2
    bin_dir = args.bin_dir or environ.get("CNI_BIN_DIR") or "/opt/cni/bin"
    conf_dir = args.conf_dir or environ.get("CNI_CONF_DIR") or "/etc/cni/net.d"
    conf_name = args.conf_name or environ.get("CNI_CONF_NAME") or CONFLIST_NAME
    run_dir = args.run_dir or environ.get("CALYX_RUN_DIR") or naming.DEFAULT_RUN_DIR
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            print("calyx-cni install: --kubeconfig is required outside a pod (KUBERNETES_SERVICE_HOST unset)",
                  file=sys.stderr)
            return 2
        with open(os.path.join(SERVICE_ACCOUNT_DIR, "token"), encoding="utf-8") as f:
            token = f.read().strip()
        with open(os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt"), "rb") as fb:
            ca_data = fb.read()
        written = os.path.join(conf_dir, KUBECONFIG_NAME)
        # The plugin runs on the host, where conf_dir is mounted at its host path.
        kubeconfig = os.path.join(HOST_CONF_DIR, KUBECONFIG_NAME)
        server = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
        write_atomically(written, json.dumps(render_kubeconfig(server, ca_data, token), indent=2), 0o600)
    write_atomically(os.path.join(bin_dir, PLUGIN_TYPE), render_wrapper(args.python), 0o755)
    conflist = render_conflist(nodename=nodename, kubeconfig=kubeconfig, run_dir=run_dir, mtu=args.mtu)
    write_atomically(os.path.join(conf_dir, conf_name), json.dumps(conflist, indent=2) + "\n", 0o644)
    print(f"calyx-cni install: wrote {bin_dir}/{PLUGIN_TYPE} and {conf_dir}/{conf_name} for node {nodename}")
    return 0
