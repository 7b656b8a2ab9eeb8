"""Kubernetes ``labelSelector`` and ``fieldSelector`` query parameters: parsing and matching.

Label selectors take the full Kubernetes syntax (``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k``, ``!k``, comma-separated requirements that must all hold). Field
selectors take ``field=v``, ``field==v`` and ``field!=v`` for the fields each kind supports.
A malformed selector raises a 400 :class:`APIError` quoting the selector.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from calyxlab.apiserver.errors import APIError, bad_request

_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str              # in, notin, exists, !exists, =, !=
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # != and notin also select objects without the key, as Kubernetes does.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(req.matches(labels) for req in self.requirements)


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise bad_request(f"unable to parse requirement: labelSelector {text!r} at position {pos}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def _check_value(selector: str, value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise bad_request(f"unable to parse requirement: labelSelector {selector!r}: invalid label value "
                          f"{value!r}: must be 63 characters or less, alphanumeric, '-', '_' or '.'")
    return value


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a Kubernetes label selector; raises a 400 APIError naming the selector and problem."""
    if not text or not text.strip():
        return LabelSelector()
    tokens = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def fail(problem: str) -> APIError:
        return bad_request(f"unable to parse requirement: labelSelector {text!r}: {problem}")

    def word(what: str) -> str:
        nonlocal i
        if i >= len(tokens) or tokens[i] in ("!=", "==", "=", "(", ")", ",", "!"):
            found = tokens[i] if i < len(tokens) else "end of selector"
            raise fail(f"expected {what}, found {found!r}")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        if tokens[i] == "!":
            i += 1
            reqs.append(Requirement(word("a label key after '!'"), "!exists"))
        else:
            key = word("a label key")
            op = tokens[i] if i < len(tokens) else ","
            if op == ",":
                reqs.append(Requirement(key, "exists"))
            elif op in ("=", "==", "!="):
                i += 1
                value = ""
                if i < len(tokens) and tokens[i] != ",":
                    value = word("a label value")
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (_check_value(text, value),)))
            elif op in ("in", "notin"):
                i += 1
                if i >= len(tokens) or tokens[i] != "(":
                    raise fail(f"expected '(' after {op!r}")
                i += 1
                values: list[str] = []
                while True:
                    if i < len(tokens) and tokens[i] == ")":
                        i += 1
                        break
                    if i < len(tokens) and tokens[i] == ",":
                        i += 1
                        continue
                    values.append(_check_value(text, word(f"a value or ')' in the {op} set")))
                reqs.append(Requirement(key, op, tuple(values)))
            else:
                raise fail(f"unexpected {op!r} after key {key!r}")
        if i < len(tokens):
            if tokens[i] != ",":
                raise fail(f"expected ',' between requirements, found {tokens[i]!r}")
            i += 1
            if i >= len(tokens):
                raise fail("trailing ','")
    return LabelSelector(tuple(reqs))


# Fields each kind can be selected on, beyond metadata.name and metadata.namespace (as Kubernetes).
SELECTABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
            "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
              "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
              "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "Secret": ("type",),
    "Node": ("spec.unschedulable",),
    "Namespace": ("status.phase",),
}


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    equal: bool
    value: str


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, req.path) == req.value) == req.equal for req in self.requirements)

    def value_of(self, path: str) -> str | None:
        """The value an equality requirement pins ``path`` to, if any (used to narrow lookups)."""
        for req in self.requirements:
            if req.path == path and req.equal:
                return req.value
        return None


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """A field as the API compares it: strings as-is, booleans lower-case, absent as ''."""
    if path == "source":
        return str(((obj.get("source") or {}).get("component")) or "")
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def parse_field_selector(text: str | None, kind: str) -> FieldSelector:
    """Parse a field selector for ``kind``; unsupported fields are a 400 error as in Kubernetes."""
    if not text or not text.strip():
        return FieldSelector()
    allowed = ("metadata.name", "metadata.namespace") + SELECTABLE_FIELDS.get(kind, ())
    reqs = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise bad_request(f"invalid selector: fieldSelector {text!r}: cannot parse {part!r}")
        path, op, value = match.groups()
        if path not in allowed:
            raise bad_request(f'field label not supported: {path} (fieldSelector {text!r} on {kind}; '
                              f'supported: {", ".join(allowed)})')
        reqs.append(FieldRequirement(path, op != "!=", value.strip()))
    return FieldSelector(tuple(reqs))
