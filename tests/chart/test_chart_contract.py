"""The chart and the programs in the image agree: every setting the DaemonSet passes is one the
daemons read, the CNI plugin's token is mounted where install-cni and felix read it, and the
install-cni init container, run with the rendered command and environment, installs the plugin
where the chart's values say."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from calyx.cni import install as cni_install
from calyx.config import DaemonConfig
from chart_support import Helm
from felix.config import FelixConfig

KUBERNETES_CLIENT_ENV = {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}


def _containers(helm: Helm, sets: list[str]) -> dict[str, dict[str, Any]]:
    pod = helm.template(sets=sets).one("DaemonSet")["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["initContainers"] + pod["containers"]}


def test_daemon_environment_is_read_by_the_daemons(helm: Helm) -> None:
    containers = _containers(helm, ["kubernetesServiceEndpoint.host=10.0.0.10"])
    for name, config in (("felix", FelixConfig), ("bgpd", DaemonConfig)):
        known = {f.metadata["env"] for f in dataclasses.fields(config) if "env" in f.metadata}
        names = {e["name"] for e in containers[name]["env"]}
        assert names - KUBERNETES_CLIENT_ENV <= known, f"{name}: unknown settings {names - known}"
        assert KUBERNETES_CLIENT_ENV <= names


def test_install_cni_with_rendered_environment(helm: Helm, tmp_path: Path) -> None:
    containers = _containers(helm, ["cni.conflistName=05-calyx.conflist", "runDir=/var/run/calyx-test"])
    init = containers["install-cni"]
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in init["volumeMounts"]}
    env = {"PATH": os.environ["PATH"]}
    for item in init["env"]:
        if "value" in item:
            value = item["value"]
            env[item["name"]] = str(mounts.get(value, value))     # host mounts -> temp directories
        elif item["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName":
            env[item["name"]] = "node-a"
        else:
            env[item["name"]] = "calyx-system"
    # The image's plugin bundle: a stand-in with the same layout (tests/cni builds the real one).
    bundle = tmp_path / "cni-plugin"
    (bundle / "_internal").mkdir(parents=True)
    (bundle / "calyx").write_text("#!/bin/sh\n")
    (bundle / "calyx").chmod(0o755)
    args = init["command"][1:]
    assert init["command"][0] == "calyx-cni" and args[args.index("--plugin-dir") + 1] == "/opt/calyx/cni-plugin"
    args[args.index("--plugin-dir") + 1] = str(bundle)
    command = [sys.executable, "-m", "calyx.cni.plugin", *args]
    # Outside a pod there is no service account to build the kubeconfig from: name one.
    proc = subprocess.run([*command, "--kubeconfig", "/etc/cni/net.d/calyx-kubeconfig"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    conf_dir, bin_dir = tmp_path / "cni-net-dir", tmp_path / "cni-bin-dir"
    conflist = json.loads((conf_dir / "05-calyx.conflist").read_text())
    plugin = conflist["plugins"][0]
    assert plugin["type"] == "calyx" and plugin["nodename"] == "node-a"
    assert plugin["run_dir"] == "/var/run/calyx-test"
    assert os.access(bin_dir / "calyx", os.X_OK) and (bin_dir / "calyx").is_symlink()
    assert (bin_dir / "calyx").resolve().parent.parent == bin_dir / "calyx.d"


def _env_of(setting: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(FelixConfig) if f.name == setting)


def test_cni_plugin_token_is_where_install_cni_and_felix_read_it(helm: Helm) -> None:
    containers = _containers(helm, [])
    mounts = {name: {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])} for name, c in containers.items()}
    # install-cni builds calyx-kubeconfig from the token at the service-account path ...
    assert mounts["install-cni"][cni_install.SERVICE_ACCOUNT_DIR] == "cni-plugin-token"
    init_env = {e["name"]: e.get("value") for e in containers["install-cni"]["env"]}
    written = f"{init_env['CNI_CONF_DIR']}/{cni_install.KUBECONFIG_NAME}"
    # ... and felix rewrites that same file from the same token.
    felix_env = {e["name"]: e.get("value") for e in containers["felix"]["env"]}
    assert felix_env[_env_of("cni_kubeconfig")] == written
    assert mounts["felix"][felix_env[_env_of("cni_token_dir")]] == "cni-plugin-token"
    assert mounts["felix"][init_env["CNI_CONF_DIR"]] == mounts["install-cni"][init_env["CNI_CONF_DIR"]] == "cni-net-dir"
    # felix's own API credentials stay the pod's: nothing of the chart's sits at that path.
    for daemon in ("felix", "bgpd"):
        assert cni_install.SERVICE_ACCOUNT_DIR not in mounts[daemon], daemon
