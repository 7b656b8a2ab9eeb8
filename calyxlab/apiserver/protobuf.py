"""Request bodies in Kubernetes' protobuf encoding, for the built-in kinds kubectl sends that way.

kubectl's generators (``kubectl create namespace``, ``create secret generic``, ``create
service``) send ``application/vnd.kubernetes.protobuf``: the bytes ``k8s\\0`` followed by a
``runtime.Unknown`` envelope (type meta, raw object bytes). This module decodes the envelope and
the object into the same dict its JSON form would give, from a table of the wire field numbers
of the messages those kinds use. Pure code; unknown fields are skipped, an undecodable body is a
400 and a kind outside the table a 415 naming it.
"""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

from calyxlab.apiserver.errors import APIError, bad_request

MAGIC = b"k8s\x00"

# message -> field number -> (JSON name, type, repeated). Types: "string", "int", "bool",
# "bytes" (base64 in JSON), "map" (string->string), "bytesmap" (string->base64), "time",
# "intorstring", or the name of another message here.
_F = tuple[str, str, bool]
SCHEMAS: dict[str, dict[int, _F]] = {
    "Unknown": {1: ("typeMeta", "TypeMeta", False), 2: ("raw", "rawbytes", False),
                3: ("contentEncoding", "string", False), 4: ("contentType", "string", False)},
    "TypeMeta": {1: ("apiVersion", "string", False), 2: ("kind", "string", False)},
    "ObjectMeta": {1: ("name", "string", False), 2: ("generateName", "string", False),
                   3: ("namespace", "string", False), 5: ("uid", "string", False),
                   6: ("resourceVersion", "string", False), 7: ("generation", "int", False),
                   8: ("creationTimestamp", "time", False), 9: ("deletionTimestamp", "time", False),
                   10: ("deletionGracePeriodSeconds", "int", False), 11: ("labels", "map", False),
                   12: ("annotations", "map", False), 13: ("ownerReferences", "OwnerReference", True),
                   14: ("finalizers", "string", True)},
    "OwnerReference": {1: ("kind", "string", False), 3: ("name", "string", False), 4: ("uid", "string", False),
                       5: ("apiVersion", "string", False), 6: ("controller", "bool", False),
                       7: ("blockOwnerDeletion", "bool", False)},
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False),
                  3: ("status", "NamespaceStatus", False)},
    "NamespaceSpec": {1: ("finalizers", "string", True)},
    "NamespaceStatus": {1: ("phase", "string", False)},
    "Secret": {1: ("metadata", "ObjectMeta", False), 2: ("data", "bytesmap", False), 3: ("type", "string", False),
               4: ("stringData", "map", False), 5: ("immutable", "bool", False)},
    "Service": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "ServiceSpec", False)},
    "ServiceSpec": {1: ("ports", "ServicePort", True), 2: ("selector", "map", False),
                    3: ("clusterIP", "string", False), 4: ("type", "string", False),
                    5: ("externalIPs", "string", True), 7: ("sessionAffinity", "string", False),
                    8: ("loadBalancerIP", "string", False), 9: ("loadBalancerSourceRanges", "string", True),
                    10: ("externalName", "string", False), 11: ("externalTrafficPolicy", "string", False),
                    12: ("healthCheckNodePort", "int", False), 13: ("publishNotReadyAddresses", "bool", False),
                    17: ("ipFamilyPolicy", "string", False), 18: ("clusterIPs", "string", True),
                    19: ("ipFamilies", "string", True), 20: ("allocateLoadBalancerNodePorts", "bool", False),
                    21: ("loadBalancerClass", "string", False), 22: ("internalTrafficPolicy", "string", False)},
    "ServicePort": {1: ("name", "string", False), 2: ("protocol", "string", False), 3: ("port", "int", False),
                    4: ("targetPort", "intorstring", False), 5: ("nodePort", "int", False),
                    6: ("appProtocol", "string", False)},
    "IntOrString": {1: ("type", "int", False), 2: ("intVal", "int", False), 3: ("strVal", "string", False)},
    "Time": {1: ("seconds", "int", False), 2: ("nanos", "int", False)},
    "MapEntry": {1: ("key", "rawbytes", False), 2: ("value", "rawbytes", False)},
    "DeleteOptions": {1: ("gracePeriodSeconds", "int", False), 2: ("preconditions", "Preconditions", False),
                      3: ("orphanDependents", "bool", False), 4: ("propagationPolicy", "string", False),
                      5: ("dryRun", "string", True)},
    "Preconditions": {1: ("uid", "string", False), 2: ("resourceVersion", "string", False)},
}
KINDS = ("Namespace", "Secret", "Service", "DeleteOptions")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise bad_request("protobuf body: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field: ints for varints, bytes otherwise."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise bad_request("protobuf body: truncated field")
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise bad_request(f"protobuf body: unsupported wire type {wire} for field {number}")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(kind: str, wire: int, value: Any) -> Any:
    if kind == "string":
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if kind == "int":
        return _signed(value) if isinstance(value, int) else int.from_bytes(value, "little", signed=True)
    if kind == "bool":
        return bool(value)
    if kind == "rawbytes":
        return value
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind == "time":
        stamp = decode_message(value, "Time")
        return datetime.fromtimestamp(stamp.get("seconds", 0), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "intorstring":
        parsed = decode_message(value, "IntOrString")
        return parsed.get("strVal", "") if parsed.get("type") == 1 else parsed.get("intVal", 0)
    return decode_message(value, kind)


def decode_message(data: bytes, message: str) -> dict[str, Any]:
    schema = SCHEMAS[message]
    result: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        if number not in schema:
            continue
        name, kind, repeated = schema[number]
        if kind in ("map", "bytesmap"):
            entry = decode_message(value, "MapEntry")
            raw_value = entry.get("value", b"")
            result.setdefault(name, {})[entry.get("key", b"").decode("utf-8")] = (
                base64.b64encode(raw_value).decode() if kind == "bytesmap" else raw_value.decode("utf-8"))
            continue
        if repeated and kind in ("int", "bool") and wire == 2:     # packed
            items, pos = [], 0
            while pos < len(value):
                item, pos = _varint(value, pos)
                items.append(_scalar(kind, 0, item))
            result.setdefault(name, []).extend(items)
            continue
        decoded = _scalar(kind, wire, value)
        if repeated:
            result.setdefault(name, []).append(decoded)
        else:
            result[name] = decoded
    # Generated encoders write empty strings and zeros that JSON would omit.
    return {k: v for k, v in result.items() if v not in ("", 0) or isinstance(v, bool)}


def decode_object(body: bytes) -> dict[str, Any]:
    """A ``k8s\\0``-prefixed protobuf object as its JSON-shaped dict (apiVersion and kind included)."""
    if not body.startswith(MAGIC):
        raise bad_request("protobuf body: missing the k8s\\0 prefix")
    envelope = decode_message(body[len(MAGIC):], "Unknown")
    type_meta = envelope.get("typeMeta", {})
    kind = type_meta.get("kind", "")
    if kind not in KINDS:
        raise APIError(415, "UnsupportedMediaType", f"protobuf bodies of kind {kind!r} are not supported here "
                       f"(supported: {', '.join(KINDS)}); send JSON")
    if envelope.get("contentEncoding"):
        raise bad_request(f"protobuf body: content encoding {envelope['contentEncoding']!r} is not supported")
    obj = decode_message(envelope.get("raw", b""), kind)
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
