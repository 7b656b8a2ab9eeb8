"""Traffic between the lab's pods: the pod-to-pod ping matrix and a continuous ping that
counts lost packets. Used by ``make demo`` and the end-to-end tests.

Pings run inside the pods' sandbox namespaces (through :func:`calyxlab.pods.exec_pod` or the
lab kernel's root namespace), so they take the same path as a workload's traffic: pod veth,
the node's routes, the underlay (IPIP or plain), the other node, the other pod.
"""
from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from calyxlab import pods

if TYPE_CHECKING:
    from calyxlab.lab import Lab

POD_NAMESPACE = "default"


@dataclass(frozen=True)
class Pod:
    """A pod the lab made: where it runs and its address."""

    node: str
    name: str
    ip: str


def wait_network_ready(lab: "Lab", node: str, timeout: float = 120.0) -> None:
    """Wait until felix has written the pod MTU on ``node`` (``$CALYX_RUN_DIR/mtu``), as a
    node's pods wait for its network to be ready: a pod made earlier would get the default
    MTU of 1500 instead of the tunnel's."""
    path = f"{lab.node_env(node)['CALYX_RUN_DIR']}/mtu"
    deadline = time.monotonic() + timeout
    while lab.run_root(["test", "-s", path]).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {node}: felix has not written {path} within "
                               f"{timeout:.0f} s (is felix running? see its log)")
        time.sleep(1.0)     # each look starts a process in the lab's kernel, as felix starts


def add_pod(lab: "Lab", node: str, name: str | None = None,
            namespace: str = POD_NAMESPACE, labels: Mapping[str, str] | None = None,
            ports: Sequence[Mapping] = ()) -> Pod:
    """A pod on ``node``, made once the node's network is ready."""
    name = name or f"pod-{node}"
    wait_network_ready(lab, node)
    return Pod(node, name, pods.add_pod(lab, node, namespace, name, labels, ports))


def ping_once(lab: "Lab", src: Pod, dst_ip: str, namespace: str = POD_NAMESPACE) -> bool:
    res = pods.exec_pod(lab, src.node, namespace, src.name,
                        ["ping", "-c", "1", "-W", "2", dst_ip], timeout=60)
    return res.returncode == 0


def ping_matrix(lab: "Lab", members: Sequence[Pod], timeout: float = 120.0
                ) -> dict[tuple[str, str], bool]:
    """Every pod pings every other pod; a failing pair is retried until ``timeout`` (routes
    may still be converging)."""
    started = time.monotonic()
    pending = [(a, b) for a in members for b in members if a != b]
    result = {(a.name, b.name): False for a, b in pending}
    while pending:
        still = []
        for a, b in pending:
            if ping_once(lab, a, b.ip):
                result[(a.name, b.name)] = True
            else:
                still.append((a, b))
        pending = still
        if not pending or time.monotonic() - started > timeout:
            break
        time.sleep(0.5)
    return result


def format_matrix(members: Sequence[Pod], result: dict[tuple[str, str], bool]) -> str:
    """The matrix as a table: rows ping, columns are pinged ('ok', 'FAIL', '-' for self)."""
    names = [p.name for p in members]
    width = max(len(n) for n in names + ["from \\ to"]) + 2
    lines = ["from \\ to".ljust(width) + "".join(n.ljust(width) for n in names)]
    for a in names:
        cells = ["-" if a == b else ("ok" if result[(a, b)] else "FAIL") for b in names]
        lines.append(a.ljust(width) + "".join(c.ljust(width) for c in cells))
    return "\n".join(lines)


def count_lost(output: str) -> tuple[int, int]:
    """(sent, lost) from ping's per-reply lines: sequence numbers 1..last reply without a
    reply are lost (packets still in flight when ping stopped are not counted)."""
    seqs = {int(m[1]) for m in re.finditer(r"bytes from .*icmp_seq=(\d+)", output)}
    if not seqs:
        raise RuntimeError(f"the continuous ping got no reply at all:\n{output[-2000:]}")
    last = max(seqs)
    return last, sum(1 for s in range(1, last + 1) if s not in seqs)


