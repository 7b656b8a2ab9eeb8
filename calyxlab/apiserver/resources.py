"""The resource types the emulator serves: built-in core kinds and kinds defined by CRDs.

A :class:`ResourceType` carries what discovery, routing, storage and printing need to know
about one kind. :func:`from_crd` turns an ``apiextensions.k8s.io/v1`` CustomResourceDefinition
into resource types (one per served version); :func:`load_crd_dir` reads CRD YAML files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from calyxlab.apiserver.errors import APIError, bad_request

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CRD_GROUP = "apiextensions.k8s.io"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ResourceType:
    group: str                     # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False       # a /status subresource exists
    strategic_merge: bool = False  # built-in kinds accept strategic-merge-patch
    categories: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    reset_status_on_create: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: the same objects whatever version they are read through."""
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def object_path(self, namespace: str | None, name: str) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        ns = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{prefix}{ns}/{self.plural}/{name}"


def _core(plural: str, kind: str, namespaced: bool, short: tuple[str, ...] = (), status: bool = False,
          reset_status: bool = False) -> ResourceType:
    return ResourceType(group="", version="v1", plural=plural, singular=kind.lower(), kind=kind,
                        namespaced=namespaced, short_names=short, has_status=status, strategic_merge=True,
                        categories=("all",) if kind in ("Pod", "Service") else (),
                        reset_status_on_create=reset_status)


CORE_TYPES: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", False, ("ns",), status=True, reset_status=True),
    _core("nodes", "Node", False, ("no",), status=True),
    _core("pods", "Pod", True, ("po",), status=True, reset_status=True),
    _core("services", "Service", True, ("svc",), status=True, reset_status=True),
    _core("secrets", "Secret", True),
    _core("events", "Event", True, ("ev",)),
)

CRD_TYPE = ResourceType(group=CRD_GROUP, version="v1", plural="customresourcedefinitions",
                        singular="customresourcedefinition", kind="CustomResourceDefinition",
                        namespaced=False, short_names=("crd", "crds"), has_status=True,
                        strategic_merge=False)


def _crd_error(name: str, field_path: str, value: Any, problem: str) -> APIError:
    return APIError(422, "Invalid", f'customresourcedefinitions.{CRD_GROUP} "{name}" is invalid: '
                    f"{field_path}: Invalid value: {value!r}: {problem}",
                    {"name": name, "group": CRD_GROUP, "kind": "customresourcedefinitions",
                     "causes": [{"reason": "FieldValueInvalid", "field": field_path,
                                 "message": f"Invalid value: {value!r}: {problem}"}]})


def from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of a CRD as resource types; raises a 422 APIError naming the field."""
    name = str((crd.get("metadata") or {}).get("name", ""))
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        raise _crd_error(name, "spec", spec, "must be an object")
    group = spec.get("group")
    if not isinstance(group, str) or not group:
        raise _crd_error(name, "spec.group", group, "must be a non-empty string")
    names = spec.get("names") or {}
    plural = names.get("plural")
    kind = names.get("kind")
    if not isinstance(plural, str) or not plural or plural != plural.lower():
        raise _crd_error(name, "spec.names.plural", plural, "must be a lower-case non-empty string")
    if not isinstance(kind, str) or not kind:
        raise _crd_error(name, "spec.names.kind", kind, "must be a non-empty string")
    if name != f"{plural}.{group}":
        raise _crd_error(name, "metadata.name", name, f"must be spec.names.plural+\".\"+spec.group "
                         f"({plural}.{group})")
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        raise _crd_error(name, "spec.scope", scope, "must be Namespaced or Cluster")
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        raise _crd_error(name, "spec.versions", versions, "must list at least one version")
    result = []
    for index, version in enumerate(versions):
        vname = version.get("name") if isinstance(version, dict) else None
        if not isinstance(vname, str) or not vname:
            raise _crd_error(name, f"spec.versions[{index}].name", vname, "must be a non-empty string")
        if not version.get("served", True):
            continue
        columns = []
        for cindex, col in enumerate(version.get("additionalPrinterColumns") or []):
            if not isinstance(col, dict) or not col.get("name") or not col.get("jsonPath"):
                raise _crd_error(name, f"spec.versions[{index}].additionalPrinterColumns[{cindex}]", col,
                                 "needs name and jsonPath")
            columns.append(PrinterColumn(name=str(col["name"]), type=str(col.get("type", "string")),
                                         json_path=str(col["jsonPath"]),
                                         description=str(col.get("description", "")),
                                         priority=int(col.get("priority", 0)),
                                         format=str(col.get("format", ""))))
        schema = ((version.get("schema") or {}).get("openAPIV3Schema"))
        result.append(ResourceType(
            group=group, version=vname, plural=plural,
            singular=str(names.get("singular") or kind.lower()), kind=kind,
            namespaced=scope == "Namespaced", short_names=tuple(names.get("shortNames") or ()),
            has_status="status" in (version.get("subresources") or {}),
            categories=tuple(names.get("categories") or ()), printer_columns=tuple(columns),
            schema=schema if isinstance(schema, dict) else None,
            reset_status_on_create="status" in (version.get("subresources") or {})))
    if not result:
        raise _crd_error(name, "spec.versions", versions, "no version is served")
    return result


def load_crd_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """CustomResourceDefinition documents from YAML files (other kinds in them are ignored)."""
    crds = []
    for path in paths:
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise bad_request(f"{path}: not valid YAML: {exc}") from exc
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return crds


def load_crd_dir(directory: Path) -> list[dict[str, Any]]:
    """CRDs from every ``*.yaml``/``*.yml`` file in ``directory`` (none if it does not exist)."""
    if not directory.is_dir():
        return []
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return load_crd_files(files)


def default_crd_dir() -> Path:
    """The chart's CRD directory in this repository."""
    return Path(__file__).resolve().parents[2] / "charts" / "calyx" / "crds"


class Registry:
    """The resource types being served, by group/version/plural; CRDs come and go at runtime."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_crd: dict[str, list[ResourceType]] = {}
        for rtype in CORE_TYPES + (CRD_TYPE,):
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def types(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[str]]:
        """Non-core group -> served versions (first is preferred)."""
        result: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            if group and version not in result.setdefault(group, []):
                result[group].append(version)
        return result

    def register_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        """Serve the kinds a CRD defines (replacing what a previous version of it defined)."""
        name = crd["metadata"]["name"]
        new_types = from_crd(crd)
        builtin = CORE_TYPES + (CRD_TYPE,)
        for rtype in new_types:
            if self._types.get((rtype.group, rtype.version, rtype.plural)) in builtin:
                raise _crd_error(name, "spec.names.plural", rtype.plural,
                                 f"{rtype.plural}.{rtype.group or 'core'} is a built-in resource")
        self.unregister_crd(name)
        for rtype in new_types:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._by_crd[name] = new_types
        return new_types

    def unregister_crd(self, name: str) -> list[ResourceType]:
        removed = self._by_crd.pop(name, [])
        for rtype in removed:
            self._types.pop((rtype.group, rtype.version, rtype.plural), None)
        return removed
