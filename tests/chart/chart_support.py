"""Support for the Helm chart tests: the real helm and kubectl binaries, rendering the chart into
parsed manifests, and a release of it on a real API server. A missing helm or kubectl is a
failure (they are part of the toolchain), never a skip."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytest
import yaml

from calyx.cni import install as cni_install
from calyxlab.controlplane import cluster
from calyxlab.pytest_plugin import wait_for
from calyxlab.tools import ToolNotFound, find_tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "calyx"
CRD_DIR = CHART / "crds"
EXAMPLE_VALUES = REPO / "charts" / "values"
TEST_VALUES = Path(__file__).resolve().parent / "values"
NAMESPACE = "calyx-system"


def _find(name: str) -> str:
    try:
        return find_tool(name)
    except ToolNotFound as exc:
        pytest.fail(str(exc), pytrace=False)


def find_helm() -> str:
    return _find("helm")


def find_kubectl() -> str:
    return _find("kubectl")


@dataclass(frozen=True)
class Rendered:
    """The manifests of one `helm template` run."""

    documents: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
        return found[0]


@dataclass(frozen=True)
class Helm:
    binary: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    @staticmethod
    def _value_args(values: Sequence[Path], sets: Sequence[str]) -> list[str]:
        args: list[str] = []
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        return args

    def template(self, values: Sequence[Path] = (), sets: Sequence[str] = (), *,
                 include_crds: bool = False, release: str = "calyx",
                 namespace: str = NAMESPACE) -> Rendered:
        args = ["template", release, str(CHART), "--namespace", namespace, *self._value_args(values, sets)]
        if include_crds:
            args.append("--include-crds")
        text = self.run(*args).stdout
        return Rendered(tuple(d for d in yaml.safe_load_all(text) if d))

    def template_error(self, values: Sequence[Path] = (), sets: Sequence[str] = ()) -> str:
        """helm template that must fail; returns its error output."""
        proc = self.run("template", "calyx", str(CHART), "--namespace", NAMESPACE,
                        *self._value_args(values, sets), check=False)
        assert proc.returncode != 0, f"helm template accepted bad values {values} {sets}:\n{proc.stdout[:2000]}"
        return proc.stderr

    def lint(self, values: Sequence[Path] = ()) -> subprocess.CompletedProcess[str]:
        return self.run("lint", "--strict", str(CHART), *self._value_args(values, ()), check=False)

    def notes(self, values: Sequence[Path] = (), sets: Sequence[str] = (), namespace: str = NAMESPACE) -> str:
        text = self.run("install", "calyx", str(CHART), "--dry-run=client", "--namespace", namespace,
                        *self._value_args(values, sets)).stdout
        assert "NOTES:" in text, text
        return text.split("NOTES:", 1)[1]


# The values files every rendering test runs over: the defaults plus the documented examples.
SCENARIOS = {
    "defaults": (),
    "bgp-only": (EXAMPLE_VALUES / "bgp-only.yaml",),
    "route-reflectors": (EXAMPLE_VALUES / "route-reflectors.yaml",),
    "external-peers": (EXAMPLE_VALUES / "external-peers.yaml",),
}


# ---------------------------------------------------------------------------------------------
# A real API server: kubectl, and one release of the chart installed with helm.

@dataclass(frozen=True)
class Kubectl:
    binary: str
    kubeconfig: Path

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def apply(self, documents: Sequence[dict[str, Any]], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self("apply", "-f", "-", stdin=yaml.safe_dump_all(list(documents)), check=check)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        return json.loads(self(*args).stdout)

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        args = ["get", kind, name, "--ignore-not-found", "-o", "name"]
        if namespace:
            args += ["-n", namespace]
        return bool(self(*args).stdout.strip())


@dataclass
class Release:
    """The release ``calyx`` in ``calyx-system``, driven by the real helm. :meth:`use` brings it to
    the given values (install, upgrade or nothing), so tests need not run in any order."""

    helm: Helm
    kubeconfig: Path
    name: str = "calyx"
    namespace: str = NAMESPACE
    state: tuple[tuple[Path, ...], tuple[str, ...]] | None = None     # values in effect; None: not installed

    def _helm(self, *args: str) -> str:
        return self.helm.run(*args, "--kubeconfig", str(self.kubeconfig)).stdout

    def install(self, values: Sequence[Path] = (), sets: Sequence[str] = ()) -> str:
        out = self._helm("install", self.name, str(CHART), "-n", self.namespace, "--create-namespace",
                         *Helm._value_args(values, sets))
        self.state = (tuple(values), tuple(sets))
        return out

    def upgrade(self, values: Sequence[Path] = (), sets: Sequence[str] = ()) -> str:
        # --reset-values: exactly these values (without values helm would reuse the last ones).
        out = self._helm("upgrade", self.name, str(CHART), "-n", self.namespace, "--reset-values",
                         *Helm._value_args(values, sets))
        self.state = (tuple(values), tuple(sets))
        return out

    def uninstall(self) -> str:
        self.state = None
        return self._helm("uninstall", self.name, "-n", self.namespace)

    def use(self, values: Sequence[Path] = (), sets: Sequence[str] = ()) -> None:
        if self.state is None:
            self.install(values, sets)
        elif self.state != (tuple(values), tuple(sets)):
            self.upgrade(values, sets)

    def status(self) -> dict[str, Any]:
        return json.loads(self._helm("status", self.name, "-n", self.namespace, "-o", "json"))


@dataclass(frozen=True)
class ChartCluster:
    """A control plane of one test module's own, kubectl as its admin, and the chart's release."""

    control_plane: cluster.ControlPlane
    kubectl: Kubectl
    release: Release

    def service_account_token(self, account: str, namespace: str = NAMESPACE) -> str:
        """A token of ``account`` from the TokenRequest API, as a pod of that account gets one."""
        return self.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()

    def token_kubeconfig(self, token: str, path: Path, ca_data: bytes | None = None) -> Path:
        """A kubeconfig holding ``token``, in the form calyx-cni install writes it."""
        ca = ca_data if ca_data is not None else self.control_plane.pki.ca.cert.read_bytes()
        path.write_text(json.dumps(cni_install.render_kubeconfig(self.control_plane.url, ca, token)))
        return path

    def cni_plugin_token(self, secret: str = "calyx-cni-plugin-token") -> dict[str, Any]:
        """The CNI plugin's token Secret, once the token controller has filled it in."""
        def filled() -> dict[str, Any] | None:
            found = self.kubectl.get("secret", secret, NAMESPACE)
            return found if "token" in (found.get("data") or {}) else None
        return wait_for(f"the token controller to fill Secret {secret}", filled, 90.0)

    def register_node(self, name: str) -> None:
        """A Node the DaemonSet selects (no kubelet runs: its pods are made, never started)."""
        self.kubectl.apply([{"apiVersion": "v1", "kind": "Node",
                             "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}}}])