class FollowedRun:
    """A command run in the background until a stop file appears, its output going to a file
    in the lab's state directory, on the file system that the host and the UML kernel share,
    so it can be followed while it runs. Should nobody stop it, destroying the lab ends it."""

    def __init__(self, lab: "Lab", prefix: str):
        base = lab.names.state_dir / f"{prefix}-{secrets.token_hex(3)}"
        self.stop_file, self.out = base.with_suffix(".stop"), base.with_suffix(".out")
        self._thread: threading.Thread | None = None

    def start(self, run: Callable[[], object], started: Callable[[str], bool], timeout: float,
              what: str) -> None:
        """Call ``run`` (which runs the command to completion) in a thread of its own; return once
        ``started(output)`` holds, or stop it and raise naming ``what`` after ``timeout``."""
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not started(self.output()):
            if time.monotonic() > deadline:
                output = self.stop()
                raise RuntimeError(f"{what}: nothing within {timeout:.0f} s:\n{output[-1000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stop(self) -> str:
        """Ask the command to stop, wait for it, and return its whole output."""
        self.stop_file.touch()
        try:
            if self._thread is not None:
                self._thread.join(60)
            return self.output()
        finally:
            self.stop_file.unlink(missing_ok=True)
            self.out.unlink(missing_ok=True)


@dataclass
class ContinuousPing:
    """``ping -i INTERVAL`` from one pod to another, running until :meth:`stop`; its replies
    can be followed while it runs (:meth:`output`)."""

    lab: "Lab"
    src: Pod
    dst: Pod
    interval: float = 0.05
    namespace: str = POD_NAMESPACE
    _run: FollowedRun = field(init=False)

    def __post_init__(self) -> None:
        self._run = FollowedRun(self.lab, "ping")

    def output(self) -> str:
        return self._run.output()

    def start(self, first_reply_timeout: float = 60.0) -> "ContinuousPing":
        netns = pods.pod_netns(self.lab.name, self.src.node, self.namespace, self.src.name)
        # ping gets SIGINT (and prints its summary) once the stop file appears.
        script = (f"ping -n -i {self.interval} -W 1 {self.dst.ip} > {self._run.out} 2>&1 & p=$!; "
                  f"while [ ! -e {self._run.stop_file} ]; do sleep 0.1; done; kill -INT $p; wait $p")
        argv = ["ip", "netns", "exec", netns, "sh", "-c", script]
        self._run.start(lambda: self.lab.run_root(argv, timeout=None), lambda out: "bytes from" in out,
                        first_reply_timeout, f"continuous ping {self.src.ip} -> {self.dst.ip}: no reply")
        return self

    def stop(self) -> tuple[int, int]:
        """Stop the ping; (sent, lost) counted over the sequence numbers up to the last reply."""
        return count_lost(self.stop_quietly())

    def stop_quietly(self) -> str:
        """Stop the ping and return its output."""
        return self._run.stop()


@dataclass(frozen=True)
class DirectionCount:
    """What a continuous ping counted in one direction."""

    src: Pod
    dst: Pod
    sent: int
    lost: int


class PingMatrix:
    """A continuous ping from every pod to every other pod (all ordered pairs), started and
    stopped together (a context manager): the measure of a fault's cost across the cluster."""

    def __init__(self, lab: "Lab", members: Sequence[Pod], interval: float = 0.05) -> None:
        self.interval = interval
        self._pings = tuple(ContinuousPing(lab, a, b, interval) for a in members for b in members if a is not b)
        self.counts: tuple[DirectionCount, ...] = ()

    def __enter__(self) -> "PingMatrix":
        started: list[ContinuousPing] = []
        try:
            for ping in self._pings:
                started.append(ping.start())
        except BaseException:
            for ping in started:
                ping.stop_quietly()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.counts = tuple(DirectionCount(p.src, p.dst, *p.stop()) for p in self._pings)
        for count in self.counts:
            print(f"continuous ping {count.src.name} -> {count.dst.name} every {self.interval * 1000:.0f} ms: "
                  f"{count.sent} sent, {count.lost} lost")

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.counts)

    @property
    def lost(self) -> int:
        return sum(c.lost for c in self.counts)
