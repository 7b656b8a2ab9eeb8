"""The NAT manager: IPPool ``natOutgoing`` as felix's own nftables table (``ip calyx-nat``),
kept equal to :func:`felix.nat.desired_nat` through libnftables' JSON API.

The table is kept by :class:`felix.dataplane.nfttable.OwnedTable` (read at the first pass and
at every resync, one transaction per change): a pool change is a set-element change, the table
appears whole when the first pool wants NAT and goes entirely when the last one stops. Nothing
but ``ip calyx-nat`` is ever named. The commands are built by the pure
:mod:`felix.dataplane.nftjson`. Where libnftables cannot be loaded felix says so once, sets
``felix_nat_available`` to 0 and carries on with everything else.
"""
from __future__ import annotations

from typing import Callable, Mapping

from calyx.logs import get_logger
from felix.dataplane import nftjson
from felix.dataplane.nftjson import NatPlan, ObservedTable
from felix.dataplane.nfttable import Nftables, NftablesUnavailable, OwnedTable, TableKind
from felix.metrics import FelixMetrics
from felix.nat import NatState


def _cidrs(sets: Mapping[str, frozenset]) -> dict[str, str]:
    return {name.replace("-", "_"): ",".join(str(c) for c in sorted(cidrs)) for name, cidrs in sets.items() if cidrs}


NAT_TABLE: TableKind[NatState, ObservedTable] = TableKind(
    "nat", nftjson.FAMILY, nftjson.TABLE, nftjson.parse_table, nftjson.plan, nftjson.applied)


class NatManager:
    """Owned by felix's main thread."""

    def __init__(self, open_nftables: Callable[[], Nftables], metrics: FelixMetrics):
        self._open = open_nftables
        self._metrics = metrics
        self._log = get_logger("felix.nat")
        self._table: OwnedTable[NatState, ObservedTable] | None = None
        self.available: bool | None = None
        self._last_error = ""
        self._reason = ""

    def probe(self) -> bool:
        """Load libnftables once; remember whether it is there."""
        if self.available is None:
            try:
                self._table = OwnedTable(NAT_TABLE, self._open(), self._metrics, self._log, self._failed)
                self.available = True
            except NftablesUnavailable as exc:
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
        assert self._table is not None
        self._reason = state.reason
        plan = self._table.reconcile(state, reread)
        if plan is not None and plan.commands:
            self._last_error = ""
            self._log_plan(plan)
        return plan

    def _failed(self, event: str, message: str) -> None:
        if message != self._last_error:     # the same failure pass after pass is logged once
            hint = {}
            if "Operation not supported" in message:
                hint = {"hint": "the kernel lacks nftables' ip family or its NAT chain type "
                                "(CONFIG_NF_TABLES_IPV4, CONFIG_NFT_NAT, CONFIG_NFT_MASQ)"}
            self._log.error(f"NAT {event}", table=f"{nftjson.FAMILY} {nftjson.TABLE}", error=message,
                            reason=self._reason, **hint)
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
