"""The one interface through which the lab touches the kernel that hosts it.

Everything the lab does to namespaces, links and processes goes through a :class:`Backend`:
:class:`HostBackend` acts directly on this machine's kernel; ``calyxlab.uml.UmlBackend`` sends
the same requests to the control agent inside a user-mode Linux instance. The rest of the lab
does not care which one it holds.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from calyxlab import netnsprobe, procs


class CommandError(RuntimeError):
    """A command the lab needed failed; the message carries its argv, exit code and stderr."""

    def __init__(self, result: "Result", what: str = ""):
        self.result = result
        head = f"{what}: " if what else ""
        super().__init__(f"{head}command {' '.join(result.argv)!r} exited {result.returncode}: "
                         f"{(result.stderr or result.stdout).strip()}")


@dataclass(frozen=True)
class Result:
    """A finished command, shaped like :class:`subprocess.CompletedProcess`."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check_returncode(self, what: str = "") -> "Result":
        if self.returncode != 0:
            raise CommandError(self, what)
        return self

    def as_completed_process(self) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(list(self.argv), self.returncode, self.stdout,
                                           self.stderr)


@dataclass(frozen=True)
class ProcHandle:
    """A background process the lab started: PID and start time identify it for good."""

    pid: int
    start_time: int
    argv: tuple[str, ...]
    log: str | None = None
    node: str | None = None
    name: str | None = None

    def to_json(self) -> dict:
        return {"pid": self.pid, "start_time": self.start_time, "argv": list(self.argv),
                "log": self.log, "node": self.node, "name": self.name}

    @classmethod
    def from_json(cls, d: Mapping) -> "ProcHandle":
        return cls(int(d["pid"]), int(d["start_time"]), tuple(d.get("argv", ())), d.get("log"),
                   d.get("node"), d.get("name"))


class Backend(Protocol):
    """Runs commands and processes in the kernel that holds the lab's namespaces."""

    kernel: str

    def run(self, argv: Sequence[str], *, input: str | None = None,
            timeout: float | None = None, env: Mapping[str, str] | None = None) -> Result: ...

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log: str | None = None) -> tuple[int, int]: ...

    def alive(self, pid: int, start_time: int) -> bool: ...

    def terminate(self, pid: int, start_time: int, *, grace: float = 5.0) -> bool: ...

    def http_get(self, netns: str, host: str, port: int, path: str,
                 timeout: float) -> tuple[int | None, str]:
        """HTTP status of a GET made from inside network namespace ``netns`` (None: no answer),
        and the error when there was none."""


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class HostBackend:
    """The machine's own kernel."""

    kernel = "host"

    def run(self, argv: Sequence[str], *, input: str | None = None,
            timeout: float | None = None, env: Mapping[str, str] | None = None) -> Result:
        rc, out, err = procs.run(argv, input=input.encode() if input is not None else None,
                                 timeout=timeout, env=env)
        return Result(tuple(argv), rc, _text(out), _text(err))

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log: str | None = None) -> tuple[int, int]:
        return procs.spawn(argv, env=env, log=log)

    def alive(self, pid: int, start_time: int) -> bool:
        return procs.alive(pid, start_time)

    def terminate(self, pid: int, start_time: int, *, grace: float = 5.0) -> bool:
        return procs.terminate(pid, start_time, grace=grace)

    def http_get(self, netns: str, host: str, port: int, path: str,
                 timeout: float) -> tuple[int | None, str]:
        return netnsprobe.http_get_status(netns, host, port, path, timeout)

