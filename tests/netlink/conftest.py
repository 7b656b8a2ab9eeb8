from __future__ import annotations

from typing import Iterator

import pytest

from calyx.netlink import RouteTable
from scratch import add_veth, scratch_netns


@pytest.fixture
def netns() -> Iterator[str]:
    with scratch_netns("cxnl") as name:
        add_veth(name, "up0", address="10.250.0.1/24")
        yield name


@pytest.fixture
def table(netns: str) -> Iterator[RouteTable]:
    rt = RouteTable(netns)
    try:
        yield rt
    finally:
        rt.close()
