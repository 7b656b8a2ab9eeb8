"""felix as a process with the real API and kernel: an IPPool with natOutgoing makes it program
``ip calyx-nat``; a restarted felix adopts the table with no nftables write; a table deleted by
hand is back at the next resync; natOutgoing switched off removes the table."""
from __future__ import annotations

from ipaddress import IPv4Network

from felix.dataplane import nftjson
from felix.dataplane.nfttable import LibNftables
from felixtest_support import Bed, wait_for


def nat_writes(bed: Bed) -> float:
    return bed.metric("felix_netlink_writes_total", labels='object="nat"')


def table(nft: LibNftables) -> nftjson.ObservedTable | None:
    listing = nft.list_table(nftjson.FAMILY, nftjson.TABLE)
    return None if listing is None else nftjson.parse_table(listing)


def test_felix_programs_adopts_repairs_and_removes_the_nat_table(bed: Bed) -> None:
    nft = LibNftables(bed.netns)
    bed.create_node()
    bed.put_pool(natOutgoing=True)
    want = {"masq-sources": {IPv4Network("10.244.0.0/16")}, "all-pools": {IPv4Network("10.244.0.0/16")},
            "node-addresses": {IPv4Network(f"{bed.node_ip}/32")}}

    def as_wanted() -> bool:
        t = table(nft)
        return t is not None and t.intact and {k: set(v) for k, v in t.elements.items()} == want

    first = bed.start_felix()
    bed.wait_ready(first)
    wait_for("ip calyx-nat as wanted", as_wanted, detail=lambda: table(nft))
    assert nat_writes(bed) == 1
    assert bed.metric("felix_nat_available") == 1
    assert first.stop() == 0
    assert as_wanted()                                     # stopping leaves the table as it is

    second = bed.start_felix(FELIX_ROUTEREFRESHINTERVAL="2")
    bed.wait_ready(second)
    assert nat_writes(bed) == 0                            # adopted: nothing written
    nft.run([nftjson.delete_table_command()])
    wait_for("ip calyx-nat back after the resync", as_wanted, detail=lambda: table(nft))
    assert nat_writes(bed) == 1

    bed.put_pool(natOutgoing=False)
    wait_for("ip calyx-nat removed", lambda: table(nft) is None)
    assert nat_writes(bed) == 2
    assert "NAT table removed" in second.log() and "NAT unavailable" not in second.log()
