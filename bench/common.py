"""What every benchmark shares: command-line sizes (``--quick``), machine facts, the printed
table and the record appended to ``bench/RESULTS.md``, polling, and process memory.

Benchmarks print figures; they never pass or fail on a timing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import importlib.metadata
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
PACKAGES = ("exabgp", "pyroute2", "kubernetes")


@dataclass(frozen=True)
class Sizes:
    """The sizes a run uses: the full ones by default, small ones with ``--quick``."""

    values: tuple[int, ...]
    quick: bool
    results: Path | None      # None: print only, record nothing


def parse_sizes(description: str, full: Sequence[int], quick: Sequence[int], argv: Sequence[str] | None,
                what: str = "sizes") -> Sizes:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=f"small {what} {list(quick)} (a smoke run)")
    parser.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")),
                        help=f"comma-separated {what} (default {','.join(map(str, full))})")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="markdown file the figures are appended to (default bench/RESULTS.md)")
    parser.add_argument("--no-record", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    values = args.sizes or tuple(quick if args.quick else full)
    return Sizes(values=values, quick=args.quick, results=None if args.no_record else args.results)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _bird_version() -> str:
    try:
        out = subprocess.run(["bird", "--version"], capture_output=True, text=True, timeout=5)
        return (out.stdout + out.stderr).strip().split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "absent"


def _kube_version() -> str:
    """The Kubernetes release of the control plane the test bed runs (tools/kubernetes/go.mod)."""
    from calyxlab.controlplane import binaries
    try:
        return binaries.kube_version()
    except (OSError, binaries.BinariesMissing):
        return "absent"


def machine_facts() -> dict[str, str]:
    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": ", ".join(f"{p} {_version(p)}" for p in PACKAGES) + f", bird {_bird_version()}"
                    + f", kube-apiserver {_kube_version()}",
        "load average at start": f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
    }


@dataclass
class Report:
    """One benchmark's output: a table plus free-text notes."""

    title: str
    command: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=machine_facts)

    def add(self, *cells: Any) -> None:
        row = tuple(_cell(c) for c in cells)
        if len(row) != len(self.columns):
            raise ValueError(f"row {row!r} has {len(row)} cells; the table has {len(self.columns)} columns")
        self.rows.append(row)
        print(" | ".join(row), flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)

    def markdown(self) -> str:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"## {self.title}", "", f"`{self.command}` — {when}", ""]
        lines += [f"- {k}: {v}" for k, v in self.facts.items()]
        lines += ["", "| " + " | ".join(self.columns) + " |", "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def table(self) -> str:
        widths = [max(len(self.columns[i]), *(len(r[i]) for r in self.rows)) for i in range(len(self.columns))]
        def fmt(row: Sequence[str]) -> str:
            return "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        out = [self.title, fmt(self.columns), "  ".join("-" * w for w in widths)]
        out += [fmt(r) for r in self.rows]
        return "\n".join(out)

    def finish(self, results: Path | None) -> None:
        """Print the table and append it (with the machine facts) to ``results``."""
        print()
        print(self.table(), flush=True)
        for n in self.notes:
            print(f"  * {n}")
        if results is None:
            return
        append_results(results, "# Calyx benchmark results\n\nAppended by `bench/*.py`; newest last. "
                       "See docs/benchmarks.md for what each figure means.\n\n", self.markdown())
        print(f"figures appended to {results}", flush=True)


def append_results(results: Path, heading: str, section: str) -> None:
    """Append ``section`` to a results file (``heading`` first when the file is new), under a
    lock so that concurrent runs do not interleave."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        if out.tell() == 0:
            out.write(heading)
        out.write(section + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:.0f}"
        if value >= 10:
            return f"{value:.1f}"
        if value >= 1:
            return f"{value:.2f}"
        if value <= 0:
            return f"{value:g}"
        return f"{value:.{max(3, 2 - math.floor(math.log10(value)))}f}"     # 3 significant digits, no exponent
    return str(value)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> float:
    """Poll until ``predicate`` is true; the monotonic time at which it was first seen true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(pid)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
