"""Every benchmark runs end to end in --quick mode, prints its table and records its figures,
so the benchmarks cannot rot unnoticed. Timings are not asserted; that figures exist is."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import Report, percentile
from bench.run_all import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"\d+(\.\d+)?")


def test_report_renders_table_and_markdown_and_refuses_ragged_rows(tmp_path: Path) -> None:
    report = Report("A title", "cmd", ("size", "seconds"))
    report.add(10, 0.1234)
    report.add(1000, 123.4)
    with pytest.raises(ValueError, match="has 3 cells; the table has 2"):
        report.add(1, 2, 3)
    out = tmp_path / "RESULTS.md"
    report.finish(out)
    report.finish(out)
    text = out.read_text()
    assert text.startswith("# Calyx benchmark results")
    assert text.count("## A title") == 2
    assert "| 10 | 0.123 |" in text and "| 1000 | 123 |" in text
    assert "- kernel: " in text and "- cores: " in text and "exabgp " in text
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 99) == 5


@pytest.mark.lab
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_quick_run_prints_and_records_figures(name: str, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--quick", "--results", str(results)],
                          cwd=REPO, capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, f"bench.{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    recorded = results.read_text()
    header = next(line for line in recorded.splitlines() if line.startswith("## "))
    title = header[3:]
    assert title in proc.stdout                                   # the printed table's title
    rows = [line for line in recorded.splitlines() if line.startswith("| ")]
    table_rows = rows[1:]                                         # the first is the column header
    assert table_rows, f"no figures recorded:\n{recorded}"
    for row in table_rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert any(NUMBER.fullmatch(c) for c in cells), row
    assert f"`.venv/bin/python -m bench.{name} --quick`" in recorded
    assert "- cpu: " in recorded and "- python: " in recorded
