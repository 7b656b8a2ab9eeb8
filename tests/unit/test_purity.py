"""The modules docs/architecture.md calls pure import no I/O library, directly or through a
Calyx module that does: calculation stays testable without a kernel, an API or a network."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PURE = ["calyx/model.py", "calyx/selector.py", "calyx/naming.py", "calyx/route.py", "calyx/deltatracker.py",
        "calyx/ownership.py", "calyx/routesync.py", "calyx/memroutes.py", "felix/calc.py",
        "bgpd/peers.py", "bgpd/export.py", "bgpd/rib.py", "bgpd/reflector.py", "bgpd/importer.py",
        "bgpd/exabgp/config.py", "bgpd/exabgp/messages.py",
        "bgpd/propagation.py", "bgpd/settling.py", "bgpd/session.py", "bgpd/status.py"]
IO_LIBRARIES = {"pyroute2", "kubernetes", "socket", "subprocess", "urllib3", "requests"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_path(name: str) -> Path | None:
    for candidate in (REPO / (name.replace(".", "/") + ".py"), REPO / name.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _reachable_io(path: Path, seen: set[Path]) -> set[str]:
    """I/O libraries imported by ``path`` or by the project modules it imports, transitively."""
    if path in seen:
        return set()
    seen.add(path)
    found: set[str] = set()
    for name in _imports(path):
        if name.split(".")[0] in IO_LIBRARIES:
            found.add(f"{name} (in {path.relative_to(REPO)})")
        elif name.split(".")[0] in ("calyx", "felix", "bgpd"):
            target = _module_path(name)
            if target is not None:
                found |= _reachable_io(target, seen)
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module):
    assert _reachable_io(REPO / module, set()) == set()
