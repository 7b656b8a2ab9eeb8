"""What the API server does to an object on create, update and status update, before storing it.

Pure functions: metadata stamping (uid, creationTimestamp, generation, namespace,
generateName), immutable fields, status-subresource separation, generation bumps on spec
changes, resourceVersion preconditions, Secret ``stringData``. Errors are :class:`APIError`
objects naming the object, the field and the value.
"""
from __future__ import annotations

import base64
import copy
import re
from datetime import datetime, timezone
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable

from calyxlab.apiserver.errors import APIError, bad_request, conflict, invalid
from calyxlab.apiserver.resources import ResourceType

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def timestamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_body(rtype: ResourceType, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(f"the body of a {rtype.kind} must be a JSON object, got {type(body).__name__}")
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind not in (None, rtype.kind):
        raise bad_request(f"the kind of the object ({kind!r}) does not match the resource "
                          f"{rtype.plural} ({rtype.kind!r})")
    if api_version is not None and api_version.split("/")[0] != (rtype.group or "v1") and \
            api_version != rtype.api_version:
        raise bad_request(f"the apiVersion of the object ({api_version!r}) does not match the resource "
                          f"{rtype.plural} ({rtype.api_version!r})")
    meta = body.get("metadata", {})
    if not isinstance(meta, dict):
        raise bad_request(f"{rtype.kind}: metadata must be an object, got {meta!r}")
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is not None and (not isinstance(values, dict)
                                   or not all(isinstance(v, str) for v in values.values())):
            raise invalid(rtype.plural, str(meta.get("name", "")), rtype.group,
                          [(f"metadata.{field}", values, "must be a map of string to string")])
    return body


def _valid_name(rtype: ResourceType, name: Any) -> str:
    pattern = _DNS_LABEL if rtype.kind in ("Namespace", "Service") else _DNS_SUBDOMAIN
    if not isinstance(name, str) or not name:
        raise invalid(rtype.plural, "", rtype.group, [("metadata.name", name,
                      "name or generateName is required")])
    if len(name) > 253 or not pattern.match(name):
        raise invalid(rtype.plural, name, rtype.group, [("metadata.name", name,
                      "must consist of lower case alphanumeric characters, '-' or '.', and must start "
                      "and end with an alphanumeric character")])
    return name


def _strip_spec_like(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """The part of an object whose change bumps metadata.generation."""
    return {k: v for k, v in obj.items()
            if k not in ("metadata", "apiVersion", "kind") and not (k == "status" and rtype.has_status)}


def _encode_string_data(obj: dict[str, Any]) -> None:
    string_data = obj.pop("stringData", None)
    if string_data:
        data = dict(obj.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def _initial_status(rtype: ResourceType) -> dict[str, Any] | None:
    if rtype.group:
        return None
    return {"Pod": {"phase": "Pending"}, "Namespace": {"phase": "Active"},
            "Service": {"loadBalancer": {}}}.get(rtype.kind)


def prepare_create(rtype: ResourceType, body: Any, namespace: str | None, now: datetime,
                   new_uid: Callable[[], str], random_suffix: Callable[[str, int], str]) -> dict[str, Any]:
    """The object to store for a create request (without resourceVersion)."""
    obj = {"kind": rtype.kind, "apiVersion": rtype.api_version,
           **{k: v for k, v in copy.deepcopy(_check_body(rtype, body)).items() if k not in ("kind", "apiVersion")}}
    meta = obj.setdefault("metadata", {})
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"] + random_suffix(_SUFFIX_ALPHABET, 5)
    _valid_name(rtype, meta.get("name"))
    if rtype.namespaced:
        given = meta.get("namespace")
        if given and namespace and given != namespace:
            raise bad_request(f"the namespace of the provided object ({given!r}) does not match the "
                              f"namespace sent on the request ({namespace!r})")
        meta["namespace"] = namespace or given or "default"
    else:
        meta.pop("namespace", None)
    for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
        meta.pop(field, None)
    meta["uid"] = new_uid()
    meta["creationTimestamp"] = timestamp(now)
    meta["generation"] = 1
    if rtype.reset_status_on_create:
        status = _initial_status(rtype)
        if status is None:
            obj.pop("status", None)
        else:
            obj["status"] = status
    if rtype.kind == "Secret" and not rtype.group:
        _encode_string_data(obj)
        obj.setdefault("type", "Opaque")
    return obj


def check_precondition(rtype: ResourceType, current: dict[str, Any], body_meta: dict[str, Any]) -> None:
    """409 Conflict when the request names a resourceVersion or uid that is not the stored one."""
    name = current["metadata"]["name"]
    wanted = body_meta.get("resourceVersion")
    if wanted and wanted != current["metadata"]["resourceVersion"]:
        raise conflict(rtype.plural, name, rtype.group,
                       "the object has been modified; please apply your changes to the latest version "
                       "and try again")
    uid = body_meta.get("uid")
    if uid and uid != current["metadata"].get("uid"):
        raise conflict(rtype.plural, name, rtype.group,
                       f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                       f"{current['metadata'].get('uid')}")


def prepare_update(rtype: ResourceType, current: dict[str, Any], body: Any,
                   subresource: str | None) -> dict[str, Any]:
    """The object to store for an update of ``current`` (main resource or ``status``)."""
    new = copy.deepcopy(_check_body(rtype, body))
    meta = new.get("metadata") or {}
    cur_meta = current["metadata"]
    if meta.get("name") not in (None, cur_meta["name"]):
        raise bad_request(f"the name of the object ({meta.get('name')!r}) does not match the name on "
                          f"the URL ({cur_meta['name']!r})")
    if rtype.namespaced and meta.get("namespace") not in (None, "", cur_meta.get("namespace")):
        raise bad_request(f"the namespace of the provided object ({meta.get('namespace')!r}) does not "
                          f"match the namespace sent on the request ({cur_meta.get('namespace')!r})")
    check_precondition(rtype, current, meta)
    if subresource == "status":
        result = copy.deepcopy(current)
        if "status" in new:
            result["status"] = new["status"]
        else:
            result.pop("status", None)
        return result
    new["kind"], new["apiVersion"] = rtype.kind, rtype.api_version
    meta = dict(meta)
    for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "namespace", "name", "generation"):
        if field in cur_meta:
            meta[field] = cur_meta[field]
        else:
            meta.pop(field, None)
    new["metadata"] = meta
    if rtype.has_status:
        if "status" in current:
            new["status"] = copy.deepcopy(current["status"])
        else:
            new.pop("status", None)
    if rtype.kind == "Secret" and not rtype.group:
        _encode_string_data(new)
    if cur_meta.get("deletionTimestamp"):
        added = set(meta.get("finalizers") or []) - set(cur_meta.get("finalizers") or [])
        if added:
            raise APIError(422, "Invalid",
                           f'{rtype.plural} "{cur_meta["name"]}" is invalid: metadata.finalizers: '
                           f"Forbidden: no new finalizers can be added if the object is being deleted, "
                           f"found new finalizers {sorted(added)!r}")
    if _strip_spec_like(rtype, new) != _strip_spec_like(rtype, current):
        meta["generation"] = int(cur_meta.get("generation", 1)) + 1
    return new


SERVICE_CIDR = IPv4Network("10.96.0.0/12")


def assign_cluster_ip(service: dict[str, Any], used: set[str], cidr: IPv4Network = SERVICE_CIDR) -> dict[str, Any]:
    """A Service with ``spec.clusterIP(s)`` filled in from ``cidr`` when unset (the first free
    address after the network's .1, as the API server's allocator hands out), or checked when set."""
    spec = dict(service.get("spec") or {})
    name = service["metadata"]["name"]
    if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
        return service
    wanted = spec.get("clusterIP")
    if wanted:
        try:
            address = IPv4Address(wanted)
        except ValueError:
            raise invalid("services", name, "", [("spec.clusterIP", wanted,
                                                  "must be a valid IPv4 address or None")]) from None
        if address not in cidr:
            raise invalid("services", name, "", [("spec.clusterIP", wanted,
                                                  f"is not in the service range {cidr}")])
        if wanted in used:
            raise invalid("services", name, "", [("spec.clusterIP", wanted, "provided IP is already allocated")])
    else:
        wanted = next((str(a) for a in cidr.hosts() if str(a) not in used and a != cidr.network_address + 1), None)
        if wanted is None:
            raise APIError(500, "InternalError", f"services {name!r}: the service range {cidr} is full")
    spec["clusterIP"], spec["clusterIPs"] = wanted, [wanted]
    spec.setdefault("type", "ClusterIP")
    return {**service, "spec": spec}
