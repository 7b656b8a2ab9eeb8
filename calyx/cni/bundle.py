"""Builds the self-contained CNI plugin executable: a PyInstaller one-dir bundle of
``calyx.cni`` (its own Python, pyroute2, the Kubernetes client and the CRDs), so that the
plugin runs on a host that has no Python of the right version, or none at all.

One-dir rather than one-file: a one-file executable unpacks itself into a temporary
directory on every call, and the container runtime calls the plugin once per pod sandbox.

The node image's build stage and the tests build it the same way:
``python -m calyx.cni.bundle --dist DIR`` leaves ``DIR/calyx/calyx`` (the executable) and
``DIR/calyx/_internal/``; ``calyx-cni install --plugin-dir DIR/calyx`` installs it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from calyx import crds

BUNDLE_NAME = "calyx"
ENTRY_SCRIPT = Path(__file__).with_name("__main__.py")
# calyx.crds looks in <sys.prefix>/share/calyx/crds; in a bundle sys.prefix is its _internal dir.
CRD_DEST = "share/calyx/crds"
# Reached only through pyroute2's test fixtures (collected with its submodules): not shipped.
TEST_ONLY_MODULES = ("pyroute2.fixtures", "pytest", "_pytest", "hypothesis")


def pyinstaller_argv(dist: Path, work: Path, *, onefile: bool = False, crd_dir: Path | None = None) -> list[str]:
    """The PyInstaller command line that builds the plugin bundle into ``dist``."""
    source = crd_dir or crds.crd_dir()
    return [
        sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
        "--onefile" if onefile else "--onedir", "--name", BUNDLE_NAME,
        # pyroute2 loads its netlink message classes by name at run time.
        "--collect-submodules", "pyroute2",
        *(arg for module in TEST_ONLY_MODULES for arg in ("--exclude-module", module)),
        "--add-data", f"{source}/*.yaml:{CRD_DEST}",
        "--distpath", str(dist), "--workpath", str(work), "--specpath", str(work),
        str(ENTRY_SCRIPT),
    ]


def build(dist: Path, work: Path, *, onefile: bool = False) -> Path:
    """Build the bundle; returns the executable's path."""
    subprocess.run(pyinstaller_argv(dist, work, onefile=onefile), check=True)
    return dist / BUNDLE_NAME if onefile else dist / BUNDLE_NAME / BUNDLE_NAME


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calyx.cni.bundle",
                                     description="build the self-contained calyx CNI plugin (PyInstaller)")
    parser.add_argument("--dist", required=True, type=Path, help="output directory")
    parser.add_argument("--work", type=Path, default=None, help="build directory (default: <dist>/.build)")
    parser.add_argument("--onefile", action="store_true", help="one self-unpacking file instead of a directory")
    args = parser.parse_args(argv)
    exe = build(args.dist, args.work or args.dist / ".build", onefile=args.onefile)
    print(exe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
