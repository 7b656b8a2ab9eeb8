"""Service traffic in the lab: HTTP echo servers in pods (:mod:`calyxlab.echoserver`) and
requests to a Service address from any node (:mod:`calyxlab.requestloop`), once or as a
continuous loop whose outcomes are counted, as :class:`calyxlab.traffic.ContinuousPing` counts
lost pings. Used by the Services scenario and its tests.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from calyxlab import pods
from calyxlab.requestloop import Outcome, parse
from calyxlab.traffic import POD_NAMESPACE, FollowedRun, Pod

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
    """Requests to ``url`` from ``node`` every ``interval`` seconds until :meth:`stop`; their
    outcomes can be followed while it runs (:meth:`outcomes`)."""

    lab: "Lab"
    node: str
    url: str
    interval: float = 0.05
    timeout: float = 1.0
    _run: FollowedRun = field(init=False)

    def __post_init__(self) -> None:
        self._run = FollowedRun(self.lab, "requests")

    def outcomes(self) -> list[Outcome]:
        return parse(self._run.output())

    def start(self, first_answer_timeout: float = 30.0) -> "RequestLoop":
        command = " ".join(_client_argv(self.url, "--stop", str(self._run.stop_file),
                                        "--interval", str(self.interval),
                                        "--timeout", str(self.timeout)))
        argv = ["sh", "-c", f"{command} > {self._run.out} 2>&1"]
        self._run.start(lambda: self.lab.exec(self.node, argv, timeout=None),
                        lambda out: any(o.ok for o in parse(out)), first_answer_timeout,
                        f"requests {self.node} -> {self.url}: no answer")
        return self

    def stop(self) -> list[Outcome]:
        """Stop the loop; every request's outcome, in order."""
        return parse(self._run.stop())
