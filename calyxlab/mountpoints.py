"""Mount points the labs' kubelets create on this machine, and which labs use them.

Containers mount their volumes on the paths their pod asks for (``/host/opt/cni/bin``,
``/var/run/secrets/kubernetes.io/serviceaccount``, ...); a path missing on this machine is
created empty first, and every lab's containers use the same paths. Removing such a directory
while another lab's containers have something mounted on it would detach their mounts, so a
registry (``<state root>/mount-points.json``, changed under an exclusive lock) records the labs
using each created path, and destroying a lab removes only the paths no other lab uses.
Standard library only.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from calyxlab.state import STATE_ROOT

REGISTRY_NAME = "mount-points.json"


def topmost_missing(path: str) -> str | None:
    """The highest directory of ``path`` that does not exist (None: ``path`` exists)."""
    p = Path(path)
    if p.exists() or p.is_symlink():
        return None
    while not p.parent.exists():
        p = p.parent
    return str(p)


class Registry:
    def __init__(self, root: Path = STATE_ROOT):
        self.path = root / REGISTRY_NAME

    @contextmanager
    def _locked(self) -> Iterator[dict[str, list[str]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
            yield data
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
            os.replace(tmp, self.path)

    def claim(self, lab: str, destinations: Iterable[str]) -> None:
        """Lab ``lab`` is about to mount on ``destinations``: it uses the ones still missing
        (which are created) and the created ones they lie in."""
        with self._locked() as data:
            for destination in destinations:
                top = topmost_missing(destination)
                if top is not None:
                    data.setdefault(top, [])
                for created, users in data.items():
                    if (destination == created or destination.startswith(created.rstrip("/") + "/")) \
                            and lab not in users:
                        users.append(lab)

    def release(self, lab: str) -> list[str]:
        """Lab ``lab`` is gone; the created paths no lab uses any more (forgotten here)."""
        with self._locked() as data:
            unused = []
            for created in list(data):
                users = [u for u in data[created] if u != lab]
                if users:
                    data[created] = users
                else:
                    unused.append(created)
                    del data[created]
            return unused


def remove_empty_dirs(paths: list[str]) -> list[str]:
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
