"""The NAT manager: IPPool ``natOutgoing`` as felix's own nftables table (``ip calyx-nat``),
kept equal to :func:`felix.nat.desired_nat` through libnftables' JSON API.

The table is read at the first pass and at every resync (a table deleted or edited by hand is
noticed there and rebuilt); in between the manager trusts what it last read or wrote, so a
pass with nothing new costs no nftables call. Every change is one libnftables command batch,
which the kernel applies as one transaction: a pool change is a set-element change, the table
appears whole when the first pool wants NAT and goes entirely when the last one stops.
Nothing but ``ip calyx-nat`` is ever named.

The commands are built by the pure :mod:`felix.dataplane.nftjson`; the kernel is reached through
the :class:`Nftables` seam: :class:`LibNftables` (Debian's ``python3-nftables`` binding of
libnftables.so.1) in the daemon, :class:`felix.dataplane.memnft.MemoryNftables` in unit tests.
Where libnftables cannot be loaded felix says so once, sets ``felix_nat_available`` to 0 and
carries on with everything else.
"""
from __future__ import annotations

import socket
from typing import Any, Callable, Mapping, Protocol, Sequence

from calyx.logs import get_logger
from felix.dataplane import nftjson
from felix.dataplane.nftjson import NatPlan, NftError, ObservedTable
from felix.metrics import FelixMetrics
from felix.nat import NatState


class Nftables(Protocol):
    """The nftables operations the NAT manager needs."""

    def list_table(self, family: str, name: str) -> list[dict] | None:
        """The table's objects (libnftables' JSON, without metainfo); None when it does not exist."""

    def run(self, commands: Sequence[Mapping[str, Any]]) -> None:
        """Apply ``commands`` as one transaction; raises :class:`NftError` (nothing applied)."""


class NatUnavailable(Exception):
    """libnftables or its Python binding cannot be loaded on this machine."""


NETLINK_NETFILTER = 12


def _probe_nfnetlink() -> None:
    """Raise :class:`NatUnavailable` where the kernel has no nftables netlink family: libnftables
    itself would end the whole process (it exits when it cannot open its netlink socket)."""
    try:
        probe = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as exc:
        raise NatUnavailable(f"the kernel offers no nftables netlink socket (NETLINK_NETFILTER: {exc}); "
                             "it needs CONFIG_NF_TABLES or the nf_tables module") from None
    probe.close()


class LibNftables:
    """The :class:`Nftables` seam on the real libnftables. With ``netns`` the library's netlink
    socket is opened in that named network namespace (tests); else in felix's own."""

    def __init__(self, netns: str | None = None) -> None:
        try:
            import nftables      # Debian's python3-nftables (ctypes over libnftables.so.1)
        except ImportError as exc:
            raise NatUnavailable(f"Python module nftables missing ({exc}); install Debian's python3-nftables "
                                 "and make it importable") from None
        try:
            if netns is None:
                _probe_nfnetlink()
                self._nft = nftables.Nftables()
            else:
                from pyroute2 import netns as namespaces
                namespaces.pushns(netns)
                try:
                    _probe_nfnetlink()
                    self._nft = nftables.Nftables()
                finally:
                    namespaces.popns()
        except OSError as exc:
            raise NatUnavailable(f"libnftables.so.1 cannot be loaded ({exc}); install libnftables1") from None
        self._nft.set_json_output(True)

    def _json(self, commands: Sequence[Mapping[str, Any]]) -> tuple[int, Any, str]:
        rc, output, error = self._nft.json_cmd({"nftables": list(commands)})
        return rc, output, (error or "").strip()

    def list_table(self, family: str, name: str) -> list[dict] | None:
        rc, output, error = self._json([{"list": {"table": {"family": family, "name": name}}}])
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise NftError(error or f"listing table {family} {name} failed ({rc})")
        objects = output.get("nftables", []) if isinstance(output, dict) else []
        return [item for item in objects if "metainfo" not in item]

    def run(self, commands: Sequence[Mapping[str, Any]]) -> None:
        rc, _, error = self._json(commands)
        if rc != 0:
            raise NftError(error or f"libnftables returned {rc}")


def _cidrs(sets: Mapping[str, frozenset]) -> dict[str, str]:
    return {name.replace("-", "_"): ",".join(str(c) for c in sorted(cidrs)) for name, cidrs in sets.items() if cidrs}


class NatManager:
    """Owned by felix's main thread."""

    def __init__(self, open_nftables: Callable[[], Nftables], metrics: FelixMetrics):
        self._open = open_nftables
        self._metrics = metrics
        self._log = get_logger("felix.nat")
        self._nft: Nftables | None = None
        self.available: bool | None = None
        self._observed: ObservedTable | None = None
        self._known = False          # _observed is what the kernel holds (read or written since)
        self._last_error = ""

    def probe(self) -> bool:
        """Load libnftables once; remember whether it is there."""
        if self.available is None:
            try:
                self._nft = self._open()
                self.available = True
            except NatUnavailable as exc:
                self.available = False
                self._log.error("NAT unavailable: pools with natOutgoing cannot be masqueraded on this node; "
                                "everything else is programmed", error=str(exc))
            self._metrics.nat_available.set(1 if self.available else 0)
        return self.available

    def reconcile(self, state: NatState, reread: bool = False) -> NatPlan | None:
        """Bring ``ip calyx-nat`` to ``state``; re-read the kernel's table first when ``reread``
        (or when the last pass could not know it). Returns the plan carried out (None: nothing
        could be read or written)."""
        if not self.probe():
            return None
        assert self._nft is not None
        if reread or not self._known:
            try:
                listing = self._nft.list_table(nftjson.FAMILY, nftjson.TABLE)
            except NftError as exc:
                self._failed("NAT table unreadable", exc, state)
                return None
            self._observed = None if listing is None else nftjson.parse_table(listing)
            self._known = True
        plan = nftjson.plan(state, self._observed)
        if not plan.commands:
            return plan
        try:
            self._nft.run(plan.commands)
        except NftError as exc:
            self._known = False           # read again next pass: the transaction left it as it was
            self._failed(f"NAT table {plan.action} failed", exc, state)
            return None
        self._observed = nftjson.applied(state)
        self._last_error = ""
        self._metrics.netlink_writes.labels("nat").inc()
        self._log_plan(plan)
        return plan

    def _failed(self, event: str, exc: NftError, state: NatState) -> None:
        self._metrics.errors.labels("nat").inc()
        message = str(exc)
        if message != self._last_error:     # the same failure pass after pass is logged once
            hint = {}
            if "Operation not supported" in message:
                hint = {"hint": "the kernel lacks nftables' ip family or its NAT chain type "
                                "(CONFIG_NF_TABLES_IPV4, CONFIG_NFT_NAT, CONFIG_NFT_MASQ)"}
            self._log.error(event, table=f"{nftjson.FAMILY} {nftjson.TABLE}", error=message, reason=state.reason,
                            **hint)
        self._last_error = message

    def _log_plan(self, plan: NatPlan) -> None:
        table = f"{nftjson.FAMILY} {nftjson.TABLE}"
        if plan.action == "remove":
            self._log.info("NAT table removed", table=table, reason=plan.why)
        elif plan.action in ("create", "rebuild"):
            self._log.info(f"NAT table {'created' if plan.action == 'create' else 'rebuilt'}", table=table,
                           reason=plan.why, **_cidrs(plan.added))
        else:
            self._log.info("NAT sets updated", table=table, reason=plan.why,
                           **{f"added_{k}": v for k, v in _cidrs(plan.added).items()},
                           **{f"removed_{k}": v for k, v in _cidrs(plan.removed).items()})
