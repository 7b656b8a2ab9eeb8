"""Where the control plane's binaries are: ``.tools/<project>/<version>/bin`` of the checkout,
at the versions that ``tools/etcd/go.mod`` and ``tools/kubernetes/go.mod`` require (the one place
those versions are written). ``scripts/build-kube.sh`` (``make tools``) builds them there.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("CALYX_TOOLS_DIR", REPO_ROOT / ".tools"))
KUBE_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")


class BinariesMissing(RuntimeError):
    """A control-plane binary is not built; the message says which and how to build it."""


def required_version(go_mod: Path, module: str) -> str:
    """The version ``go_mod`` requires of ``module`` (pure but for the read)."""
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", re.M)
    found = pattern.search(go_mod.read_text())
    if not found:
        raise BinariesMissing(f"{go_mod}: requires no {module}")
    return found.group(1)


def kube_version() -> str:
    return required_version(REPO_ROOT / "tools" / "kubernetes" / "go.mod", KUBE_MODULE)


def etcd_version() -> str:
    return required_version(REPO_ROOT / "tools" / "etcd" / "go.mod", ETCD_MODULE)


@dataclass(frozen=True)
class Binaries:
    """Paths of every control-plane binary of one build."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kube_proxy: Path

    def check(self) -> "Binaries":
        missing = [str(p) for p in vars(self).values() if not os.access(p, os.X_OK)]
        if missing:
            raise BinariesMissing(f"control-plane binaries not built: {', '.join(missing)}; "
                                  f"run 'make tools' (scripts/build-kube.sh)")
        return self


def locate() -> Binaries:
    """The built binaries of the pinned versions; :class:`BinariesMissing` if any is absent."""
    kube = TOOLS_DIR / "kubernetes" / kube_version() / "bin"
    etcd = TOOLS_DIR / "etcd" / etcd_version() / "bin" / "etcd"
    return Binaries(etcd, *(kube / c for c in KUBE_COMMANDS)).check()
