"""The chart and the programs in the image agree: every setting the DaemonSet passes is one the
daemons read, and the install-cni init container, run with the rendered command and environment,
installs the plugin where the chart's values say."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
