"""Kubernetes ``labelSelector`` and ``fieldSelector`` query parameters: parsing and matching.

Label selectors take the full Kubernetes syntax (``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k``, ``!k``, comma-separated requirements that must all hold), parsed by
:mod:`calyx.selector`. Field
selectors take ``field=v``, ``field==v`` and ``field!=v`` for the fields each kind supports.
A malformed selector raises a 400 :class:`APIError` quoting the selector.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from calyx.selector import All, Expr, SelectorError, parse_kubernetes
from calyxlab.apiserver.errors import APIError, bad_request

@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector: Calyx's own parser in its Kubernetes syntax (the API accepts
    only that syntax, not Calico's expressions)."""

    expression: Expr = All()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return self.expression.matches(labels or {})


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a Kubernetes label selector; raises a 400 APIError naming the selector and problem."""
    if not text or not text.strip():
        return LabelSelector()
    try:
        return LabelSelector(parse_kubernetes(text))
    except SelectorError as exc:
        raise bad_request(f"unable to parse requirement: labelSelector {text!r}: {exc.detail}") from None


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
