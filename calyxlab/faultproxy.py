"""A fault-injecting proxy in front of the Kubernetes API, for the reliability suite: clients
dial it as they would the API server; it forwards each request, watches included, until told to
misbehave.

Modes (:class:`Mode`), switchable at any time from another thread:

* ``PASS``: every request goes to the API server with the proxy's own credentials (a client
  certificate of the same identity as the client's) and the answer streams back;
* ``ERROR``: every request gets ``500 Internal Server Error`` with a Kubernetes Status body;
* ``HANG``: requests are accepted and never answered (clients see timeouts).

Every switch also cuts the requests in flight (watches under ``PASS``, the hanging ones under
``HANG``), so long-running clients meet the new mode at once instead of at their next reconnect. TLS towards the client uses the API server's
own serving certificate (valid for the name the lab's kubeconfigs verify), so the client's
kubeconfig needs only its server address changed.

Test tooling (the lab's, never the daemons'): built on aiohttp's server and client.
"""
from __future__ import annotations

import asyncio
import enum
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

# Headers that describe one hop's connection or encoding, not the message.
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                "upgrade", "proxy-connection", "te", "trailer", "host"}


class Mode(enum.Enum):
    PASS = "pass"
    ERROR = "error"
    HANG = "hang"


@dataclass(frozen=True)
class Upstream:
    """The API server and the proxy's credentials towards it (PEM files)."""

    url: str
    ca_cert: Path
    client_cert: Path
    client_key: Path
    server_name: str


@dataclass(frozen=True)
class Serving:
    """Where the proxy listens and the certificate it presents to clients (PEM files)."""

    host: str
    port: int
    cert: Path
    key: Path


class FaultProxy:
    def __init__(self, serving: Serving, upstream: Upstream) -> None:
        self.serving = serving
        self.upstream = upstream
        self.mode = Mode.PASS
        self.requests = {m: 0 for m in Mode}    # requests seen in each mode
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._in_flight: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -------------------------------------------------------------------- control (any thread)
    def start(self) -> "FaultProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def set_mode(self, mode: Mode) -> None:
        asyncio.run_coroutine_threadsafe(self._set_mode(mode), self._loop).result(30)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------- the loop's side
    async def _start(self) -> None:
        upstream_tls = ssl.create_default_context(cafile=str(self.upstream.ca_cert))
        upstream_tls.load_cert_chain(str(self.upstream.client_cert), str(self.upstream.client_key))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_tls), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        client_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        client_tls.load_cert_chain(str(self.serving.cert), str(self.serving.key))
        await web.TCPSite(self._runner, self.serving.host, self.serving.port, ssl_context=client_tls).start()

    async def _set_mode(self, mode: Mode) -> None:
        if mode is not self.mode:
            self.mode = mode
            for task in list(self._in_flight):
                task.cancel()

    async def _stop(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        mode = self.mode
        self.requests[mode] += 1
        if mode is Mode.ERROR:
            return web.json_response(_status(500, "InternalError", "injected by the fault proxy"), status=500)
        task = asyncio.current_task()
        self._in_flight.add(task)
        try:
            if mode is Mode.HANG:
                await asyncio.Event().wait()    # until the client gives up or the mode changes
            return await self._forward(request)
        finally:
            self._in_flight.discard(task)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS | {"authorization"}}
        headers["Accept-Encoding"] = "identity"
        body = await request.read()
        async with self._session.request(request.method, f"{self.upstream.url}{request.path_qs}", headers=headers,
                                         data=body or None, server_hostname=self.upstream.server_name) as answer:
            response = web.StreamResponse(status=answer.status, headers={
                k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS})
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}

