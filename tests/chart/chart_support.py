"""Support for the Helm chart tests: the real helm binary, and rendering the chart into parsed
manifests. A missing helm is a failure (it is part of the toolchain), never a skip."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytest
import yaml

from calyxlab.tools import ToolNotFound, find_tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "calyx"
CRD_DIR = CHART / "crds"
EXAMPLE_VALUES = REPO / "charts" / "values"
TEST_VALUES = Path(__file__).resolve().parent / "values"
NAMESPACE = "calyx-system"


def find_helm() -> str:
    try:
        return find_tool("helm")
    except ToolNotFound as exc:
        pytest.fail(str(exc), pytrace=False)


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
