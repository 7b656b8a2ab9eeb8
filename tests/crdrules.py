"""The CRDs' CEL rules (``x-kubernetes-validations``) evaluated with a CEL interpreter, as the
API server evaluates them: which rules a document breaks. Shared by the tests that check the
rules against the model (tests/unit/test_crds.py) and those that generate objects the API
server would accept (tests/faults)."""
from __future__ import annotations

from typing import Any, Iterator

import celpy
from celpy import celtypes

# Kubernetes' CEL environment includes the strings extension; these two are what the rules use.
CEL_FUNCTIONS = {
    "split": lambda s, sep: celtypes.ListType([celtypes.StringType(p) for p in str(s).split(str(sep))]),
    "replace": lambda s, old, new: celtypes.StringType(str(s).replace(str(old), str(new))),
}


def cel_rules(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, str]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule["rule"], rule["message"]
    for name, sub in schema.get("properties", {}).items():
        yield from cel_rules(sub, path + (name,))


def cel_failures(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules ``document`` breaks (transition rules are skipped: no old object)."""
    env = celpy.Environment()
    failures = []
    for path, rule, message in cel_rules(schema):
        if "oldSelf" in rule:
            continue
        value: Any = document
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        result = env.program(env.compile(rule), functions=CEL_FUNCTIONS).evaluate({"self": celpy.json_to_cel(value)})
        assert isinstance(result, celtypes.BoolType), (rule, result)
        if not result:
            failures.append(message)
    return failures
