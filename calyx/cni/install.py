"""``calyx-cni install``: puts the plugin where the container runtime looks for it.

Writes, atomically:

* the plugin. With ``--plugin-dir`` (the node image's self-contained bundle, see
  :mod:`calyx.cni.bundle`) the bundle directory is copied to ``<bin-dir>/calyx.d/<digest>/``
  and ``<bin-dir>/calyx`` becomes a symbolic link to its executable, switched by a rename, so a
  runtime calling the plugin meanwhile runs either the old or the new one, never half of one.
  Without it, ``<bin-dir>/calyx`` is a small script running ``<python> -m calyx.cni.plugin``
  (the lab and development, where that interpreter exists on the host);
* ``<conf-dir>/10-calyx.conflist`` (the network configuration list);
* when running in a pod, ``<conf-dir>/calyx-kubeconfig`` built from the pod's service account
  (the plugin runs on the host, outside the pod, so it needs its own credentials file; felix
  keeps its token fresh, see :mod:`calyx.cni.token`).

The rendering functions are pure; :func:`run` and :func:`install_bundle` do the writing.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from calyx import naming
from calyx.cni.config import PLUGIN_TYPE, SPEC_VERSION

CONFLIST_NAME = "10-calyx.conflist"
KUBECONFIG_NAME = "calyx-kubeconfig"
NETWORK_NAME = "k8s-pod-network"
HOST_CONF_DIR = "/etc/cni/net.d"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
BUNDLE_DIR_SUFFIX = ".d"            # <bin-dir>/calyx.d/<digest>/ holds installed bundles
KEEP_BUNDLES = 2                    # the current one and the one it replaced (calls may still run it)


def render_conflist(*, nodename: str, kubeconfig: str, run_dir: str = naming.DEFAULT_RUN_DIR,
                    mtu: int | None = None, network_name: str = NETWORK_NAME) -> dict[str, Any]:
    plugin: dict[str, Any] = {"type": PLUGIN_TYPE, "kubeconfig": kubeconfig, "nodename": nodename,
                              "run_dir": run_dir}
    if mtu is not None:
        plugin["mtu"] = mtu
    return {"cniVersion": SPEC_VERSION, "name": network_name, "plugins": [plugin]}


def render_wrapper(python: str) -> str:
    return f'#!/bin/sh\n# Calyx CNI plugin\nexec {python} -m calyx.cni.plugin "$@"\n'


class InstallError(Exception):
    """The installation cannot proceed; the message names the option and value at fault."""


def bundle_digest(plugin_dir: Path) -> str:
    """A digest of every file of a bundle (relative path, mode bit x and content)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in plugin_dir.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(plugin_dir).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"L" + os.readlink(path).encode())
        else:
            digest.update(b"X" if os.access(path, os.X_OK) else b"F")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def install_bundle(plugin_dir: Path, bin_dir: Path, name: str = PLUGIN_TYPE) -> Path:
    """Install a bundle directory (executable ``<name>`` inside) as ``<bin_dir>/<name>``.

    Idempotent: the same bundle installed again only re-points the link. Returns the
    installed executable's path.
    """
    exe = plugin_dir / name
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise InstallError(f"--plugin-dir {plugin_dir}: no executable {name!r} in it (not a plugin bundle)")
    versions = bin_dir / (name + BUNDLE_DIR_SUFFIX)
    versions.mkdir(parents=True, exist_ok=True)
    digest = bundle_digest(plugin_dir)
    target = versions / digest
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=versions))
        try:
            shutil.copytree(plugin_dir, staging / "tree", symlinks=True)
            os.rename(staging / "tree", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    entry = bin_dir / name
    previous = os.readlink(entry) if entry.is_symlink() else None
    link_tmp = bin_dir / f".{name}.{os.getpid()}.link"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    relative = f"{versions.name}/{digest}/{name}"
    os.symlink(relative, link_tmp)
    os.rename(link_tmp, entry)          # replaces a previous link or wrapper script atomically
    keep = {digest} | ({Path(previous).parent.name} if previous else set())
    for old in versions.iterdir():
        if old.name not in keep and not old.name.startswith(".staging."):
            shutil.rmtree(old, ignore_errors=True)
    return entry


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
    parser.add_argument("--plugin-dir", default=None,
                        help="install this self-contained plugin bundle (the node image has one in "
                             "/opt/calyx/cni-plugin) instead of a script running --python")
    parser.add_argument("--python", default=sys.executable,
                        help="without --plugin-dir: the interpreter the installed plugin script runs with")


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
    if args.plugin_dir:
        try:
            installed = install_bundle(Path(args.plugin_dir), Path(bin_dir))
        except (InstallError, OSError) as exc:
            print(f"calyx-cni install: {exc}", file=sys.stderr)
            return 1
        print(f"calyx-cni install: plugin bundle {args.plugin_dir} installed as {installed} -> "
              f"{os.readlink(installed)}")
    else:
        write_atomically(os.path.join(bin_dir, PLUGIN_TYPE), render_wrapper(args.python), 0o755)
    conflist = render_conflist(nodename=nodename, kubeconfig=kubeconfig, run_dir=run_dir, mtu=args.mtu)
    write_atomically(os.path.join(conf_dir, conf_name), json.dumps(conflist, indent=2) + "\n", 0o644)
    print(f"calyx-cni install: wrote {bin_dir}/{PLUGIN_TYPE} and {conf_dir}/{conf_name} for node {nodename}")
    return 0
