"""Scenario ``services`` (three nodes, FRR gateway, kube-proxy; host kernel), deployed once for
every module of this package and destroyed after the last: NetworkPolicy's truth table first
(it leaves the pool as it found it), then the Services' traffic."""
from __future__ import annotations

import pytest

from e2e_support import deployed


@pytest.fixture(scope="package")
def lab(request, unique_lab_name):
    with deployed(request, unique_lab_name, "services", kernel="host") as lab:
        yield lab
