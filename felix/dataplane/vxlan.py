"""The VXLAN manager: ``vxlan.calico`` (device, /32 address, MTU, up) and its permanent neighbour
and FDB entries as :func:`felix.vxlancalc.desired_vxlan` wants them, with the device's teardown
grace (:func:`felix.vxlancalc.plan_vxlan_device`).

Every pass reads the device and its entries from the kernel and writes only the difference:
on start felix adopts a device and entries already in place (0 writes when nothing changed),
entries on the device that are no longer wanted are removed, and a device with other VXLAN
parameters (VNI, port, source address, learning) or of another kind is recreated. When no pool
wants VXLAN any more, the device is deleted once the grace has run out. The kernel is reached
only through the injected :class:`VxlanWriter` (:class:`calyx.vxlanlink.VxlanLinks`, or
:class:`MemoryVxlanWriter` in unit tests).
"""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, Callable, Protocol

from calyx.logs import get_logger
from calyx.naming import VXLAN_DEVICE
from calyx.vxlanlink import VxlanDevice
from felix.metrics import FelixMetrics
from felix.grace import DeviceGrace
from felix.vxlancalc import VxlanSpec, plan_vxlan_device, vtep_annotations


class VxlanWriter(Protocol):
    """The kernel's VXLAN device and its entries, as the manager reads and writes them."""

    def device(self, name: str) -> VxlanDevice | None: ...
    def create(self, name: str, vni: int, port: int, local: IPv4Address, mtu: int) -> None: ...
    def delete(self, name: str) -> None: ...
    def set_link(self, name: str, mtu: int | None = None, up: bool | None = None) -> None: ...
    def add_address(self, name: str, address: IPv4Interface) -> None: ...
    def delete_address(self, name: str, address: IPv4Interface) -> None: ...
    def neighbours(self, name: str) -> dict[IPv4Address, str]: ...
    def set_neighbour(self, name: str, address: IPv4Address, mac: str) -> None: ...
    def delete_neighbour(self, name: str, address: IPv4Address, mac: str) -> None: ...
    def fdb(self, name: str) -> dict[str, IPv4Address]: ...
    def set_fdb(self, name: str, mac: str, underlay: IPv4Address) -> None: ...
    def delete_fdb(self, name: str, mac: str, underlay: IPv4Address) -> None: ...


