"""Text tables as calicoctl prints them: plain aligned columns (``get``) and boxed tables
(``node status``, ``ipam show``).

Pure code: rows of strings in, one string out.
"""
from __future__ import annotations

from typing import Sequence


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns separated by three spaces, left-aligned, header first (``kubectl get`` style)."""
    all_rows = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in all_rows]
    return "\n".join(lines)


def boxed_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                right_aligned: Sequence[int] = ()) -> str:
    """A table framed with ``+---+`` and ``|`` like calicoctl's; the header is centred, the
    columns whose indexes are in ``right_aligned`` (numbers) are right-aligned."""
    all_rows = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(row: Sequence[str], head: bool) -> str:
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths)):
            cells.append(cell.center(width) if head else cell.rjust(width) if i in right_aligned
                         else cell.ljust(width))
        return "| " + " | ".join(cells) + " |"

    out = [sep, line(header, True), sep]
    out += [line(row, False) for row in rows]
    out.append(sep)
    return "\n".join(out)


def percent(part: int, whole: int) -> str:
    """``part`` with its share of ``whole`` rounded down, calicoctl style: ``5 (7%)``."""
    share = (part * 100 // whole) if whole else 0
    return f"{part} ({share}%)"
