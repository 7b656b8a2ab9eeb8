"""Running the emulator: on an asyncio loop of its own thread (for tests and the lab runner's
Python code) or in the foreground until SIGTERM (for the command line)."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from calyxlab.apiserver.app import APIServer, Settings
from calyxlab.apiserver.kubeconfig import write_kubeconfig
from calyxlab.apiserver.resources import default_crd_dir, load_crd_dir


async def start_sites(server: APIServer, listen: list[tuple[str, int]]) -> tuple[web.AppRunner, list[str]]:
    """Serve ``server`` on every (host, port); returns the runner and the URLs (ports resolved)."""
    runner = web.AppRunner(server.make_app(), handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    urls = []
    for host, port in listen:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server else []   # aiohttp exposes no public accessor
        bound = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        urls.append(f"http://{shown}:{bound}")
    return runner, urls


class EmbeddedAPIServer:
    """The emulator on a background thread: ``start()``, ``url``, ``write_kubeconfig()``, ``stop()``.

    ``port=0`` picks a free port. Usable as a context manager.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, crd_dir: str | os.PathLike | None = None,
                 history: int = 1000, bookmark_interval: float = 5.0, crds: list[dict[str, Any]] | None = None):
        self._listen = [(host, port)]
        directory = Path(crd_dir) if crd_dir is not None else default_crd_dir()
        self._crds = list(crds) if crds is not None else load_crd_dir(directory)
        self._settings = Settings(history=history, bookmark_interval=bookmark_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.api: APIServer | None = None
        self.url = ""

    def start(self) -> "EmbeddedAPIServer":
        self._thread = threading.Thread(target=self._run, name="calyx-apiserver", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"API emulator failed to start: {self._error}") from self._error
        if not self.url:
            raise RuntimeError("API emulator did not start within 30 s")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self.api = APIServer(self._crds, self._settings)
            self._runner, urls = loop.run_until_complete(start_sites(self.api, self._listen))
            self.url = urls[0]
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (the only thread that may touch its state)."""
        assert self._loop is not None

        async def invoke() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(30)

    def write_kubeconfig(self, path: str | os.PathLike) -> Path:
        return write_kubeconfig(path, self.url)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> "EmbeddedAPIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def serve_forever(listen: list[tuple[str, int]], crd_dir: Path, settings: Settings,
                        kubeconfig_out: Path | None) -> None:
    """Serve until SIGTERM or SIGINT; prints ``ready <url>`` once listening."""
    server = APIServer(load_crd_dir(crd_dir), settings)
    runner, urls = await start_sites(server, listen)
    if kubeconfig_out is not None:
        write_kubeconfig(kubeconfig_out, urls[0])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {urls[0]}", flush=True)
    await stop.wait()
    await runner.cleanup()
