"""The tunnel manager: the IPIP device ``tunl0`` as felix wants it.

Loading the kernel's ipip module creates ``tunl0`` in every namespace, so felix normally only
configures it: MTU, one /32 address (the node's tunnel address), up. When no pool wants IPIP
felix removes its address and sets the device down (the fallback device cannot be deleted);
when that happens is decided by :func:`felix.calc.plan_tunnel` (the teardown grace), from what
:meth:`TunnelManager.decapsulating` reads in the kernel.
Where the kernel has no ipip support felix says so once, sets ``felix_ipip_available`` to 0 and
carries on with everything else.
"""
from __future__ import annotations

from ipaddress import IPv4Interface

from calyx.naming import TUNNEL_DEVICE
from calyx.netlink import Link, NetlinkUnsupported, RouteTable
from calyx.observability import get_logger
from felix.calc import TunnelSpec
from felix.metrics import FelixMetrics


class TunnelManager:
    def __init__(self, table: RouteTable, metrics: FelixMetrics, device: str = TUNNEL_DEVICE):
        self._table = table
        self._metrics = metrics
        self._device = device
        self._log = get_logger("felix.tunnel")
        self.available: bool | None = None
        self._unavailable_reason = ""

    def probe(self) -> bool:
        """Find or create the device once; remember whether the kernel can provide it."""
        if self.available is not None:
            return self.available
        link = self._table.link(self._device)
        if link is None:
            try:
                self._table.create_ipip(self._device)
                link = self._table.link(self._device)
            except NetlinkUnsupported as exc:
                self._unavailable_reason = str(exc)
        self.available = link is not None and link.kind == "ipip"
        if link is not None and link.kind != "ipip":
            self._unavailable_reason = f"{self._device} exists but is of kind {link.kind!r}, not ipip"
        self._metrics.ipip_available.set(1 if self.available else 0)
        if not self.available:
            self._log.error("IPIP unavailable: pools with ipipMode Always/CrossSubnet cannot encapsulate on "
                            "this node; everything else is programmed", device=self._device,
                            error=self._unavailable_reason)
        return self.available

    def decapsulating(self) -> bool:
        """Whether the kernel's device is up with an address (receives IPIP for this node)."""
        if not self.available:
            return False
        link = self._table.link(self._device)
        return link is not None and link.up and bool(link.addresses)

    def reconcile(self, spec: TunnelSpec) -> int:
        """Bring the device to ``spec``; returns the number of netlink writes made."""
        if not self.probe():
            return 0
        link = self._table.link(self._device)
        if link is None:      # removed behind felix's back: find out again next time
            self.available = None
            return 0
        return self._enable(link, spec) if spec.enabled else self._disable(link, spec)

    def _enable(self, link: Link, spec: TunnelSpec) -> int:
        assert spec.address is not None and spec.mtu is not None
        want = IPv4Interface((spec.address, 32))
        writes = 0
        if link.mtu != spec.mtu:
            self._table.set_link(self._device, mtu=spec.mtu)
            self._log.info("tunnel MTU set", device=self._device, mtu=spec.mtu, previous=link.mtu, reason=spec.reason)
            writes += 1
        for stale in (a for a in link.addresses if a != want):
            self._table.delete_address(self._device, stale)
            self._log.info("tunnel address removed", device=self._device, address=str(stale),
                           reason=f"tunnel address is now {want}")
            writes += 1
        if want not in link.addresses:
            self._table.add_address(self._device, want)
            self._log.info("tunnel address added", device=self._device, address=str(want), reason=spec.reason)
            writes += 1
        if not link.up:
            self._table.set_link(self._device, up=True)
            self._log.info("tunnel up", device=self._device, reason=spec.reason)
            writes += 1
        self._metrics.netlink_writes.labels("tunnel").inc(writes)
        return writes

    def _disable(self, link: Link, spec: TunnelSpec) -> int:
        writes = 0
        for address in link.addresses:
            self._table.delete_address(self._device, address)
            self._log.info("tunnel address removed", device=self._device, address=str(address), reason=spec.reason)
            writes += 1
        if link.up:
            self._table.set_link(self._device, up=False)
            self._log.info("tunnel down", device=self._device, reason=spec.reason)
            writes += 1
        self._metrics.netlink_writes.labels("tunnel").inc(writes)
        return writes
