"""Container processes: started inside the lab node with the pod's volumes mounted, identified
by PID and start time, stopped with SIGTERM then SIGKILL.

A container is a process of the project's virtualenv with exactly the container's
environment (``env -i``). The virtualenv stands in for the node image: a command that is not
an absolute path is looked up in its bin directory, and the one path of the image the chart
uses, the CNI plugin bundle in ``/opt/calyx/cni-plugin``, is a directory whose ``calyx``
runs the virtualenv's plugin (:func:`lab_image`). It runs under a small shell that first mounts the
volumes (:func:`calyxlab.nodeview.enter_argv`), then waits for the command and writes its exit
status to a file, which the kubelet reads as the container's exit code.
"""
from __future__ import annotations

import datetime
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from calyxlab import nodeview
from calyxlab.backend import Backend
from calyxlab.kubelet.podspec import ContainerPlan, PodPlan
from calyxlab.kubelet.volumes import VolumeSource
from calyxlab.state import LabNames
from calyxlab.topology import Node

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now_rfc3339(wall: float | None = None) -> str:
    stamp = datetime.datetime.fromtimestamp(time.time() if wall is None else wall,
                                            datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_tail(exit_file: str) -> str:
    """The wrapper's last lines: run the command, pass SIGTERM on, record the exit status."""
    target = shlex.quote(exit_file)
    return "\n".join([
        "set +e",
        f"rm -f {target}",
        "child=",
        "trap '[ -n \"$child\" ] && kill -TERM \"$child\" 2>/dev/null' TERM INT",
        '"$@" &',
        "child=$!",
        'while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done',
        f'echo "$rc" > {target}',
        'exit "$rc"',
    ])


IMAGE_PLUGIN_DIR = "/opt/calyx/cni-plugin"


def lab_image(directory: Path, python: str) -> tuple[nodeview.Mount, ...]:
    """The image paths the lab provides, made under ``directory``; mounts for every container."""
    from calyx.cni.install import render_wrapper
    from calyx.cni.config import PLUGIN_TYPE
    plugin = directory / "cni-plugin"
    plugin.mkdir(parents=True, exist_ok=True)
    entry = plugin / PLUGIN_TYPE
    entry.write_text(render_wrapper(python))
    entry.chmod(0o755)
    return (nodeview.Mount(str(plugin), IMAGE_PLUGIN_DIR, read_only=True),)


def image_roots(*paths: str) -> tuple[str, ...]:
    """The directories the lab's "image" consists of (the repository, the virtualenv, the
    Python it was made from), without those inside another."""
    unique = sorted({str(Path(p).resolve()) for p in paths}, key=len)
    kept: list[str] = []
    for path in unique:
        if not any(_inside(path, k) for k in kept):
            kept.append(path)
    return tuple(kept)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def keep_visible(roots: tuple[str, ...], mounts: tuple[nodeview.Mount, ...],
                 stage: Path) -> tuple[nodeview.Mount, ...]:
    """``mounts``, plus what keeps each image root reachable at its own path when one of them
    covers it (the chart's emptyDir on /tmp hides a virtualenv under /tmp): the root is first
    bound to a staging directory, and bound back on top once the volumes are in place (pure)."""
    covered = [r for r in roots if any(_inside(r, m.destination) for m in mounts)]
    before = tuple(nodeview.Mount(root, str(stage / str(i))) for i, root in enumerate(covered))
    after = tuple(nodeview.Mount(str(stage / str(i)), root) for i, root in enumerate(covered))
    return before + mounts + after


@dataclass(frozen=True)
class Started:
    pid: int
    start_time: int
    started_at: str
    started_wall: float
    exit_file: str


class ContainerRuntime:
    def __init__(self, backend: Backend, names: LabNames, node: Node, bin_dir: Path,
                 service_env: Mapping[str, str], image: tuple[nodeview.Mount, ...] = (),
                 image_roots: tuple[str, ...] = ()):
        self.image = image
        self.image_roots = image_roots
        self.backend = backend
        self.names = names
        self.node = node
        self.bin_dir = bin_dir
        self.service_env = dict(service_env)

    def argv0(self, command: str) -> str:
        return command if command.startswith("/") else str(self.bin_dir / command)

    def mount_points(self, container: ContainerPlan) -> list[str]:
        """Every path the container's view mounts something on (image and volumes)."""
        return [m.destination for m in self.image] + [m.mount_path for m in container.mounts]

    def start(self, plan: PodPlan, container: ContainerPlan, sources: Mapping[str, VolumeSource],
              pod_dir: Path, log: Path) -> Started:
        volumes = tuple(nodeview.Mount(sources[m.volume].path, m.mount_path, m.read_only,
                                       sources[m.volume].node_runtime_dir)
                        for m in container.mounts)
        stage = pod_dir / "image-roots"
        mounts = keep_visible(self.image_roots, self.image + volumes, stage)
        for m in mounts:       # a staging directory must exist (as a directory) to be bound
            if m.source.startswith(str(stage) + "/"):
                Path(m.source).mkdir(parents=True, exist_ok=True)
        exit_file = str(pod_dir / "containers" / container.name / "exit")
        Path(exit_file).parent.mkdir(parents=True, exist_ok=True)
        Path(exit_file).unlink(missing_ok=True)
        env = {"PATH": f"{self.bin_dir}:{BASE_PATH}", "HOSTNAME": self.node.name,
               **self.service_env, **dict(container.env)}
        argv = [self.argv0(container.argv[0]), *container.argv[1:]]
        full = ["env", "-i", *(f"{k}={v}" for k, v in env.items()),
                *nodeview.enter_argv(self.names, self.node, argv, extra=mounts,
                                     tail=exit_tail(exit_file))]
        wall = time.time()
        pid, started = self.backend.spawn(full, log=str(log))
        return Started(pid, started, now_rfc3339(wall), wall, exit_file)

    def alive(self, pid: int, start_time: int) -> bool:
        return start_time >= 0 and self.backend.alive(pid, start_time)

    @staticmethod
    def exit_code(exit_file: str) -> int:
        """The recorded exit status; 137 (killed) when the wrapper itself was killed."""
        try:
            return int(Path(exit_file).read_text().strip())
        except (OSError, ValueError):
            return 137

    def stop(self, pid: int, start_time: int, grace: float) -> None:
        # The wrapper passes SIGTERM on to the command and exits with it.
        self.backend.terminate(pid, start_time, grace=grace)

    @staticmethod
    def exit_wall(exit_file: str) -> float:
        try:
            return os.stat(exit_file).st_mtime
        except OSError:
            return time.time()
