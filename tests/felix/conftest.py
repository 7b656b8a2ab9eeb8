from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from felixtest_support import Bed, felix_bed


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with felix_bed(tmp_path) as value:
        yield value
