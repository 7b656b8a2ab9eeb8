"""A custom resource's ``spec`` against its CRD's schema: the schema's defaults filled in as the
Kubernetes API server fills them, and a compiled validator per kind.

Pure code: the schemas are data handed in. :mod:`calyx.crds` reads them from the CRD YAML and
builds a :class:`SpecSchemas`; :mod:`calyx.model`'s parsers of custom resources take one.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import jsonschema


class UnknownKind(KeyError):
    """No schema was given for this kind."""


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


class SpecSchemas:
    """The spec schema of each custom resource kind, with validators compiled on first use."""

    def __init__(self, schemas: Mapping[str, Mapping[str, Any]]) -> None:
        self._schemas = dict(schemas)
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._schemas)

    def spec_schema(self, kind: str) -> Mapping[str, Any]:
        try:
            return self._schemas[kind]
        except KeyError:
            raise UnknownKind(f"no CRD schema for kind {kind}") from None

    def defaulted(self, kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``spec`` with the kind's defaults filled in."""
        return apply_defaults(self.spec_schema(kind), spec)

    def validator(self, kind: str) -> jsonschema.protocols.Validator:
        validator = self._validators.get(kind)
        if validator is None:
            schema = self.spec_schema(kind)
            cls = jsonschema.Draft4Validator   # OpenAPI v3.0 schemas are draft-4 style
            cls.check_schema(schema)
            validator = self._validators[kind] = cls(schema)
        return validator
