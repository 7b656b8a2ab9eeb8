"""Discovery and OpenAPI documents, built from the registry of served resource types.

Legacy discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``) is what
kubectl and client-go resolve kinds with; aggregated discovery is deliberately not offered
(requests for it get the legacy document, which clients accept as the fallback). The OpenAPI
v3 documents describe each resource's operations, so that kubectl sees that the server
validates fields itself (``fieldValidation``) and sends its objects for server-side validation.
Pure functions.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from calyxlab.apiserver.resources import ALL_VERBS, Registry, ResourceType

KUBERNETES_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-calyx", "gitCommit": "",
                      "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                      "goVersion": "", "compiler": "calyx", "platform": "linux/amd64"}


def _resource_entries(rtype: ResourceType) -> list[dict[str, Any]]:
    entries = [{"name": rtype.plural, "singularName": rtype.singular, "namespaced": rtype.namespaced,
                "kind": rtype.kind, "verbs": list(ALL_VERBS), "shortNames": list(rtype.short_names),
                "categories": list(rtype.categories),
                "storageVersionHash": hashlib.sha256(f"{rtype.group}/{rtype.plural}".encode())
                .hexdigest()[:12]}]
    if not entries[0]["shortNames"]:
        del entries[0]["shortNames"]
    if not entries[0]["categories"]:
        del entries[0]["categories"]
    if rtype.has_status:
        entries.append({"name": f"{rtype.plural}/status", "singularName": "", "namespaced": rtype.namespaced,
                        "kind": rtype.kind, "verbs": ["get", "patch", "update"]})
    return entries


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = []
    for group, versions in sorted(registry.groups().items()):
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group)
    if not versions:
        return None
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in registry.types() if t.group == group and t.version == version]
    if not types:
        return None
    resources = [entry for t in sorted(types, key=lambda t: t.plural) for entry in _resource_entries(t)]
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _gv_types(registry: Registry) -> dict[str, list[ResourceType]]:
    result: dict[str, list[ResourceType]] = {}
    for rtype in registry.types():
        result.setdefault(_gv_path(rtype.group, rtype.version), []).append(rtype)
    return result


def openapi_v3_document(registry: Registry, gv_path: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version (``api/v1``, ``apis/calyx.dev/v1``)."""
    types = _gv_types(registry).get(gv_path)
    if not types:
        return None
    query = [{"name": n, "in": "query", "schema": {"type": "string"}, "description": d} for n, d in (
        ("fieldValidation", "Ignore, Warn or Strict: what to do with unknown or duplicate fields"),
        ("dryRun", "All: validate without persisting"), ("fieldManager", "the writer's name"))]
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rtype in types:
        gvk = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
        ns = "/namespaces/{namespace}" if rtype.namespaced else ""
        base = f"/{gv_path}{ns}/{rtype.plural}"
        schema_name = f"{rtype.group or 'core'}.{rtype.version}.{rtype.kind}"
        schemas[schema_name] = {"type": "object", "x-kubernetes-group-version-kind": [gvk],
                                **({"properties": rtype.schema.get("properties", {})}
                                   if rtype.schema else {})}
        ref = {"$ref": f"#/components/schemas/{schema_name}"}

        def op(verb: str, params: list[dict[str, Any]]) -> dict[str, Any]:
            return {"operationId": f"{verb}{rtype.kind}", "parameters": params,
                    "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}},
                    "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk}
        paths[base] = {"get": op("list", []), "post": op("post", query)}
        paths[base + "/{name}"] = {"get": op("get", []), "put": op("put", query),
                                   "patch": op("patch", query), "delete": op("delete", [])}
    return {"openapi": "3.0.0", "info": {"title": "Calyx API emulator", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": schemas}}


def openapi_v3_root(registry: Registry) -> dict[str, Any]:
    paths = {}
    for gv_path in sorted(_gv_types(registry)):
        doc = openapi_v3_document(registry, gv_path)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={digest}"}
    return {"paths": paths}
