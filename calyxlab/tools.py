"""Finds the external command-line tools the lab and its tests drive (kubectl, helm): on PATH,
else where `scripts/setup.sh` puts them (the virtualenv's bin, then `.tools/bin`)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class ToolNotFound(FileNotFoundError):
    """A required tool is missing; the message says where it was looked for and how to get it."""


def find_tool(name: str) -> str:
    candidates = [Path(sys.executable).parent / name, REPO_ROOT / ".tools" / "bin" / name]
    found = shutil.which(name) or next((str(c) for c in candidates if c.is_file()), None)
    if found is None:
        raise ToolNotFound(f"{name} not found on PATH nor in {', '.join(str(c.parent) for c in candidates)}; "
                           "run `bash scripts/setup.sh`")
    return found
