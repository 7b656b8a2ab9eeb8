"""The tunnel manager: the IPIP device ``tunl0`` as felix wants it, and the underlay MTU the
tunnel and the pods' MTU derive from.

Loading the kernel's ipip module creates ``tunl0`` in every namespace, so felix normally only
configures it: MTU, one /32 address (the node's tunnel address), up. When no pool wants IPIP
felix removes its address and sets the device down (the fallback device cannot be deleted);
when that happens is decided by :func:`felix.calc.plan_tunnel` (the teardown grace), from what
:meth:`TunnelManager.decapsulating` reads in the kernel; :meth:`TunnelManager.apply` carries
the grace from one pass to the next and says when it ends.
Where the kernel has no ipip support felix says so once, sets ``felix_ipip_available`` to 0 and
carries on with everything else.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from calyx.naming import TUNNEL_DEVICE
from calyx.netlink import Link, NetlinkUnsupported, RouteTable
from calyx.logs import get_logger
from felix.calc import TunnelSpec, plan_tunnel
from felix.grace import DeviceGrace
from felix.metrics import FelixMetrics


DEFAULT_UNDERLAY_MTU = 1500


@dataclass(frozen=True)
class Underlay:
    """The interface holding the node's address: its name and MTU, and the address with the
    interface's prefix (None when no local interface holds the address)."""

    mtu: int = DEFAULT_UNDERLAY_MTU
    device: str | None = None
    interface: IPv4Interface | None = None


class TunnelManager:
    def __init__(self, table: RouteTable, metrics: FelixMetrics, grace: float, device: str = TUNNEL_DEVICE):
        self._table = table
        self._metrics = metrics
        self._device = device
        self._log = get_logger("felix.tunnel")
        self.available: bool | None = None
        self._unavailable_reason = ""
        self._grace_state: DeviceGrace[TunnelSpec] = DeviceGrace("tunnel", device, grace, self._log.info)
        self._underlay: tuple[IPv4Address | None, Underlay] | None = None

    # --- underlay MTU ----------------------------------------------------------------------

    def underlay_mtu(self, address: IPv4Address | None, refresh: bool) -> int:
        """MTU of the interface holding the node's address (read again when ``refresh`` or when
        the address changed); 1500 when no local interface holds it."""
        return self.underlay(address, refresh).mtu

    def underlay(self, address: IPv4Address | None, refresh: bool) -> Underlay:
        """The interface holding the node's address (read again when ``refresh`` or when the
        address changed)."""
        if refresh or self._underlay is None or self._underlay[0] != address:
            self._underlay = (address, self._detect_underlay(address))
        return self._underlay[1]

    def _detect_underlay(self, address: IPv4Address | None) -> Underlay:
        found = self._table.interface_of(address) if address is not None else None
        if address is None or found is None:
            self._log.warning("underlay MTU unknown: no local interface holds the node address; assuming "
                              "the default", address=str(address) if address else None, mtu=DEFAULT_UNDERLAY_MTU)
            return Underlay()
        link = self._table.link(found[0])
        return Underlay(mtu=link.mtu if link is not None else DEFAULT_UNDERLAY_MTU, device=found[0],
                        interface=IPv4Interface(f"{address}/{found[1]}"))

    # --- the device, with the teardown grace -------------------------------------------------

    def apply(self, want: TunnelSpec, now: float) -> float | None:
        """Program the device as :func:`felix.calc.plan_tunnel` decides at ``now``; returns when
        a running teardown grace ends (None: none running)."""
        decapsulating = not want.enabled and self.decapsulating()
        plan = plan_tunnel(want, decapsulating, self._grace_state.teardown_since, now,
                           self._grace_state.seconds)
        self._grace_state.note(plan, want.enabled, want.reason)
        if plan.spec is not None:
            self.reconcile(plan.spec)       # raises OSError: the previous plan stays in force
        self._grace_state.commit(plan)
        return plan.teardown_at

    @property
    def teardown_at(self) -> float | None:
        """When the running teardown grace ends (None: none running)."""
        return self._grace_state.teardown_at

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
