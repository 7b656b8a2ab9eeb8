"""Calyx's observability surface: structured logs and the ``/livez`` ``/readyz`` ``/metrics`` server.

Logs: :func:`configure_logging` installs one handler on the process's root logger that renders
records as logfmt (``ts=... level=info logger=felix.routes event="route added" dst=...``) or
JSON lines; :func:`get_logger` returns a :class:`StructuredLogger` whose methods take an event
string plus keyword fields.

HTTP: :class:`HealthServer` is a small threaded HTTP server serving liveness and readiness from
callbacks and the Prometheus exposition of one daemon's own ``CollectorRegistry`` (never the
global registry, so several daemons can live in one process). :class:`Liveness` aggregates the
heartbeats of a process's loops (see :mod:`calyx.loop`) so ``/livez`` names the stuck one.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, TextIO

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LOG_FORMATS = ("logfmt", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

_FIELDS_ATTR = "calyx_fields"
_EVENT_ATTR = "calyx_event"
_HANDLER_NAME = "calyx-structured"


# --- Structured logging ---------------------------------------------------------------------

def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _plain(value: Any) -> Any:
    """A JSON-friendly rendering of a field value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def logfmt_value(value: Any) -> str:
    """Render one value for logfmt: bare when safe, else double-quoted with escapes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        text = ",".join(str(_plain(v)) for v in value)
    else:
        text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t\r') and text.isprintable():
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r"))
    return f'"{escaped}"'


def _logfmt_key(key: str) -> str:
    cleaned = "".join(c if (c.isalnum() or c in "_.-/") else "_" for c in str(key))
    return cleaned or "_"


class StructuredFormatter(logging.Formatter):
    """Formats records as logfmt or JSON lines; fields come from :class:`StructuredLogger`."""

    def __init__(self, fmt: str = "logfmt") -> None:
        super().__init__()
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format {fmt!r}: must be one of {', '.join(LOG_FORMATS)}")
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, _EVENT_ATTR, None)
        if event is None:
            event = record.getMessage()
        pairs: list[tuple[str, Any]] = [
            ("ts", _timestamp(record.created)),
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("event", event),
        ]
        reserved = {k for k, _ in pairs}
        for key, value in (getattr(record, _FIELDS_ATTR, None) or {}).items():
            pairs.append((f"field.{key}" if key in reserved else key, value))
        if record.exc_info:
            pairs.append(("traceback", self.formatException(record.exc_info)))
        if self.fmt == "json":
            return json.dumps({k: _plain(v) for k, v in pairs}, separators=(",", ":"))
        return " ".join(f"{_logfmt_key(k)}={logfmt_value(v)}" for k, v in pairs)


def configure_logging(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Send every record of the process to ``stream`` (stderr) as logfmt or JSON at ``level``.

    Calling it again replaces the handler it installed before (it never stacks handlers)."""
    name = level.lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: must be one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(StructuredFormatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name.upper())
    # urllib3 logs each connection retry as a warning; Calyx's API callers log every failed
    # request themselves (with the retry delay), so below debug level those lines are noise.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if name == "debug" else logging.ERROR)


class StructuredLogger:
    """``log.info("route added", dst="10.244.1.5/32", dev="cali1234567890a")``."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    @property
    def name(self) -> str:
        return self._logger.name

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def _log(self, level: int, event: str, exc_info: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, exc_info=exc_info, stacklevel=3,
                             extra={_EVENT_ATTR: event, _FIELDS_ATTR: fields})

    def debug(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.DEBUG, event, exc_info, fields)

    def info(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.INFO, event, exc_info, fields)

    def warning(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.WARNING, event, exc_info, fields)

    def error(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, event, exc_info, fields)


def get_logger(name: str) -> StructuredLogger:
    return StructuredLogger(logging.getLogger(name))


# --- Health and metrics server ---------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """The answer of a liveness or readiness callback: ok, and why not."""

    ok: bool
    reason: str = ""


HealthCallback = Callable[[], Check]


def always_ok() -> Check:
    return Check(True, "ok")


class Heartbeat:
    """Liveness from a main loop: the loop calls :meth:`tick`; the check fails when the last
    tick is older than ``max_age`` seconds. Monotonic clock, safe across threads. ``name`` is
    what the check's reason calls the loop."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic,
                 name: str = "main loop") -> None:
        self.max_age = max_age
        self.name = name
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._last = self._clock()

    def __call__(self) -> Check:
        with self._lock:
            age = self._clock() - self._last
        if age <= self.max_age:
            return Check(True, f"{self.name} ticked {age:.1f}s ago")
        return Check(False, f"{self.name} has not ticked for {age:.1f}s (limit {self.max_age:.1f}s)")


class Liveness:
    """One process's liveness, aggregated from named checks (one heartbeat per loop), in the
    manner of kube-router's health controller: alive while every registered check passes; else
    the check fails naming each stale one. With nothing registered it is alive."""

    def __init__(self) -> None:
        self._checks: dict[str, HealthCallback] = {}
        self._lock = threading.Lock()

    def register(self, name: str, check: HealthCallback) -> None:
        with self._lock:
            if name in self._checks:
                raise ValueError(f"liveness: {name!r} is registered already")
            self._checks[name] = check

    def unregister(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    @property
    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._checks)

    def __call__(self) -> Check:
        with self._lock:
            checks = list(self._checks.items())
        failed, passed = [], []
        for name, check in checks:
            try:
                result = check()
            except Exception as exc:  # one broken check must not hide the others
                result = Check(False, f"check raised {type(exc).__name__}: {exc}")
            (passed if result.ok else failed).append(f"{name}: {result.reason}")
        if failed:
            return Check(False, "stale: " + "; ".join(failed))
        return Check(True, "; ".join(passed))


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path in ("/livez", "/readyz"):
            callback = self.server.liveness if path == "/livez" else self.server.readiness
            try:
                check = callback()
            except Exception as exc:  # a failing check must answer, not kill the server
                check = Check(False, f"check raised {type(exc).__name__}: {exc}")
            body = ("ok\n" if check.ok and not check.reason else f"{check.reason}\n").encode()
            self._reply(200 if check.ok else 503, body, "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found: try /livez, /readyz or /metrics\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        self.server.log.debug("http request", client=self.client_address[0], request=format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 liveness: HealthCallback, readiness: HealthCallback, log: StructuredLogger) -> None:
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self.log = log
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the bound address's hostname (socket.getfqdn), which
        # stalls for seconds in a node namespace without DNS; nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port


class HealthServer:
    """Serves ``/livez``, ``/readyz`` and ``/metrics`` on ``host:port`` (port 0: a free port,
    see :attr:`port` once started) from a background thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 liveness: HealthCallback = always_ok, readiness: HealthCallback = always_ok,
                 logger: StructuredLogger | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self._log = logger or get_logger("calyx.health")
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HealthServer: not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "HealthServer":
        if self._server is not None:
            return self
        try:
            self._server = _Server((self.host, self.requested_port), self.registry,
                                   self.liveness, self.readiness, self._log)
        except OSError as exc:
            raise OSError(exc.errno, f"health server: cannot listen on {self.host}:{self.requested_port}: "
                                     f"{exc.strerror}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"health-{self.port}", daemon=True)
        self._thread.start()
        self._log.info("health server listening", host=self.host, port=self.port)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> "HealthServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
