"""docs/install.md documents every value of the chart, with the default values.yaml has."""
from __future__ import annotations

import re
from typing import Any, Iterator

import yaml

from chart_support import CHART, REPO

DOC = REPO / "docs" / "install.md"


def _leaves(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        # resources blocks are documented as a whole; other maps down to their leaves
        if isinstance(value, dict) and value and not key.endswith(("resources", "Selector")) \
                and path not in ("nodeSelector",):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _reference_rows() -> dict[str, str]:
    text = DOC.read_text()
    section = text.split("## Values reference", 1)[1]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([^`]+)` \| (.*?) \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_every_value_is_in_the_reference() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = _reference_rows()
    leaves = dict(_leaves(values))
    assert sorted(set(leaves) - set(rows)) == [], "values missing from docs/install.md"
    assert sorted(set(rows) - set(leaves)) == [], "docs/install.md documents values the chart lacks"


def test_scalar_defaults_match() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = _reference_rows()
    for path, value in _leaves(values):
        if isinstance(value, bool):
            expected = "true" if value else "false"
        elif isinstance(value, (int, float)) or (isinstance(value, str) and value):
            expected = str(value)
        else:
            continue
        assert expected in rows[path], f"{path}: default {expected!r} not in {rows[path]!r}"