class VxlanManager:
    """Owned by felix's main thread."""

    def __init__(self, writer: VxlanWriter, metrics: FelixMetrics, grace: float):
        self._writer = writer
        self._metrics = metrics
        self._log = get_logger("felix.vxlan")
        self._grace: DeviceGrace[VxlanSpec] = DeviceGrace("VXLAN", VXLAN_DEVICE, grace, self._log.info)
        self._published: dict[str, str | None] | None = None

    @property
    def teardown_at(self) -> float | None:
        """When the running teardown grace ends (None: none running)."""
        return self._grace.teardown_at

    @property
    def annotations(self) -> dict[str, str | None] | None:
        """The VTEP annotations the node should carry after the last pass (None values: absent).
        During a teardown grace they stay what they were (None after a restart during a grace:
        leave the Node's annotations as they are)."""
        return self._published

    def apply(self, want: VxlanSpec, now: float) -> float | None:
        """Program the device as :func:`plan_vxlan_device` decides at ``now``; returns when a
        running teardown grace ends (None: none running). Raises OSError when a device write
        fails (the previous plan stays in force); failing entry writes are logged and counted."""
        present = not want.enabled and self._writer.device(want.device) is not None
        plan = plan_vxlan_device(want, present, self._grace.teardown_since, now, self._grace.seconds)
        self._grace.note(plan, want.enabled, want.reason)
        if plan.spec is not None:
            self.reconcile(plan.spec)
        self._grace.commit(plan)
        return plan.teardown_at

    def reconcile(self, spec: VxlanSpec) -> int:
        """Bring the device and its entries to ``spec``; returns the number of writes made."""
        writes = self._enable(spec) if spec.enabled else self._disable(spec)
        if writes:
            self._metrics.netlink_writes.labels("vxlan").inc(writes)
        return writes

    # --- wanted ---------------------------------------------------------------------------------

    def _enable(self, spec: VxlanSpec) -> int:
        assert spec.address is not None and spec.local is not None and spec.mtu is not None
        name = spec.device
        writes = 0
        device = self._writer.device(name)
        if device is not None and (device.kind, device.vni, device.port, device.local, device.learning) != (
                "vxlan", spec.vni, spec.port, spec.local, False):
            self._writer.delete(name)
            self._log.info("VXLAN device removed to be recreated", device=name, kind=device.kind, vni=device.vni,
                           port=device.port, local=str(device.local), learning=device.learning,
                           reason=f"wanted vni {spec.vni} port {spec.port} local {spec.local} without learning")
            writes += 1
            device = None
        if device is None:
            self._writer.create(name, spec.vni, spec.port, spec.local, spec.mtu)
            self._log.info("VXLAN device created", device=name, vni=spec.vni, port=spec.port, local=str(spec.local),
                           mtu=spec.mtu, reason=spec.reason)
            writes += 1
            device = self._writer.device(name)
            if device is None:
                raise OSError(f"device {name} vanished right after it was created")
        writes += self._device_settings(device, spec)
        writes += self._entries(spec)
        self._published = vtep_annotations(spec.address, device.mac)
        return writes

    def _device_settings(self, device: VxlanDevice, spec: VxlanSpec) -> int:
        name, writes = spec.device, 0
        want = IPv4Interface((spec.address, 32))
        if device.mtu != spec.mtu:
            self._writer.set_link(name, mtu=spec.mtu)
            self._log.info("VXLAN MTU set", device=name, mtu=spec.mtu, previous=device.mtu, reason=spec.reason)
            writes += 1
        for stale in (a for a in device.addresses if a != want):
            self._writer.delete_address(name, stale)
            self._log.info("VXLAN address removed", device=name, address=str(stale),
                           reason=f"the tunnel endpoint address is now {want}")
            writes += 1
        if want not in device.addresses:
            self._writer.add_address(name, want)
            self._log.info("VXLAN address added", device=name, address=str(want), reason=spec.reason)
            writes += 1
        if not device.up:
            self._writer.set_link(name, up=True)
            self._log.info("VXLAN device up", device=name, reason=spec.reason)
            writes += 1
        return writes

    def _entries(self, spec: VxlanSpec) -> int:
        name, writes = spec.device, 0
        want_neigh = {peer.vtep: (peer.mac, peer.node) for peer in spec.peers}
        want_fdb = {peer.mac: (peer.underlay, peer.node) for peer in spec.peers}
        have_neigh = self._writer.neighbours(name)
        have_fdb = self._writer.fdb(name)
        for vtep, mac in sorted(have_neigh.items()):
            if vtep not in want_neigh:
                writes += self._try("neighbour removed", self._writer.delete_neighbour, name, vtep, mac,
                                    log=dict(device=name, address=str(vtep), mac=mac, reason="no longer wanted"))
        for mac, underlay in sorted(have_fdb.items()):
            if mac not in want_fdb:
                writes += self._try("FDB entry removed", self._writer.delete_fdb, name, mac, underlay,
                                    log=dict(device=name, mac=mac, dst=str(underlay), reason="no longer wanted"))
        for vtep, (mac, node) in sorted(want_neigh.items()):
            if have_neigh.get(vtep) != mac:
                writes += self._try("neighbour set", self._writer.set_neighbour, name, vtep, mac,
                                    log=dict(device=name, address=str(vtep), mac=mac, previous=have_neigh.get(vtep),
                                             reason=f"VXLAN tunnel endpoint of node {node}"))
        for mac, (underlay, node) in sorted(want_fdb.items()):
            if have_fdb.get(mac) != underlay:
                previous = have_fdb.get(mac)
                writes += self._try("FDB entry set", self._writer.set_fdb, name, mac, underlay,
                                    log=dict(device=name, mac=mac, dst=str(underlay),
                                             previous=str(previous) if previous else None,
                                             reason=f"VXLAN tunnel endpoint of node {node}"))
        return writes

    def _try(self, event: str, write: Callable[..., None], *args: Any, log: dict[str, Any]) -> int:
        """One entry write; a failure is logged and counted, and the other entries still go."""
        try:
            write(*args)
        except OSError as exc:
            self._metrics.errors.labels("vxlan").inc()
            self._log.warning(f"VXLAN write failed: {event}", error=str(exc), **log)
            return 0
        self._log.info(event, **log)
        return 1

    # --- not wanted -----------------------------------------------------------------------------

    def _disable(self, spec: VxlanSpec) -> int:
        self._published = vtep_annotations(None, None)
        if self._writer.device(spec.device) is None:
            return 0
        self._writer.delete(spec.device)
        self._log.info("VXLAN device removed", device=spec.device, reason=spec.reason)
        return 1


