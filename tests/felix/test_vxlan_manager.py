"""felix's VXLAN manager against an in-memory kernel: creates the device and entries, adopts
them on restart with no write, writes only differences, removes stale entries, recreates a
device with other VXLAN parameters, removes the device after the grace, and says which VTEP
annotations the node should carry."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface

from prometheus_client import CollectorRegistry

from calyx.vxlanlink import VxlanDevice
from felix.dataplane.vxlan import MemoryVxlanWriter, VxlanManager
from felix.metrics import FelixMetrics
from felix.vxlancalc import VxlanPeer, VxlanSpec

DEV = "vxlan.calico"
B = VxlanPeer("node-b", IPv4Address("10.244.2.0"), "66:00:00:00:00:0b", IPv4Address("192.168.1.11"))
C = VxlanPeer("node-c", IPv4Address("10.244.3.0"), "66:00:00:00:00:0c", IPv4Address("192.168.2.12"))
SPEC = VxlanSpec(True, address=IPv4Address("10.244.1.0"), local=IPv4Address("192.168.1.10"), mtu=1450,
                 peers=(B, C), reason="VXLAN pool(s) vx")
OFF = VxlanSpec(False, reason="no pool uses VXLAN")


def manager(kernel: MemoryVxlanWriter, grace: float = 30.0) -> tuple[VxlanManager, CollectorRegistry]:
    registry = CollectorRegistry()
    return VxlanManager(kernel, FelixMetrics.create(registry), grace=grace), registry


def writes_metric(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("felix_netlink_writes_total", {"object": "vxlan"}) or 0.0


def test_creates_the_device_with_its_address_and_entries_then_adopts_them_on_restart() -> None:
    kernel = MemoryVxlanWriter()
    vxlan, registry = manager(kernel)
    vxlan.apply(SPEC, now=0)
    device = kernel.devices[DEV]
    assert (device.kind, device.vni, device.port, device.local, device.learning, device.mtu, device.up) == (
        "vxlan", 4096, 4789, IPv4Address("192.168.1.10"), False, 1450, True)
    assert device.addresses == (IPv4Interface("10.244.1.0/32"),)
    assert kernel.neigh[DEV] == {B.vtep: B.mac, C.vtep: C.mac}
    assert kernel.fdb_entries[DEV] == {B.mac: B.underlay, C.mac: C.underlay}
    assert writes_metric(registry) == kernel.writes == 7    # create, address, up, 2 neighbours, 2 FDB
    assert vxlan.annotations == {"calyx.dev/ipv4-vxlan-tunnel-addr": "10.244.1.0",
                                 "calyx.dev/vxlan-tunnel-mac": device.mac}

    kernel.writes = 0
    restarted, registry = manager(kernel)
    restarted.apply(SPEC, now=100)
    assert kernel.writes == 0 and writes_metric(registry) == 0
    assert restarted.annotations == vxlan.annotations         # the same device, the same MAC


def test_only_differences_are_written_and_stale_entries_removed() -> None:
    kernel = MemoryVxlanWriter()
    vxlan, _ = manager(kernel)
    vxlan.apply(SPEC, now=0)
    kernel.neigh[DEV][IPv4Address("10.244.9.0")] = "66:00:00:00:00:99"        # a node that left
    kernel.fdb_entries[DEV]["66:00:00:00:00:99"] = IPv4Address("192.168.9.9")
    moved = replace(C, underlay=IPv4Address("192.168.2.99"))
    kernel.writes = 0
    vxlan.apply(replace(SPEC, peers=(B, moved), mtu=1400), now=1)
    assert kernel.neigh[DEV] == {B.vtep: B.mac, C.vtep: C.mac}
    assert kernel.fdb_entries[DEV] == {B.mac: B.underlay, C.mac: moved.underlay}
    assert kernel.devices[DEV].mtu == 1400
    assert kernel.writes == 4          # MTU, stale neighbour, stale FDB entry, moved FDB entry


def test_a_device_with_other_vxlan_parameters_is_recreated() -> None:
    kernel = MemoryVxlanWriter()
    kernel.devices[DEV] = VxlanDevice(DEV, "vxlan", 1450, True, "66:00:00:00:00:aa",
                                      (IPv4Interface("10.244.1.0/32"),), 1, 4789, IPv4Address("192.168.1.10"), False)
    kernel.neigh[DEV], kernel.fdb_entries[DEV] = {}, {}
    vxlan, _ = manager(kernel)
    vxlan.apply(SPEC, now=0)
    assert kernel.devices[DEV].vni == 4096 and kernel.devices[DEV].mac != "66:00:00:00:00:aa"
    assert vxlan.annotations is not None
    assert vxlan.annotations["calyx.dev/vxlan-tunnel-mac"] == kernel.devices[DEV].mac


def test_the_device_stays_for_the_grace_then_goes_and_the_annotations_with_it() -> None:
    kernel = MemoryVxlanWriter()
    vxlan, _ = manager(kernel, grace=30)
    vxlan.apply(SPEC, now=0)
    published = vxlan.annotations
    assert vxlan.apply(OFF, now=10) == 40
    assert DEV in kernel.devices and kernel.neigh[DEV]        # still decapsulating
    assert vxlan.annotations == published                     # peers still send here: keep them
    assert vxlan.apply(OFF, now=39) == 40 and DEV in kernel.devices
    assert vxlan.apply(OFF, now=40) is None
    assert DEV not in kernel.devices
    assert vxlan.annotations == {"calyx.dev/ipv4-vxlan-tunnel-addr": None, "calyx.dev/vxlan-tunnel-mac": None}


def test_wanted_again_within_the_grace_cancels_the_teardown() -> None:
    kernel = MemoryVxlanWriter()
    vxlan, _ = manager(kernel, grace=30)
    vxlan.apply(SPEC, now=0)
    mac = kernel.devices[DEV].mac
    vxlan.apply(OFF, now=10)
    kernel.writes = 0
    assert vxlan.apply(SPEC, now=20) is None
    assert kernel.writes == 0 and kernel.devices[DEV].mac == mac


def test_no_vxlan_anywhere_writes_nothing() -> None:
    kernel = MemoryVxlanWriter()
    vxlan, _ = manager(kernel)
    assert vxlan.apply(OFF, now=0) is None
    assert kernel.writes == 0 and kernel.devices == {}
    assert vxlan.annotations == {"calyx.dev/ipv4-vxlan-tunnel-addr": None, "calyx.dev/vxlan-tunnel-mac": None}


def test_a_failing_entry_write_does_not_stop_the_others() -> None:
    class Refusing(MemoryVxlanWriter):
        def set_neighbour(self, name: str, address: IPv4Address, mac: str) -> None:
            if address == B.vtep:
                raise OSError("Invalid argument")
            super().set_neighbour(name, address, mac)

    kernel = Refusing()
    vxlan, registry = manager(kernel)
    vxlan.apply(SPEC, now=0)
    assert kernel.neigh[DEV] == {C.vtep: C.mac} and len(kernel.fdb_entries[DEV]) == 2
    assert registry.get_sample_value("felix_errors_total", {"kind": "vxlan"}) == 1
