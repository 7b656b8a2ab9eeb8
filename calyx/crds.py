"""Locates and loads Calyx's CustomResourceDefinitions, the single source of the resource schema.

The CRD YAML lives in the Helm chart (``charts/calyx/crds/``). This module finds that
directory, loads every CRD once per process, and gives :mod:`calyx.model` what it needs from
them as data: the ``spec`` schema of each kind (:func:`spec_schemas`, a
:class:`calyx.specschema.SpecSchemas` that fills in defaults the way the Kubernetes API server
does and validates).

Where the directory is looked for, first match wins:
  1. ``$CALYX_CRD_DIR`` (an error if it is set but is not a directory)
  2. ``<repository>/charts/calyx/crds`` next to the ``calyx`` package (source checkouts)
  3. ``<sys.prefix>/share/calyx/crds`` (installed packages)
  4. ``/usr/share/calyx/crds``
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from calyx.naming import CRD_GROUP as GROUP, CRD_VERSION as VERSION
from calyx.specschema import SpecSchemas, apply_defaults

__all__ = ["CRD", "CRDError", "ENV_CRD_DIR", "GROUP", "VERSION", "apply_defaults", "candidate_dirs", "crd",
           "crd_dir", "load_crds", "spec_defaults", "spec_schemas"]

ENV_CRD_DIR = "CALYX_CRD_DIR"


class CRDError(RuntimeError):
    """The CRD directory cannot be found, or a CRD in it is not usable."""


@dataclass(frozen=True)
class CRD:
    """One loaded CustomResourceDefinition, reduced to what Calyx uses."""

    kind: str
    plural: str
    singular: str
    scope: str
    schema: Mapping[str, Any]       # the served version's openAPIV3Schema
    path: Path                       # the file it came from

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def spec_schema(self) -> Mapping[str, Any]:
        return self.schema.get("properties", {}).get("spec", {})


def candidate_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The directories searched for CRDs, in order (see the module docstring)."""
    env = os.environ if environ is None else environ
    candidates: list[Path] = []
    if env.get(ENV_CRD_DIR):
        candidates.append(Path(env[ENV_CRD_DIR]))
    candidates.append(Path(__file__).resolve().parent.parent / "charts" / "calyx" / "crds")
    candidates.append(Path(sys.prefix) / "share" / "calyx" / "crds")
    candidates.append(Path("/usr/share/calyx/crds"))
    return candidates


def crd_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The CRD directory in use; raises CRDError naming every place looked at.

    With the process environment, the answer is found once per value of $CALYX_CRD_DIR.
    """
    if environ is None:
        return _crd_dir_for(os.environ.get(ENV_CRD_DIR, ""))
    return _find_crd_dir(environ)


@functools.lru_cache(maxsize=8)
def _crd_dir_for(env_value: str) -> Path:
    return _find_crd_dir({ENV_CRD_DIR: env_value} if env_value else {})


def _find_crd_dir(env: Mapping[str, str]) -> Path:
    if env.get(ENV_CRD_DIR):
        explicit = Path(env[ENV_CRD_DIR])
        if not explicit.is_dir():
            raise CRDError(f"{ENV_CRD_DIR}={explicit} is not a directory")
        return explicit
    candidates = candidate_dirs(env)
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise CRDError("no CRD directory found; looked in " + ", ".join(str(c) for c in candidates)
                   + f" (set {ENV_CRD_DIR})")


@functools.lru_cache(maxsize=8)
def load_crds(directory: Path) -> Mapping[str, CRD]:
    """Every Calyx CRD in ``directory``, keyed by kind. Cached: each directory is read once."""
    crds: dict[str, CRD] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as err:
            raise CRDError(f"{path}: cannot read CRD: {err}") from err
        for doc in documents:
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            crd = _crd_from_document(doc, path)
            if crd.kind in crds:
                raise CRDError(f"{path}: kind {crd.kind} is also defined in {crds[crd.kind].path}")
            crds[crd.kind] = crd
    if not crds:
        raise CRDError(f"{directory}: no CustomResourceDefinition found")
    return crds


def _crd_from_document(doc: Mapping[str, Any], path: Path) -> CRD:
    try:
        spec = doc["spec"]
        names = spec["names"]
        if spec["group"] != GROUP:
            raise CRDError(f"{path}: group {spec['group']!r} is not {GROUP}")
        version = next(v for v in spec["versions"] if v["name"] == VERSION)
        schema = version["schema"]["openAPIV3Schema"]
        return CRD(kind=names["kind"], plural=names["plural"], singular=names.get("singular", ""),
                   scope=spec["scope"], schema=schema, path=path)
    except (KeyError, TypeError, StopIteration) as err:
        raise CRDError(f"{path}: not a usable {GROUP}/{VERSION} CRD: missing {err}") from err


def crd(kind: str, directory: Path | None = None) -> CRD:
    """The CRD of ``kind`` from ``directory`` (default: :func:`crd_dir`)."""
    crds = load_crds(directory or crd_dir())
    try:
        return crds[kind]
    except KeyError:
        raise CRDError(f"no CRD for kind {kind} in {directory or crd_dir()}") from None


def spec_schemas(directory: Path | None = None) -> SpecSchemas:
    """The spec schemas of every kind in ``directory`` (default: :func:`crd_dir`); one object
    per directory and process, so validators are compiled once."""
    return _spec_schemas_for(directory or crd_dir())


@functools.lru_cache(maxsize=8)
def _spec_schemas_for(directory: Path) -> SpecSchemas:
    return SpecSchemas({kind: c.spec_schema for kind, c in load_crds(directory).items()})


def spec_defaults(kind: str, directory: Path | None = None) -> Mapping[str, Any]:
    """The top-level spec defaults of ``kind`` (field -> default)."""
    properties = crd(kind, directory).spec_schema.get("properties", {})
    return {name: sub["default"] for name, sub in properties.items() if "default" in sub}
