"""What the lab's kubelet runs, on disk, so a restarted kubelet adopts its containers instead
of starting second copies, and stopping a node's daemons finds every process it started.
(The mount points it creates are in :mod:`calyxlab.mountpoints`, shared by every lab.)

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

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"containers": {k: asdict(v) for k, v in self.containers.items()}},
                                  indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    def put(self, record: ContainerRecord) -> None:
        self.containers[self.key(record.pod_uid, record.container)] = record
        self.save()

    def drop(self, pod_uid: str, container: str) -> None:
        if self.containers.pop(self.key(pod_uid, container), None) is not None:
            self.save()
