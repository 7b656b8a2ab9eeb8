"""What the lab's kubelet runs, on disk, so a restarted kubelet adopts its containers instead
of starting second copies, and ``calyx-lab destroy`` (or stopping a node's daemons) finds
every process and every mount point it created.

``<lab state>/nodes/<node>/kubelet/records.json``, rewritten by rename after each change.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ContainerRecord:
    pod_uid: str
    pod: str                 # namespace/name, for people reading the file
    container: str
    pid: int
    start_time: int          # clock ticks since boot (with pid: the process's identity)
    started_at: str          # RFC 3339
    started_wall: float
    restart_count: int
    exit_file: str


class Records:
    def __init__(self, path: Path):
        self.path = path
        self.containers: dict[str, ContainerRecord] = {}
        self.created_paths: list[str] = []
        self._load()

    @staticmethod
    def key(pod_uid: str, container: str) -> str:
        return f"{pod_uid}/{container}"

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        self.containers = {k: ContainerRecord(**v) for k, v in data.get("containers", {}).items()}
        self.created_paths = list(data.get("created_paths", []))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"containers": {k: asdict(v) for k, v in self.containers.items()},
                                   "created_paths": self.created_paths}, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    def put(self, record: ContainerRecord) -> None:
        self.containers[self.key(record.pod_uid, record.container)] = record
        self.save()

    def drop(self, pod_uid: str, container: str) -> None:
        if self.containers.pop(self.key(pod_uid, container), None) is not None:
            self.save()

    def created(self, path: str) -> None:
        if path not in self.created_paths:
            self.created_paths.append(path)
            self.save()


def remove_created_paths(paths: list[str]) -> list[str]:
    """Remove the empty directories among ``paths`` and below them, deepest first; returns
    what was removed (anything holding a file is left alone)."""
    removed = []
    for top in sorted(set(paths), key=len, reverse=True):
        root = Path(top)
        if not root.is_dir() or root.is_symlink():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(root, topdown=False), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
                removed.append(dirpath)
            except OSError:
                pass
    return removed
