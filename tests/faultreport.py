"""The reliability suite's record: every fault case (tests marked ``fault``, wherever they live)
reports what it injected, what Calyx promises, and what was measured; the run ends with one table
— fault, promise, packets lost of sent, kernel route writes, time to recover, verdict.

A pytest plugin (loaded by the root conftest). A case opens ``fault_record.case(fault, promise)``
around the fault and its checks and fills in what it measured; leaving the block with an
exception records the verdict ``FAILED`` (the test fails as usual), otherwise ``held``.

``make test`` runs the reduced set (cases marked ``fault_full`` are deselected) and prints the
table at the end; ``make faults`` runs every case (``-m fault --faults=full``) and appends the
table with the machine's facts to ``tests/faults/RESULTS.md``, which docs/reliability.md
summarises.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

RESULTS = Path(__file__).resolve().parent / "faults" / "RESULTS.md"
DETAIL_CHARS = 100          # of a case's detail in the terminal's table (the results file keeps 400)
COLUMNS = ("fault", "promise", "lost / sent", "route writes", "recovery s", "verdict")


@dataclass
class FaultCase:
    """One injected fault and what was measured around it (filled in by the test)."""

    fault: str
    promise: str
    lost: int | None = None
    sent: int | None = None
    route_writes: int | None = None
    recovery_s: float | None = None
    detail: str = ""
    verdict: str = "running"

    def packets(self, lost: int, sent: int) -> None:
        self.lost, self.sent = lost, sent

    def row(self, detail_chars: int = DETAIL_CHARS) -> tuple[str, ...]:
        packets = "" if self.sent is None else f"{self.lost} / {self.sent}"
        writes = "" if self.route_writes is None else str(self.route_writes)
        recovery = "" if self.recovery_s is None else f"{self.recovery_s:.2f}"
        detail = self.detail if len(self.detail) <= detail_chars else self.detail[:detail_chars - 1] + "…"
        verdict = self.verdict + (f" ({detail})" if detail else "")
        return (self.fault, self.promise, packets, writes, recovery, verdict)


@dataclass
class FaultRecord:
    """Every case of the run, in the order they ran."""

    cases: list[FaultCase] = field(default_factory=list)

    @contextlib.contextmanager
    def case(self, fault: str, promise: str) -> Iterator[FaultCase]:
        entry = FaultCase(fault, promise)
        self.cases.append(entry)
        try:
            yield entry
        except BaseException:
            entry.verdict = "FAILED"
            raise
        entry.verdict = "held"

    def table(self) -> list[str]:
        rows = [COLUMNS] + [c.row() for c in self.cases]
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return lines

    def markdown(self, facts: dict[str, str], command: str) -> str:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"## Fault injection: {len(self.cases)} cases", "", f"`{command}` — {when}", ""]
        lines += [f"- {k}: {v}" for k, v in facts.items()]
        lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in c.row(400)) + " |"
                  for c in self.cases]
        return "\n".join(lines) + "\n"


_RECORD_KEY = pytest.StashKey[FaultRecord]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--faults", choices=("reduced", "full"), default="reduced",
                     help="reduced: fault cases marked fault_full are deselected (make test); "
                          "full: every case runs and the table is appended to tests/faults/RESULTS.md")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORD_KEY] = FaultRecord()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--faults") == "full":
        return
    deselected = [i for i in items if i.get_closest_marker("fault_full")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if not i.get_closest_marker("fault_full")]


@pytest.fixture(scope="session")
def fault_record(request: pytest.FixtureRequest) -> FaultRecord:
    return request.config.stash[_RECORD_KEY]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    record = config.stash.get(_RECORD_KEY, None)
    if not record or not record.cases:
        return
    terminalreporter.section("fault injection")
    for line in record.table():
        terminalreporter.write_line(line)
    if config.getoption("--faults") != "full":
        return
    from bench.common import append_results, machine_facts    # only a full run records the machine
    append_results(RESULTS, "# Calyx fault-injection results\n\nAppended by `make faults`; newest last. "
                   "See docs/reliability.md for what each case injects and promises.\n\n",
                   record.markdown(machine_facts(), "make faults"))
    terminalreporter.write_line(f"table appended to {os.path.relpath(RESULTS)}")
