"""Reading a Calyx daemon's read-only JSON views over HTTP (bgpd's ``/status``, felix's
``/ipam``, served on their health ports) at a node's address. I/O only."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from calyx import model

HTTP_TIMEOUT = 5.0


class ViewUnavailable(RuntimeError):
    """The view could not be read; the message says from where and why."""


def node_address(node: model.NodeInfo) -> str:
    """Where ``node``'s daemons listen: its ``calyx.dev/ipv4-address`` annotation, else InternalIP."""
    address = model.node_address(node)
    if address is None:
        raise ViewUnavailable(f"Node {node.name!r} has no {model.ANNOTATION_IPV4_ADDRESS} annotation "
                              f"and no InternalIP")
    return str(address)


def fetch_json(url: str, timeout: float = HTTP_TIMEOUT) -> Any:
    """GET ``url`` and decode its JSON answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        reason = _error_of(detail)
        if reason is not None:          # the daemon's own reason (busy, no such pod...)
            raise ViewUnavailable(f"{url}: HTTP {exc.code}: {reason}") from None
        if exc.code == 404:
            detail = "not served (a daemon older than this calyxctl?)"
        raise ViewUnavailable(f"{url}: HTTP {exc.code} {exc.reason}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ViewUnavailable(f"{url}: {reason}") from None
    except ValueError as exc:
        raise ViewUnavailable(f"{url}: not JSON: {exc}") from None


def _error_of(body: str) -> str | None:
    """The ``error`` of a daemon's JSON error answer, if the body is one."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return None
