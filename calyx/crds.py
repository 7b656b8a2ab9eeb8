"""Locates and loads Calyx's CustomResourceDefinitions, the single source of the resource schema.

The CRD YAML lives in the Helm chart (``charts/calyx/crds/``). This module finds that
directory, loads every CRD once per process, and gives :mod:`calyx.model` what it needs from
them: the ``openAPIV3Schema`` of each kind, a compiled validator for its ``spec``, and the
schema ``default``s, applied the way the Kubernetes API server applies them.

Where the directory is looked for, first match wins:
  1. ``$CALYX_CRD_DIR`` (an error if it is set but is not a directory)
  2. ``<repository>/charts/calyx/crds`` next to the ``calyx`` package (source checkouts)
  3. ``<sys.prefix>/share/calyx/crds`` (installed packages)
  4. ``/usr/share/calyx/crds``
"""
from __future__ import annotations

import copy
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

ENV_CRD_DIR = "CALYX_CRD_DIR"
GROUP = "calyx.dev"
VERSION = "v1"


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


@functools.lru_cache(maxsize=32)
def _spec_validator(kind: str, directory: Path) -> jsonschema.protocols.Validator:
    schema = crd(kind, directory).spec_schema
    cls = jsonschema.Draft4Validator   # OpenAPI v3.0 schemas are draft-4 style
    cls.check_schema(schema)
    return cls(schema)


def spec_validator(kind: str, directory: Path | None = None) -> jsonschema.protocols.Validator:
    """A compiled jsonschema validator for ``kind``'s spec; compiled once per process."""
    return _spec_validator(kind, directory or crd_dir())


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server does.

    A missing property gets its ``default``; defaults of nested properties are applied only
    inside objects that are present (or defaulted). ``None`` counts as missing (the server
    prunes nulls of non-nullable fields). The input is not modified.
    """
    if isinstance(value, Mapping) and schema.get("type") == "object":
        properties = schema.get("properties", {})
        result = {k: v for k, v in value.items() if v is not None or k not in properties}
        for key, sub in properties.items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = apply_defaults(sub, result[key])
        return result
    if isinstance(value, list) and schema.get("type") == "array" and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def spec_defaults(kind: str, directory: Path | None = None) -> Mapping[str, Any]:
    """The top-level spec defaults of ``kind`` (field -> default)."""
    properties = crd(kind, directory).spec_schema.get("properties", {})
    return {name: sub["default"] for name, sub in properties.items() if "default" in sub}
