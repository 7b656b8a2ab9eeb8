"""Scenario ``vxlan-cross-subnet`` (four nodes in two subnets, VXLAN CrossSubnet, BGP off; host
kernel), deployed once for every module of this package and destroyed after the last, with one
pod per node: the paths first (their switch to VXLAN Always is undone at the end), then
``calyxctl trace``, whose last test stops node3's Calyx."""
from __future__ import annotations

import pytest

from e2e_support import add_pods, deployed


@pytest.fixture(scope="package")
def lab(request, unique_lab_name):
    with deployed(request, unique_lab_name, "vxlan-cross-subnet", kernel="host") as lab:
        yield lab


@pytest.fixture(scope="package")
def cluster_pods(lab):
    return add_pods(lab, ["node1", "node2", "node3", "node4"])
