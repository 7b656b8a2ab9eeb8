"""The NetworkPolicy manager: the node's policy table (``ip calyx-policy``), kept equal to the
table :func:`felix.dataplane.policynft.desired_table` describes, through libnftables' JSON API
(:class:`felix.dataplane.nfttable.OwnedTable`: read at the first pass and every resync, one
transaction per change, nothing else ever named).

Also the dropped-packet counts per endpoint, read from the table's counters at each resync for
``felix_policy_dropped_packets``. Where libnftables cannot be loaded felix says so once and
carries on unenforced (``felix_policy_available`` 0): every pod then reaches every pod.
"""
from __future__ import annotations

from typing import Callable

from calyx.logs import get_logger
from felix.dataplane import policynft
from felix.dataplane.nfttable import Nftables, NftablesUnavailable, OwnedTable, TableKind
from felix.dataplane.policynft import ObservedTable, PolicyPlan, PolicyTable
from felix.metrics import FelixMetrics

POLICY_TABLE: TableKind[PolicyTable, ObservedTable] = TableKind(
    "policy", policynft.FAMILY, policynft.TABLE, policynft.parse_table, policynft.plan, policynft.applied)


class PolicyManager:
    """Owned by felix's main thread."""

    def __init__(self, open_nftables: Callable[[], Nftables], metrics: FelixMetrics):
        self._open = open_nftables
        self._metrics = metrics
        self._log = get_logger("felix.policy")
        self._nft: Nftables | None = None
        self._table: OwnedTable[PolicyTable, ObservedTable] | None = None
        self.available: bool | None = None
        self._last_error = ""

    def probe(self) -> bool:
        if self.available is None:
            try:
                self._nft = self._open()
                self._table = OwnedTable(POLICY_TABLE, self._nft, self._metrics, self._log, self._failed)
                self.available = True
            except NftablesUnavailable as exc:
                self.available = False
                self._log.error("NetworkPolicy unavailable: pods on this node are not isolated", error=str(exc))
            self._metrics.policy_available.set(1 if self.available else 0)
        return self.available

    def reconcile(self, desired: PolicyTable, reread: bool = False) -> PolicyPlan | None:
        """Bring the policy table to ``desired`` (re-reading it first when ``reread``)."""
        if not self.probe():
            return None
        assert self._table is not None
        plan = self._table.reconcile(desired, reread)
        if plan is not None and plan.commands:
            self._last_error = ""
            self._log.info(f"policy table {plan.action}", table=self._table.name, why=plan.why,
                           commands=len(plan.commands), endpoints_ingress=len(desired.to_endpoint),
                           endpoints_egress=len(desired.from_endpoint))
        if reread:
            self._count_drops(desired)
        return plan

    def _count_drops(self, desired: PolicyTable) -> None:
        """Per endpoint and direction, the packets its chain's final rule dropped."""
        assert self._nft is not None
        try:
            listing = self._nft.list_table(policynft.FAMILY, policynft.TABLE) or []
        except Exception:           # counting is best effort; the next resync tries again
            return
        for chain, packets in policynft.drop_counts(listing).items():
            device, direction = policynft.endpoint_of_chain(chain)
            self._metrics.policy_dropped.labels(device, direction).set(packets)

    def _failed(self, event: str, message: str) -> None:
        if message != self._last_error:
            self._log.error(f"policy {event}", table=f"{policynft.FAMILY} {policynft.TABLE}", error=message)
        self._last_error = message
