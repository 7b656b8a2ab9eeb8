"""The lab installs Calyx as a user does: ``helm install`` of ``charts/calyx`` into its API.

:func:`lab_values` (pure) says what the lab sets: the daemons reach the API server directly
(most scenarios run no kube-proxy, and the pod network must not depend on Services), and the
chart renders its default IPPool and BGPConfiguration unless the scenario's ``cluster.yaml``
brings its own. A scenario may also carry chart values of its own (``values.yaml`` beside the
topology file), applied after the lab's. :func:`install` and :func:`uninstall` run the real ``helm``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from calyxlab.tools import REPO_ROOT, find_tool

CHART_DIR = REPO_ROOT / "charts" / "calyx"
RELEASE = "calyx"
SCENARIO_VALUES = "values.yaml"
HELM_TIMEOUT = 180.0


class ChartError(RuntimeError):
    """helm refused or failed; the message carries its output."""


def lab_values(api_host: str, api_port: int, scenario_docs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The values the lab installs the chart with (pure)."""
    kinds = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in scenario_docs}
    values: dict[str, Any] = {
        "kubernetesServiceEndpoint": {"host": api_host, "port": str(api_port)}}
    if any(kind == "IPPool" for kind, _ in kinds):
        values["ipPool"] = {"create": False}
    if ("BGPConfiguration", "default") in kinds:
        values["bgp"] = {"createConfiguration": False}
    return values


def _helm(kubeconfig: str, *args: str) -> str:
    argv = [find_tool("helm"), "--kubeconfig", kubeconfig, *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=HELM_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ChartError(f"helm {' '.join(args)}: no answer within {HELM_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        raise ChartError(f"helm {' '.join(args)} exited {proc.returncode}: "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def scenario_values(topology_file: Path) -> Path | None:
    """The chart values beside a topology file (``values.yaml``), if there are any."""
    candidate = topology_file.parent / SCENARIO_VALUES
    return candidate if candidate.is_file() else None


def install(kubeconfig: str, namespace: str, values: Mapping[str, Any], values_file: Path,
            extra_values: Iterable[Path] = ()) -> str:
    """``helm install calyx charts/calyx -n NAMESPACE --create-namespace -f VALUES [-f EXTRA]``
    (later files win, as with helm)."""
    values_file.parent.mkdir(parents=True, exist_ok=True)
    values_file.write_text(yaml.safe_dump(dict(values), sort_keys=True))
    files = [arg for path in (values_file, *extra_values) for arg in ("-f", str(path))]
    return _helm(kubeconfig, "install", RELEASE, str(CHART_DIR), "--namespace", namespace,
                 "--create-namespace", *files)


def upgrade(kubeconfig: str, namespace: str, sets: Iterable[str]) -> str:
    """``helm upgrade calyx charts/calyx --reuse-values --set ...``."""
    args = [arg for item in sets for arg in ("--set", item)]
    return _helm(kubeconfig, "upgrade", RELEASE, str(CHART_DIR), "--namespace", namespace,
                 "--reuse-values", *args)


def uninstall(kubeconfig: str, namespace: str) -> str:
    return _helm(kubeconfig, "uninstall", RELEASE, "--namespace", namespace, "--wait")
