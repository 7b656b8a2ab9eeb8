from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from calyxlab.controlplane.pytest_plugin import KubeAccess
from felixtest_support import Bed, felix_bed


@pytest.fixture
def bed(tmp_path: Path, kube: KubeAccess) -> Iterator[Bed]:
    with felix_bed(tmp_path, kube) as value:
        yield value
