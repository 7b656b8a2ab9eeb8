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
from felix.dataplane.nfttable import Nftables, OwnedTable, TableKind
from felix.metrics import FelixMetrics
from felix.nat import NatState


def _cidrs(sets: Mapping[str, frozenset]) -> dict[str, str]:
    return {name.replace("-", "_"): ",".join(str(c) for c in sorted(cidrs)) for name, cidrs in sets.items() if cidrs}


NAT_TABLE: TableKind[NatState, ObservedTable] = TableKind(
    "nat", "NAT", nftjson.FAMILY, nftjson.TABLE, nftjson.parse_table, nftjson.plan, nftjson.applied)


class NatManager(OwnedTable[NatState, ObservedTable]):
    """Owned by felix's main thread."""

    def __init__(self, open_nftables: Callable[[], Nftables], metrics: FelixMetrics):
        super().__init__(NAT_TABLE, open_nftables, metrics, get_logger("felix.nat"), metrics.nat_available,
                         "NAT unavailable: pools with natOutgoing cannot be masqueraded on this node; "
                         "everything else is programmed")

    def _error_fields(self, message: str, desired: NatState) -> dict:
        hint = {}
        if "Operation not supported" in message:
            hint = {"hint": "the kernel lacks nftables' ip family or its NAT chain type "
                            "(CONFIG_NF_TABLES_IPV4, CONFIG_NFT_NAT, CONFIG_NFT_MASQ)"}
        return {"reason": desired.reason, **hint}

    def _written(self, plan: NatPlan, desired: NatState) -> None:
        self._log_plan(plan)

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
