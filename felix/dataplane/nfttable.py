"""One nftables table of Calyx's own, kept equal to what is wanted: the reconciler felix's NAT
and NetworkPolicy managers share.

The table is read at the first pass and whenever asked (felix's resync; a table deleted or
edited by hand is noticed there), and after a failed write; in between the reconciler trusts
what it last read or wrote, so a pass with nothing new costs no nftables call. Every change is
one command batch, which the kernel applies as one transaction. What is read, planned and
assumed after a write is the table kind's business (:class:`TableKind`, pure functions); the
kernel is reached through the :class:`Nftables` seam: :class:`LibNftables` (Debian's
``python3-nftables`` binding of libnftables.so.1) in the daemon,
:class:`felix.dataplane.memnft.MemoryNftables` in unit tests.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, Protocol, Sequence, TypeVar

from calyx.logs import StructuredLogger
from felix.dataplane.nftjson import NftError
from prometheus_client import Gauge

from felix.metrics import FelixMetrics

Desired = TypeVar("Desired")
Observed = TypeVar("Observed")


class NftablesUnavailable(Exception):
    """libnftables or its Python binding cannot be loaded on this machine."""


NETLINK_NETFILTER = 12


def _probe_nfnetlink() -> None:
    """Raise :class:`NftablesUnavailable` where the kernel has no nftables netlink family: libnftables
    itself would end the whole process (it exits when it cannot open its netlink socket)."""
    try:
        probe = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as exc:
        raise NftablesUnavailable(f"the kernel offers no nftables netlink socket (NETLINK_NETFILTER: {exc}); "
                             "it needs CONFIG_NF_TABLES or the nf_tables module") from None
    probe.close()


class LibNftables:
    """The :class:`Nftables` seam on the real libnftables. With ``netns`` the library's netlink
    socket is opened in that named network namespace (tests); else in felix's own."""

    def __init__(self, netns: str | None = None) -> None:
        try:
            import nftables      # Debian's python3-nftables (ctypes over libnftables.so.1)
        except ImportError as exc:
            raise NftablesUnavailable(f"Python module nftables missing ({exc}); install Debian's python3-nftables "
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
            raise NftablesUnavailable(f"libnftables.so.1 cannot be loaded ({exc}); install libnftables1") from None
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


class Nftables(Protocol):
    """The nftables operations the managers need."""

    def list_table(self, family: str, name: str) -> list[dict] | None:
        """The table's objects (libnftables' JSON, without metainfo); None when it does not exist."""

    def run(self, commands: Sequence[Mapping[str, Any]]) -> None:
        """Apply ``commands`` as one transaction; raises :class:`NftError` (nothing applied)."""


class Plan(Protocol):
    commands: tuple[Mapping[str, Any], ...]
    action: str


@dataclass(frozen=True)
class TableKind(Generic[Desired, Observed]):
    """What one table is: its name, how a listing is read, the plan from there to what is
    wanted, and what the kernel holds once a plan is committed."""

    label: str                                              # metrics label: "nat", "policy"
    title: str                                              # in log lines: "NAT", "policy"
    family: str
    table: str
    parse: Callable[[list[dict]], Observed]
    plan: Callable[[Desired, Observed | None], Plan]
    applied: Callable[[Desired], Observed | None]


class OwnedTable(Generic[Desired, Observed]):
    """Owned by felix's main thread. Subclasses say what is logged after a write
    (:meth:`_written`) and what a failure log adds (:meth:`_error_fields`)."""

    def __init__(self, kind: TableKind[Desired, Observed], open_nftables: Callable[[], Nftables],
                 metrics: FelixMetrics, log: StructuredLogger, available: Gauge, unavailable: str):
        self._kind = kind
        self._open = open_nftables
        self._metrics = metrics
        self._log = log
        self._available_gauge = available
        self._unavailable = unavailable     # what is lost without libnftables, for the log
        self._nft: Nftables | None = None
        self.available: bool | None = None
        self._observed: Observed | None = None
        self._known = False                # _observed is what the kernel holds (read or written since)
        self._last_error = ""

    @property
    def name(self) -> str:
        return f"{self._kind.family} {self._kind.table}"

    def probe(self) -> bool:
        """Load libnftables once; remember whether it is there."""
        if self.available is None:
            try:
                self._nft = self._open()
                self.available = True
            except NftablesUnavailable as exc:
                self.available = False
                self._log.error(self._unavailable, error=str(exc))
            self._available_gauge.set(1 if self.available else 0)
        return self.available

    def reconcile(self, desired: Desired, reread: bool = False) -> Plan | None:
        """Bring the table to ``desired``; re-read it first when ``reread`` (or when the last
        pass could not know it). Returns the plan carried out (None: libnftables is missing, or
        the table could not be read or written)."""
        if not self.probe():
            return None
        assert self._nft is not None
        kind = self._kind
        if reread or not self._known:
            try:
                listing = self._nft.list_table(kind.family, kind.table)
            except NftError as exc:
                self._failed("table unreadable", exc, desired)
                return None
            self._observed = None if listing is None else kind.parse(listing)
            self._known = True
        plan = kind.plan(desired, self._observed)
        if not plan.commands:
            return plan
        try:
            self._nft.run(plan.commands)
        except NftError as exc:
            self._known = False           # read again next pass: the transaction left it as it was
            self._failed(f"table {plan.action} failed", exc, desired)
            return None
        self._observed = kind.applied(desired)
        self._last_error = ""
        self._metrics.netlink_writes.labels(kind.label).inc()
        self._written(plan, desired)
        return plan

    def _written(self, plan: Plan, desired: Desired) -> None:
        """Log what a committed plan did."""

    def _error_fields(self, message: str, desired: Desired) -> dict[str, Any]:
        return {}

    def _failed(self, event: str, exc: NftError, desired: Desired) -> None:
        self._metrics.errors.labels(self._kind.label).inc()
        message = str(exc)
        if message != self._last_error:     # the same failure pass after pass is logged once
            self._log.error(f"{self._kind.title} {event}", table=self.name, error=message,
                            **self._error_fields(message, desired))
        self._last_error = message
