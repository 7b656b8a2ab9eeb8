from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from bgpdtest_support import Net


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        n.destroy()


@pytest.fixture
def run_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bgpdtest") as d:
        os.chmod(d, 0o711)      # bfdd runs as FRR's user and must reach its directory below
        yield Path(d)
