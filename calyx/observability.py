"""Calyx's health and metrics surface: the ``/livez`` ``/readyz`` ``/metrics`` server and the
liveness of a process's loops (structured logs are :mod:`calyx.logs`).

HTTP: :class:`HealthServer` is a small threaded HTTP server serving liveness and readiness from
callbacks, the Prometheus exposition of one daemon's own ``CollectorRegistry`` (never the
global registry, so several daemons can live in one process), and any read-only JSON views the
daemon adds (bgpd's ``/status``, felix's ``/ipam``, which ``calyxctl`` reads; with query
parameters, :data:`JsonHandler`: felix's ``/v1/route``). :class:`Liveness` aggregates the
heartbeats of a process's loops (see :mod:`calyx.loop`) so ``/livez`` names the stuck one.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from calyx.logs import StructuredLogger, get_logger

# --- Health and metrics server ---------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """The answer of a liveness or readiness callback: ok, and why not."""

    ok: bool
    reason: str = ""


HealthCallback = Callable[[], Check]
JsonView = Callable[[], Any]     # a read-only view: its answer is served as JSON
JsonHandler = Callable[[Mapping[str, list[str]]], tuple[int, Any]]
"""A read-only JSON endpoint with query parameters: called with them, answers (HTTP status, body)."""


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
        path, _, query = self.path.partition("?")
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
        elif path in self.server.handlers:
            self._json(self.server.handlers[path], query)
        elif path in self.server.json_views:
            try:
                status, answer = 200, self.server.json_views[path]()
            except Exception as exc:  # a failing view must answer, not kill the server
                status, answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
            body = (json.dumps(answer, default=str, sort_keys=True) + "\n").encode()
            self._reply(status, body, "application/json")
        else:
            known = ", ".join(["/livez", "/readyz", "/metrics", *sorted({**self.server.json_views,
                                                                         **self.server.handlers})])
            self._reply(404, f"not found: try {known}\n".encode(), "text/plain; charset=utf-8")

    def _json(self, handler: JsonHandler, query: str) -> None:
        try:
            status, body = handler(parse_qs(query))
        except Exception as exc:  # a failing endpoint must answer, not kill the server
            self.server.log.error("endpoint failed", path=self.path, error=f"{type(exc).__name__}: {exc}")
            status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
        self._reply(status, (json.dumps(body, indent=1) + "\n").encode(), "application/json")

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
                 liveness: HealthCallback, readiness: HealthCallback, log: StructuredLogger,
                 json_views: Mapping[str, JsonView], handlers: Mapping[str, JsonHandler]) -> None:
        self.registry = registry
        self.json_views = dict(json_views)
        self.handlers = dict(handlers)
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
    """Serves ``/livez``, ``/readyz``, ``/metrics`` and the ``json_views`` (path -> callable
    whose answer is served as JSON; read-only, so never anything secret) on ``host:port``
    (port 0: a free port, see :attr:`port` once started) from a background thread. ``handlers``
    are JSON endpoints that take query parameters (path -> :data:`JsonHandler`), read-only too."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 liveness: HealthCallback = always_ok, readiness: HealthCallback = always_ok,
                 logger: StructuredLogger | None = None,
                 json_views: Mapping[str, JsonView] | None = None,
                 handlers: Mapping[str, JsonHandler] | None = None) -> None:
        self.json_views = dict(json_views or {})
        self.handlers = dict(handlers or {})
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
                                   self.liveness, self.readiness, self._log, self.json_views, self.handlers)
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
