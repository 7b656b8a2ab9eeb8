"""Where ``calyxctl ipam`` reads each node's assignments: the run directory of this node or one
named with ``--records``, and felix's ``/ipam`` view over real HTTP; a node whose records
cannot be read is named with the reason, never silently taken as empty."""
from __future__ import annotations

import argparse
import socket
from ipaddress import IPv4Address, IPv4Interface

from prometheus_client import CollectorRegistry

from calyx import model
from calyx.cni.ipam import Allocation, AddressStore, State, node_ipam_records
from calyx.observability import HealthServer
from calyxctl.ipam import read_records


def _write(run_dir, *allocations: Allocation) -> None:
    store = AddressStore(str(run_dir))
    with store.locked():
        store.write(State(allocations=allocations))


def _alloc(address: str, pod: str) -> Allocation:
    return Allocation(IPv4Address(address), f"cid-{pod}", "eth0", "default", pod, f"cali-{pod}")


def _args(tmp_path, **kw) -> argparse.Namespace:
    base = dict(records=[], run_dir=str(tmp_path / "no-local"), node_name="here", felix_port=1)
    base.update(kw)
    return argparse.Namespace(**base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_records_from_directories_and_from_felix_over_http(tmp_path):
    here, there, bad = tmp_path / "here", tmp_path / "there", tmp_path / "bad"
    _write(here, _alloc("10.70.0.1", "a"))
    _write(there, _alloc("10.70.0.17", "c"), _alloc("10.70.0.18", "d"))
    (bad / "ipam").mkdir(parents=True)
    (bad / "ipam" / "state.json").write_text("{not json")
    nodes = {name: model.NodeInfo(name=name, bgp_address=IPv4Interface("127.0.0.1/32"))
             for name in ("here", "remote")}
    view = HealthServer("127.0.0.1", 0, CollectorRegistry(),
                        json_views={"/ipam": lambda: node_ipam_records("remote", there)})
    with view:
        args = _args(tmp_path, run_dir=str(here), records=[f"gone={there}", f"broken={bad}"],
                     felix_port=view.port)
        assignments, unread = read_records(args, nodes)
    assert [(a.node, str(a.address), a.pod, a.handle) for a in assignments["here"]] == [
        ("here", "10.70.0.1", "a", "cid-a/eth0")]
    assert [str(a.address) for a in assignments["remote"]] == ["10.70.0.17", "10.70.0.18"]
    assert [a.node for a in assignments["gone"]] == ["gone", "gone"]        # a node no longer in the API
    assert set(assignments) == {"here", "remote", "gone"}
    assert "state.json: corrupt IPAM state" in unread["broken"]
    assert set(unread) == {"broken"}


def test_an_unreachable_felix_is_named_not_taken_as_empty(tmp_path):
    port = _free_port()
    nodes = {"remote": model.NodeInfo(name="remote", internal_ip=IPv4Address("127.0.0.1")),
             "nowhere": model.NodeInfo(name="nowhere")}
    assignments, unread = read_records(_args(tmp_path, felix_port=port), nodes)
    assert assignments == {}
    assert unread["remote"].startswith(f"http://127.0.0.1:{port}/ipam: ")
    assert unread["nowhere"] == ("Node 'nowhere' has no calyx.dev/ipv4-address annotation and no InternalIP")
