"""Objects checked as the API server decodes and validates them.

Custom resources against their CRD's ``openAPIV3Schema``: defaults are filled in, unknown
fields are pruned (or, with ``fieldValidation=Strict``, refused), then the object is validated;
a violation is a 422 Invalid naming the object, the field and the value. Built-in kinds have
their unknown fields dropped or refused the same way, using the official client's models as
the list of fields Kubernetes defines.
"""
from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import kubernetes.client

from calyxlab.apiserver.errors import APIError, invalid
from calyxlab.apiserver.resources import ResourceType

_PRESERVE = "x-kubernetes-preserve-unknown-fields"


def _prune(schema: dict[str, Any], value: Any, path: str, unknown: list[str]) -> None:
    if not isinstance(schema, dict) or schema.get(_PRESERVE):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, item in value.items():
                _prune(additional, item, f"{path}.{key}" if path else key, unknown)
        elif properties is not None or schema.get("type") == "object":
            for key, sub in (properties or {}).items():
                if key not in value and isinstance(sub, dict) and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
            for key in list(value):
                if key in (properties or {}):
                    _prune(properties[key], value[key], f"{path}.{key}" if path else key, unknown)
                elif additional is not True:
                    unknown.append(f"{path}.{key}" if path else key)
                    del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune(schema["items"], item, f"{path}[{index}]", unknown)


def _as_json_schema(schema: Any) -> Any:
    """OpenAPI's ``nullable`` as JSON Schema's null type; other keywords carry over."""
    if isinstance(schema, list):
        return [_as_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result = {k: _as_json_schema(v) for k, v in schema.items()}
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        result["type"] = [schema["type"], "null"]
    if schema.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    return result


def _field_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for part in error.absolute_path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts) or "<root>"


def validate_custom(rtype: ResourceType, obj: dict[str, Any], strict: bool) -> dict[str, Any]:
    """The object with unknown fields pruned; raises 400 (Strict, unknown fields) or 422."""
    schema = rtype.schema or {}
    name = str((obj.get("metadata") or {}).get("name", ""))
    result = copy.deepcopy(obj)
    body = {k: v for k, v in result.items() if k not in ("metadata", "apiVersion", "kind")}
    root = {k: v for k, v in schema.items() if k != "properties"}
    root["properties"] = {k: v for k, v in (schema.get("properties") or {}).items()
                          if k not in ("metadata", "apiVersion", "kind")}
    unknown: list[str] = []
    _prune(root, body, "", unknown)
    if unknown and strict:
        raise APIError(400, "BadRequest", f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
                       f"{rtype.kind}: strict decoding error: " + ", ".join(f'unknown field "{u}"'
                                                                          for u in unknown))
    validator = jsonschema.Draft4Validator(_as_json_schema(root))
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        raise invalid(rtype.plural, name, rtype.group,
                      [(_field_path(e), e.instance, e.message) for e in errors[:10]])
    for key in list(result):
        if key not in ("metadata", "apiVersion", "kind") and key not in body:
            del result[key]
    result.update(body)
    return result


# Built-in kinds: the official client's models describe every field Kubernetes defines.
_BUILTIN_MODELS = {("", "Pod"): "V1Pod", ("", "Node"): "V1Node", ("", "Service"): "V1Service",
                   ("", "Namespace"): "V1Namespace", ("", "Secret"): "V1Secret", ("", "Event"): "CoreV1Event",
                   ("apiextensions.k8s.io", "CustomResourceDefinition"): "V1CustomResourceDefinition"}
_LIST_TYPE = re.compile(r"^list\[(.+)\]$", re.IGNORECASE)
_MAP_TYPE = re.compile(r"^dict(?:\[str, (.+)\]|\(str, (.+)\))$", re.IGNORECASE)


def _prune_model(type_name: str, value: Any, path: str, unknown: list[str]) -> None:
    list_match, map_match = _LIST_TYPE.match(type_name), _MAP_TYPE.match(type_name)
    if list_match and isinstance(value, list):
        for index, item in enumerate(value):
            _prune_model(list_match.group(1), item, f"{path}[{index}]", unknown)
        return
    if map_match and isinstance(value, dict):
        inner = map_match.group(1) or map_match.group(2)
        for key, item in value.items():
            _prune_model(inner, item, f"{path}.{key}", unknown)
        return
    model = getattr(kubernetes.client, type_name, None)
    attribute_map = getattr(model, "attribute_map", None)
    if not isinstance(attribute_map, dict) or not isinstance(value, dict):
        return
    types = {json_name: model.openapi_types[attr] for attr, json_name in attribute_map.items()}
    for key in list(value):
        child = f"{path}.{key}" if path else key
        if key in types:
            _prune_model(types[key], value[key], child, unknown)
        else:
            unknown.append(child)
            del value[key]


def validate_builtin(rtype: ResourceType, obj: dict[str, Any], strict: bool) -> dict[str, Any]:
    """Unknown fields of a built-in kind dropped (as decoding does), or refused under Strict."""
    model = _BUILTIN_MODELS.get((rtype.group, rtype.kind))
    if model is None:
        return obj
    result = copy.deepcopy(obj)
    unknown: list[str] = []
    _prune_model(model, result, "", unknown)
    if unknown and strict:
        raise APIError(400, "BadRequest", f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
                       f"{rtype.kind}: strict decoding error: " + ", ".join(f'unknown field "{u}"'
                                                                          for u in unknown))
    return result
