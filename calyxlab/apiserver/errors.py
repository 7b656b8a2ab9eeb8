"""API errors as Kubernetes ``Status`` objects (kind, reason, code, message, details)."""
from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error the API answers with: HTTP code, Kubernetes reason, message and details."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(kind: str, name: str, group: str = "") -> dict[str, Any]:
    details = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    return details


def not_found(plural: str, name: str, group: str = "") -> APIError:
    qualified = f"{plural}.{group}" if group else plural
    return APIError(404, "NotFound", f'{qualified} "{name}" not found', _details(plural, name, group))


def already_exists(plural: str, name: str, group: str = "") -> APIError:
    qualified = f"{plural}.{group}" if group else plural
    return APIError(409, "AlreadyExists", f'{qualified} "{name}" already exists',
                    _details(plural, name, group))


def conflict(plural: str, name: str, group: str, why: str) -> APIError:
    qualified = f"{plural}.{group}" if group else plural
    return APIError(409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
                    _details(plural, name, group))


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def invalid(kind: str, name: str, group: str, causes: list[tuple[str, Any, str]]) -> APIError:
    """422 Invalid; ``causes`` are (field path, offending value, problem)."""
    texts = [f"{field}: Invalid value: {value!r}: {problem}" for field, value, problem in causes]
    qualified = f"{kind}.{group}" if group else kind
    details = _details(kind, name, group)
    details["causes"] = [{"reason": "FieldValueInvalid", "message": f"Invalid value: {value!r}: {problem}",
                          "field": field} for field, value, problem in causes]
    return APIError(422, "Invalid", f'{qualified} "{name}" is invalid: ' + ", ".join(texts), details)


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def method_not_allowed(message: str) -> APIError:
    return APIError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> APIError:
    return APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format; "
                    f"content type {content_type!r} is not supported here")


def resource_version_too_large(requested: int, current: int) -> APIError:
    """What Kubernetes answers for a version it has not reached (for example after a restart)."""
    return APIError(504, "Timeout", f"Too large resource version: {requested}, current: {current}",
                    {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                     "retryAfterSeconds": 1})
