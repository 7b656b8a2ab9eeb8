from __future__ import annotations

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
        yield Path(d)
