"""The modules docs/architecture.md calls pure import no I/O library and touch no file, directly
or through a Calyx module that does: calculation stays testable without a kernel, an API, a
network or the CRD files (their schemas are handed in as data)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PURE = ["calyx/model.py", "calyx/ippools.py", "calyx/selector.py", "calyx/naming.py", "calyx/route.py",
        "calyx/deltatracker.py", "calyx/ownership.py", "calyx/routesync.py", "calyx/memroutes.py",
        "calyx/specschema.py", "calyx/cni/leaks.py", "felix/calc.py", "felix/vxlancalc.py", "felix/probepackets.py", "felix/grace.py", "felix/nat.py",
        "felix/dataplane/nftjson.py",
        "felix/policycalc.py", "felix/policyindex.py", "calyx/networkpolicy.py",
        "felix/dataplane/memnft.py",
        "bgpd/peers.py", "bgpd/export.py", "bgpd/rib.py", "bgpd/reflector.py", "bgpd/importer.py",
        "bgpd/exabgp/config.py", "bgpd/exabgp/messages.py",
        "bgpd/propagation.py", "bgpd/settling.py", "bgpd/session.py", "bgpd/sessions.py", "bgpd/status.py",
        "bgpd/loglevel.py", "bgpd/endofrib.py", "bgpd/restarts.py", "bgpd/services.py", "calyx/logs.py", "bgpd/bfd/protocol.py", "bgpd/bfd/tracker.py",
        "calyxctl/tables.py", "calyxctl/resourceview.py", "calyxctl/ipamview.py", "calyxctl/statusview.py",
        "calyxctl/trace/facts.py", "calyxctl/trace/analysis.py", "calyxctl/trace/render.py", "calyxctl/trace/probereport.py"]
IO_LIBRARIES = {"pyroute2", "kubernetes", "socket", "subprocess", "urllib3", "requests", "os", "pathlib", "shutil",
                "tempfile", "io", "yaml", "http", "select", "threading"}
FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "iterdir", "glob", "rglob", "mkdir",
              "unlink", "listdir", "scandir", "stat"}


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports; ``from pkg import name`` counts as ``pkg.name`` too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _file_access(path: Path) -> set[str]:
    """Calls that read or write files: ``open(...)``, ``x.read_text()`` and the like."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in FILE_CALLS:
            found.add(f"{name}() at {path.relative_to(REPO)}:{node.lineno}")
    return found


def _module_path(name: str) -> Path | None:
    for candidate in (REPO / (name.replace(".", "/") + ".py"), REPO / name.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _reachable_io(path: Path, seen: set[Path]) -> set[str]:
    """I/O libraries imported and file accesses made by ``path`` or by the project modules it
    imports, transitively."""
    if path in seen:
        return set()
    seen.add(path)
    found = _file_access(path)
    for name in _imports(path):
        if name.split(".")[0] in IO_LIBRARIES:
            found.add(f"{name} (in {path.relative_to(REPO)})")
        elif name.split(".")[0] in ("calyx", "felix", "bgpd"):
            target = _module_path(name)
            if target is not None:
                found |= _reachable_io(target, seen)
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_does_no_io(module):
    assert _reachable_io(REPO / module, set()) == set()


def test_the_check_sees_io_through_from_imports_and_file_reads():
    """The check itself: a pure-looking module reaching calyx.crds (which reads the CRD files)
    through ``from calyx import crds`` is caught, and so is a direct file read."""
    assert any("read_text" in f or "yaml" in f or "os" in f
               for f in _reachable_io(REPO / "calyx/crds.py", set()))
    module = REPO / "calyx" / "_purity_probe.py"
    try:
        module.write_text("from calyx import crds\n")
        assert any("crds" in f for f in _reachable_io(module, set()))
        module.write_text("def f(p):\n    return p.read_text()\n")
        assert _reachable_io(module, set()) == {"read_text() at calyx/_purity_probe.py:2"}
    finally:
        module.unlink()