class MemoryVxlanWriter:
    """An in-memory kernel behind :class:`VxlanWriter` for unit tests: devices get a MAC from a
    counter, deleting a device drops its entries, and every accepted write is counted."""

    def __init__(self) -> None:
        self.devices: dict[str, VxlanDevice] = {}
        self.neigh: dict[str, dict[IPv4Address, str]] = {}
        self.fdb_entries: dict[str, dict[str, IPv4Address]] = {}
        self.writes = 0
        self._macs = 0

    def _get(self, name: str) -> VxlanDevice:
        if name not in self.devices:
            raise OSError(f"device {name} does not exist")
        return self.devices[name]

    def _put(self, name: str, **changes: object) -> None:
        self.devices[name] = replace(self._get(name), **changes)   # type: ignore[arg-type]
        self.writes += 1

    def device(self, name: str) -> VxlanDevice | None:
        return self.devices.get(name)

    def create(self, name: str, vni: int, port: int, local: IPv4Address, mtu: int) -> None:
        if name in self.devices:
            raise OSError(f"device {name} exists")
        self._macs += 1
        self.devices[name] = VxlanDevice(name, "vxlan", mtu, False, f"66:00:00:00:00:{self._macs:02x}", (),
                                         vni, port, local, False)
        self.neigh[name], self.fdb_entries[name] = {}, {}
        self.writes += 1

    def delete(self, name: str) -> None:
        self._get(name)
        del self.devices[name]
        self.neigh.pop(name, None)
        self.fdb_entries.pop(name, None)
        self.writes += 1

    def set_link(self, name: str, mtu: int | None = None, up: bool | None = None) -> None:
        device = self._get(name)
        self._put(name, mtu=device.mtu if mtu is None else mtu, up=device.up if up is None else up)

    def add_address(self, name: str, address: IPv4Interface) -> None:
        self._put(name, addresses=self._get(name).addresses + (address,))

    def delete_address(self, name: str, address: IPv4Interface) -> None:
        self._put(name, addresses=tuple(a for a in self._get(name).addresses if a != address))

    def neighbours(self, name: str) -> dict[IPv4Address, str]:
        return dict(self.neigh.get(name, {}))

    def set_neighbour(self, name: str, address: IPv4Address, mac: str) -> None:
        self._get(name)
        self.neigh[name][address] = mac
        self.writes += 1

    def delete_neighbour(self, name: str, address: IPv4Address, mac: str) -> None:
        self._get(name)
        self.neigh[name].pop(address, None)
        self.writes += 1

    def fdb(self, name: str) -> dict[str, IPv4Address]:
        return dict(self.fdb_entries.get(name, {}))

    def set_fdb(self, name: str, mac: str, underlay: IPv4Address) -> None:
        self._get(name)
        self.fdb_entries[name][mac] = underlay
        self.writes += 1

    def delete_fdb(self, name: str, mac: str, underlay: IPv4Address) -> None:
        self._get(name)
        self.fdb_entries[name].pop(mac, None)
        self.writes += 1
