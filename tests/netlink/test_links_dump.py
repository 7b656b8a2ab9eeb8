"""RouteTable.links() reads every interface's name and index, as iproute2 sees them."""
from __future__ import annotations

import json
import subprocess

import pytest

from calyx.netlink import RouteTable
from scratch import ip

pytestmark = pytest.mark.lab     # scratch network namespaces on this machine


def test_links_match_iproute2_for_many_interfaces_and_long_names(netns: str, table: RouteTable) -> None:
    batch = "\n".join(f"link add cali{i:011x} type veth peer name q{i}" for i in range(300)) + "\n"
    subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch, text=True, check=True)
    ip("link", "add", "x" * 15, "type", "veth", "peer", "name", "y" * 15, netns=netns)
    expected = {link["ifname"]: link["ifindex"] for link in json.loads(ip("-j", "link", "show", netns=netns).stdout)}
    links = table.links()
    assert links == expected
    assert len(links) == 2 * 301 + 3 and links["x" * 15] == expected["x" * 15]
    ip("link", "del", "cali00000000000", netns=netns)
    assert "cali00000000000" not in table.links() and "q0" not in table.links()
