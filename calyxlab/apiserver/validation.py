"""Custom resources checked against their CRD's ``openAPIV3Schema``, as the API server does:
defaults are filled in, unknown fields are pruned (or, with ``fieldValidation=Strict``, refused), then the object is
validated; a violation is a 422 Invalid naming the object, the field and the value.
"""
from __future__ import annotations

import copy
from typing import Any

import jsonschema

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
