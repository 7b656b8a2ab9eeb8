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
from felix.dataplane.nftjson import NftError
from felix.dataplane.nfttable import Nftables, OwnedTable, TableKind
from felix.dataplane.policynft import ObservedTable, PolicyPlan, PolicyTable
from felix.metrics import FelixMetrics

POLICY_TABLE: TableKind[PolicyTable, ObservedTable] = TableKind(
    "policy", "policy", policynft.FAMILY, policynft.TABLE, policynft.parse_table, policynft.plan,
    policynft.applied)


class PolicyManager(OwnedTable[PolicyTable, ObservedTable]):
    """Owned by felix's main thread."""

    def __init__(self, open_nftables: Callable[[], Nftables], metrics: FelixMetrics):
        super().__init__(POLICY_TABLE, open_nftables, metrics, get_logger("felix.policy"),
                         metrics.policy_available,
                         "NetworkPolicy unavailable: pods on this node are not isolated")

    def reconcile(self, desired: PolicyTable, reread: bool = False) -> PolicyPlan | None:
        """Bring the policy table to ``desired`` (re-reading it, and the drop counters, first
        when ``reread``)."""
        plan = super().reconcile(desired, reread)
        if reread and self.available:
            self._count_drops()
        return plan

    def _written(self, plan: PolicyPlan, desired: PolicyTable) -> None:
        self._log.info(f"policy table {plan.action}", table=self.name, why=plan.why,
                       commands=len(plan.commands), endpoints_ingress=len(desired.to_endpoint),
                       endpoints_egress=len(desired.from_endpoint))

    def _count_drops(self) -> None:
        """Per endpoint and direction, the packets its chain's final rule dropped."""
        assert self._nft is not None
        try:
            listing = self._nft.list_table(policynft.FAMILY, policynft.TABLE) or []
        except NftError:            # counting is best effort; the next resync tries again
            return
        for chain, packets in policynft.drop_counts(listing).items():
            device, direction = policynft.endpoint_of_chain(chain)
            self._metrics.policy_dropped.labels(device, direction).set(packets)
