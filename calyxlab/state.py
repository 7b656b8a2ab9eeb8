"""A lab's names and its state file: what was created, so destroy can undo all of it.

Every name the lab gives to a kernel object derives from the lab name, so destroy can find
leftovers even when the state file is missing or partial. The state file
(``/var/lib/calyx-lab/<lab>/state.json``) is rewritten atomically after every step of a
deploy: namespaces, bridge, tap, the UML instance and every process with its start time.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_ROOT = Path(os.environ.get("CALYX_LAB_STATE_ROOT", "/var/lib/calyx-lab"))
RUN_ROOT = Path("/run/calyx-lab")
STATE_FILE = "state.json"


def _digest(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class LabNames:
    """Every name and path a lab uses, derived from the lab name alone (pure)."""

    lab: str

    @property
    def bridge(self) -> str:
        return "br-" + _digest(self.lab)[:12]

    @property
    def tap(self) -> str:
        return "ctap" + _digest(self.lab)[:11]

    def mgmt_veth(self, node: str) -> str:
        """Root-side end of ``node``'s eth0."""
        return "vc" + _digest(self.lab, node)[:12]

    def namespace(self, node: str) -> str:
        return f"clab-{self.lab}-{node}"

    @property
    def namespace_prefix(self) -> str:
        return f"clab-{self.lab}-"

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.lab

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def uml_agent_key(self) -> Path:
        """The key the lab's user-mode Linux agent requires of every request (mode 0600)."""
        return self.state_dir / "uml-agent.key"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def control_plane_dir(self) -> Path:
        """etcd's data, the cluster PKI, component kubeconfigs and logs of the lab's control plane."""
        return self.state_dir / "control-plane"

    def node_kubeconfig(self, node: str) -> Path:
        """Credentials of ``node``'s kubelet role (``system:node:NODE``)."""
        return self.state_dir / "nodes" / node / "kubelet.kubeconfig"

    def kubelet_dir(self, node: str) -> Path:
        """The lab kubelet of ``node``: its records, its pods' volumes, the lab's image paths."""
        return self.state_dir / "nodes" / node / "kubelet"

    def kubelet_records(self, node: str) -> Path:
        return self.kubelet_dir(node) / "records.json"

    def log_dir(self, node: str) -> Path:
        return self.state_dir / "logs" / node

    @property
    def run_dir(self) -> Path:
        """Per-lab runtime root (Unix sockets; inside UML this is UML's own /run)."""
        return RUN_ROOT / self.lab

    def node_run_dir(self, node: str) -> Path:
        return self.run_dir / node


class StateFile:
    """The lab's state document, saved after each change."""

    def __init__(self, names: LabNames, data: dict[str, Any] | None = None):
        self.names = names
        self.data: dict[str, Any] = data if data is not None else {
            "lab": names.lab, "namespaces": [], "processes": [], "links": []}

    @classmethod
    def load(cls, names: LabNames) -> "StateFile | None":
        try:
            data = json.loads(names.state_file.read_text())
        except (OSError, ValueError):
            return None
        return cls(names, data) if isinstance(data, dict) else None

    def save(self) -> None:
        self.names.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.names.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(tmp, self.names.state_file)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def append(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)
        self.save()

    def remove_process(self, pid: int, start_time: int) -> None:
        self.data["processes"] = [p for p in self.data.get("processes", [])
                                  if (p["pid"], p["start_time"]) != (pid, start_time)]
        self.save()


def known_labs() -> list[str]:
    """Labs with a state directory on this machine."""
    if not STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir())


def remove_state(names: LabNames) -> None:
    shutil.rmtree(names.state_dir, ignore_errors=True)
