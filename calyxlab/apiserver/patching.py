"""Patches as Kubernetes applies them: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
strategic merge patch for built-in kinds (lists merged by their merge key, ``$patch``
directives, ``$deleteFromPrimitiveList``, ``$setElementOrder``, ``$retainKeys``).

Pure functions on JSON-like values; errors are 400/422 :class:`APIError` naming the path.
"""
from __future__ import annotations

import copy
from typing import Any

from calyxlab.apiserver.errors import APIError, bad_request

# Strategic merge: list fields of built-in kinds and how they merge. A path is the sequence of
# map keys from the object root, ``[]`` standing for "each element of a list". A merge key
# names the element field that identifies an element; ``None`` merges a list of primitives as
# a set (as ``patchStrategy: merge`` on a primitive list does). Lists not named here replace.
_POD_SPEC_LISTS: dict[tuple[str, ...], str | None] = {
    ("containers",): "name", ("initContainers",): "name", ("ephemeralContainers",): "name",
    ("containers", "[]", "ports"): "containerPort", ("initContainers", "[]", "ports"): "containerPort",
    ("containers", "[]", "env"): "name", ("initContainers", "[]", "env"): "name",
    ("containers", "[]", "volumeMounts"): "mountPath", ("initContainers", "[]", "volumeMounts"): "mountPath",
    ("volumes",): "name", ("imagePullSecrets",): "name", ("hostAliases",): "ip",
}
MERGE_KEYS: dict[str, dict[tuple[str, ...], str | None]] = {
    "*": {("metadata", "finalizers"): None, ("metadata", "ownerReferences"): "uid"},
    "Pod": {**{("spec",) + path: key for path, key in _POD_SPEC_LISTS.items()},
            ("status", "conditions"): "type", ("status", "podIPs"): "ip", ("status", "hostIPs"): "ip"},
    "Node": {("spec", "podCIDRs"): None, ("status", "conditions"): "type", ("status", "addresses"): "type"},
    "Service": {("spec", "ports"): "port", ("status", "conditions"): "type"},
    "Namespace": {("status", "conditions"): "type"},
}


# ---------------------------------------------------------------------------------------------
# JSON patch


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise bad_request(f"json patch: invalid path {path!r}: must be '' or start with '/'")
    return [_unescape(t) for t in path.split("/")[1:]] if path else []


def _parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise APIError(422, "Invalid", f"json patch: path {path!r}: {token!r} does not exist")
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise APIError(422, "Invalid", f"json patch: path {path!r} does not exist")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise APIError(422, "Invalid", "json patch: cannot remove the whole document")
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise APIError(422, "Invalid", f"json patch: cannot remove {path!r}: it does not exist")


def _add(doc: Any, path: str, value: Any, replace: bool) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise APIError(422, "Invalid", f"json patch: cannot replace {path!r}: it does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise APIError(422, "Invalid", f"json patch: index {last!r} out of range at {path!r}")
    else:
        raise APIError(422, "Invalid", f"json patch: {path!r}: parent is not an object or array")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch to a copy of ``doc``."""
    if not isinstance(operations, list):
        raise bad_request("json patch: the body must be a JSON array of operations")
    doc = copy.deepcopy(doc)
    for index, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"json patch: operation {index} needs 'op' and 'path': {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"json patch: operation {index} ({kind} {path}) needs 'value'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=False)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=True)
        elif kind == "remove":
            _remove(doc, path)
        elif kind in ("move", "copy"):
            source = op.get("from")
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value, replace=False)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise APIError(422, "Invalid", f"json patch: test failed at {path!r}: value is not "
                               f"{op['value']!r}")
        else:
            raise bad_request(f"json patch: operation {index}: unknown op {kind!r}")
    return doc


# ---------------------------------------------------------------------------------------------
# JSON merge patch


def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------------------------------
# Strategic merge patch


def strategic_merge_patch(doc: dict[str, Any], patch: Any, kind: str) -> dict[str, Any]:
    """Apply a strategic merge patch for a built-in ``kind``."""
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch: the body must be a JSON object")
    keys = {**MERGE_KEYS["*"], **MERGE_KEYS.get(kind, {})}
    return _smp_map(copy.deepcopy(doc), patch, (), keys)


def _smp_map(doc: Any, patch: dict[str, Any], path: tuple[str, ...],
             keys: dict[tuple[str, ...], str | None]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise bad_request(f"strategic merge patch: unknown $patch {directive!r} at {'.'.join(path) or '.'}")
    result = doc if isinstance(doc, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            target = key.split("/", 1)[1]
            if isinstance(result.get(target), list) and isinstance(value, list):
                result[target] = [v for v in result[target] if v not in value]
            continue
        sub = path + (key,)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key), value, sub, keys)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in keys and isinstance(result.get(key), list):
            result[key] = _smp_list(result[key], value, sub, keys)
        elif isinstance(value, list) and sub in keys:
            result[key] = _smp_list([], value, sub, keys)
        else:
            result[key] = copy.deepcopy(value)
    for key, order in patch.items():
        if key.startswith("$setElementOrder/") and isinstance(order, list):
            target = key.split("/", 1)[1]
            if isinstance(result.get(target), list):
                result[target] = _ordered(result[target], order, keys.get(path + (target,)))
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain:
                del result[key]
    return result


def _smp_list(current: list[Any], patch: list[Any], path: tuple[str, ...],
              keys: dict[tuple[str, ...], str | None]) -> list[Any]:
    merge_key = keys[path]
    if merge_key is None:
        result = list(current)
        for value in patch:
            if isinstance(value, dict) and value.get("$patch") == "replace":
                return []
            if value not in result:
                result.append(copy.deepcopy(value))
        return result
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy({k: x for k, x in v.items()}) for v in patch
                if isinstance(v, dict) and v.get("$patch") != "replace"]
    result = [copy.deepcopy(v) for v in current]
    element_path = path + ("[]",)
    for value in patch:
        if not isinstance(value, dict) or merge_key not in value:
            raise bad_request(f"strategic merge patch: element of {'.'.join(path)} lacks merge key "
                              f"{merge_key!r}: {value!r}")
        position = next((i for i, v in enumerate(result)
                         if isinstance(v, dict) and v.get(merge_key) == value[merge_key]), None)
        if value.get("$patch") == "delete":
            if position is not None:
                result.pop(position)
            continue
        if position is None:
            result.append(_smp_map({}, value, element_path, keys))
        else:
            result[position] = _smp_map(result[position], value, element_path, keys)
    return result


def _ordered(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    ranked = sorted(range(len(items)), key=lambda i: (wanted.index(ident(items[i]))
                                                      if ident(items[i]) in wanted else len(wanted), i))
    return [items[i] for i in ranked]
