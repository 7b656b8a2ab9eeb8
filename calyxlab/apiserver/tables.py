"""Server-side printing: ``meta.k8s.io/v1 Table`` responses as kubectl asks for them.

Built-in kinds get kubectl's familiar columns; custom kinds get Name plus the CRD's
``additionalPrinterColumns`` (``type: date`` rendered as an age), or Name and Age when the CRD
defines none. Pure functions.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable

from calyxlab.apiserver.resources import PrinterColumn, ResourceType

Row = Callable[[dict[str, Any], datetime], list[Any]]


def human_age(created: str | None, now: datetime) -> str:
    """kubectl's short duration format (``45s``, ``3m12s``, ``5h``, ``12d``)."""
    if not created:
        return "<unknown>"
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((now - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


_PATH_PART = re.compile(r"\.([A-Za-z0-9_\-$@]+)|\[(\d+)\]|\['([^']+)'\]|\[\"([^\"]+)\"\]")


def json_path(obj: Any, path: str) -> Any:
    """The value of a simple JSONPath (``.spec.cidr``, ``.status.conditions[0].type``,
    ``.metadata.labels['a.b/c']``), or None when absent."""
    expr = path.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    if expr.startswith("$"):
        expr = expr[1:]
    node, pos = obj, 0
    while pos < len(expr):
        match = _PATH_PART.match(expr, pos)
        if not match:
            return None
        key, index, quoted1, quoted2 = match.groups()
        if index is not None:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            node = node.get(key or quoted1 or quoted2) if isinstance(node, dict) else None
        if node is None:
            return None
        pos = match.end()
    return node


def _cell(value: Any, column_type: str, now: datetime) -> Any:
    if value is None:
        return None
    if column_type == "date":
        return human_age(str(value), now)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if column_type in ("integer", "number", "boolean"):
        return value
    return str(value)


def _age(obj: dict[str, Any], now: datetime) -> str:
    return human_age((obj.get("metadata") or {}).get("creationTimestamp"), now)


def _node_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    status = obj.get("status") or {}
    ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Ready" if ready == "True" else "NotReady" if ready else "Unknown"
    if (obj.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = (obj.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    info = status.get("nodeInfo") or {}
    return [obj["metadata"]["name"], state, ",".join(roles) or "<none>", _age(obj, now),
            info.get("kubeletVersion", ""), addresses.get("InternalIP", "<none>"),
            addresses.get("ExternalIP", "<none>"), info.get("osImage", "<unknown>"),
            info.get("kernelVersion", "<unknown>"), info.get("containerRuntimeVersion", "<unknown>")]


def _pod_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    phase = status.get("reason") or status.get("phase") or "Unknown"
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        phase = "Terminating"
    return [obj["metadata"]["name"], f"{ready}/{len(spec.get('containers') or [])}", phase, restarts,
            _age(obj, now), status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", "<none>"]


def _service_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = ",".join(f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
                     f"{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    external = ",".join(spec.get("externalIPs") or []) or "<none>"
    return [obj["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>",
            external, ports or "<none>", _age(obj, now), selector or "<none>"]


def _event_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    involved = obj.get("involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    return [human_age(str(last)[:19] + "Z" if last else None, now), obj.get("type", ""), obj.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", obj.get("message", "")]


def _col(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": kind, "format": fmt, "description": "", "priority": priority}


_BUILTIN: dict[str, tuple[list[dict[str, Any]], Row]] = {
    "Node": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"), _col("Version"),
              _col("Internal-IP", priority=1), _col("External-IP", priority=1), _col("OS-Image", priority=1),
              _col("Kernel-Version", priority=1), _col("Container-Runtime", priority=1)], _node_row),
    "Pod": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts", "integer"), _col("Age"),
             _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
             _col("Readiness Gates", priority=1)], _pod_row),
    "Service": ([_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"),
                 _col("Port(s)"), _col("Age"), _col("Selector", priority=1)], _service_row),
    "Namespace": ([_col("Name", fmt="name"), _col("Status"), _col("Age")],
                  lambda o, now: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age(o, now)]),
    "Secret": ([_col("Name", fmt="name"), _col("Type"), _col("Data", "integer"), _col("Age")],
               lambda o, now: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}), _age(o, now)]),
    "Event": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")], _event_row),
}


def _custom(columns: tuple[PrinterColumn, ...]) -> tuple[list[dict[str, Any]], Row]:
    if not columns:
        return ([_col("Name", fmt="name"), _col("Age")], lambda o, now: [o["metadata"]["name"], _age(o, now)])
    defs = [_col("Name", fmt="name")] + [
        {"name": c.name, "type": c.type, "format": c.format, "description": c.description,
         "priority": c.priority} for c in columns]

    def row(obj: dict[str, Any], now: datetime) -> list[Any]:
        return [obj["metadata"]["name"]] + [_cell(json_path(obj, c.json_path), c.type, now) for c in columns]
    return defs, row


def columns_for(rtype: ResourceType) -> tuple[list[dict[str, Any]], Row]:
    if not rtype.group and rtype.kind in _BUILTIN:
        return _BUILTIN[rtype.kind]
    if rtype.kind == "CustomResourceDefinition":
        return ([_col("Name", fmt="name"), _col("Created At", "date")],
                lambda o, now: [o["metadata"]["name"], o["metadata"].get("creationTimestamp")])
    return _custom(rtype.printer_columns)


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def table(rtype: ResourceType, objects: list[dict[str, Any]], list_meta: dict[str, Any], include: str,
          now: datetime) -> dict[str, Any]:
    """A Table of ``objects``; ``include`` is the includeObject parameter (None, Metadata, Object)."""
    defs, row = columns_for(rtype)
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {"cells": row(obj, now)}
        if include == "Object":
            entry["object"] = obj
        elif include != "None":
            entry["object"] = _partial(obj)
        rows.append(entry)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": defs, "rows": rows}
