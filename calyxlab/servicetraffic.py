"""Service traffic in the lab: HTTP echo servers in pods (:mod:`calyxlab.echoserver`) and
requests to a Service address from any node (:mod:`calyxlab.requestloop`), once or as a
continuous loop whose outcomes are counted, as :class:`calyxlab.traffic.ContinuousPing` counts
lost pings. Used by the Services scenario and its tests.
"""
from __future__ import annotations

import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from calyxlab import pods
from calyxlab.requestloop import Outcome, parse
from calyxlab.traffic import POD_NAMESPACE, Pod

if TYPE_CHECKING:
    from calyxlab.backend import ProcHandle
    from calyxlab.lab import Lab

SERVER_PORT = 8080


def serve_http(lab: "Lab", pod: Pod, port: int = SERVER_PORT, namespace: str = POD_NAMESPACE,
               timeout: float = 30.0) -> "ProcHandle":
    """Start an echo server in ``pod`` (killed when the lab is destroyed); returns once it answers."""
    netns = pods.pod_netns(lab.name, pod.node, namespace, pod.name)
    handle = lab.spawn(pod.node, ["ip", "netns", "exec", netns, sys.executable, "-m",
                                  "calyxlab.echoserver", "--name", pod.name, "--port", str(port)],
                       name=f"echo-{pod.name}")
    deadline = time.monotonic() + timeout
    while True:
        res = pods.exec_pod(lab, pod.node, namespace, pod.name, _client_argv(
            f"http://127.0.0.1:{port}/", "--count", "1"))
        if res.stdout.startswith("ok "):
            return handle
        if time.monotonic() > deadline or not lab.alive(handle):
            raise RuntimeError(f"pod {pod.name}: echo server not answering on port {port} "
                               f"(log {handle.log}): {res.stdout.strip()} {res.stderr.strip()}")
        time.sleep(0.2)


def _client_argv(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "calyxlab.requestloop", "--url", url, *extra]


def request_many(lab: "Lab", node: str, url: str, count: int, timeout: float = 1.0) -> list[Outcome]:
    """``count`` requests to ``url`` from ``node``, one after another, each a new connection."""
    res = lab.exec(node, _client_argv(url, "--count", str(count), "--interval", "0",
                                      "--timeout", str(timeout)), timeout=count * timeout + 60)
    return parse(res.stdout)


@dataclass
class RequestLoop:
    """Requests to ``url`` from ``node`` every ``interval`` seconds until :meth:`stop`.

    Its output goes to a file in the lab's state directory, so outcomes can be followed while
    it runs (:meth:`outcomes`). Should the caller never stop it, destroying the lab ends it.
    """

    lab: "Lab"
    node: str
    url: str
    interval: float = 0.05
    timeout: float = 1.0
    _base: Path = field(init=False)
    _thread: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._base = self.lab.names.state_dir / f"requests-{secrets.token_hex(3)}"

    @property
    def _stop_file(self) -> Path:
        return self._base.with_suffix(".stop")

    @property
    def _out(self) -> Path:
        return self._base.with_suffix(".out")

    def outcomes(self) -> list[Outcome]:
        return parse(self._out.read_text(errors="replace")) if self._out.exists() else []

    def start(self, first_answer_timeout: float = 30.0) -> "RequestLoop":
        argv = ["sh", "-c", " ".join(_client_argv(self.url, "--stop", str(self._stop_file),
                                                  "--interval", str(self.interval),
                                                  "--timeout", str(self.timeout)))
                + f" > {self._out} 2>&1"]
        self._thread = threading.Thread(target=self.lab.exec, args=(self.node, argv),
                                        kwargs={"timeout": None}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + first_answer_timeout
        while not any(o.ok for o in self.outcomes()):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"requests {self.node} -> {self.url}: no answer within "
                                   f"{first_answer_timeout:.0f} s")
            time.sleep(0.1)
        return self

    def stop(self) -> list[Outcome]:
        """Stop the loop; every request's outcome, in order."""
        self._stop_file.touch()
        try:
            if self._thread is not None:
                self._thread.join(60)
            return self.outcomes()
        finally:
            self._stop_file.unlink(missing_ok=True)
            self._out.unlink(missing_ok=True)
