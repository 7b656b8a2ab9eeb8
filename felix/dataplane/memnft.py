"""An in-memory nftables ruleset behind the :class:`felix.dataplane.nfttable.Nftables` seam, so the
NAT manager is unit-tested without a kernel.

It behaves as libnftables does where felix depends on it: a batch is one transaction (all of it
or nothing), adding a table, set or chain that exists or an element to a missing set fails,
deleting a missing table or element fails, and ``list table`` returns the objects as
libnftables' JSON does. Tables other than felix's are held and listed like any other, so a test
can see they are never touched. It counts the transactions it committed.

Pure code: no kernel, only data.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from felix.dataplane.nftjson import NftError, parse_element

NO_SUCH = "Error: No such file or directory"
EXISTS = "Error: File exists"
ELEMENT_MISSING = "Error: element does not exist"


class _Table:
    def __init__(self) -> None:
        self.sets: dict[str, dict[str, Any]] = {}
        self.chains: dict[str, dict[str, Any]] = {}
        self.rules: list[dict[str, Any]] = []


class MemoryNftables:
    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], _Table] = {}
        self.transactions = 0                 # committed batches
        self.refuse: str | None = None        # set: every batch with a write fails with this text
        self._handles = 0

    # --- the seam --------------------------------------------------------------------------

    def list_table(self, family: str, name: str) -> list[dict] | None:
        table = self.tables.get((family, name))
        if table is None:
            return None
        out: list[dict] = [{"table": {"family": family, "name": name, "handle": 1}}]
        for set_name, spec in table.sets.items():
            listed = {k: v for k, v in spec.items() if k != "elem"}
            if spec["elem"]:
                listed["elem"] = [copy.deepcopy(e) for e in spec["elem"]]
            out.append({"set": listed})
        for chain in table.chains.values():
            out.append({"chain": dict(chain)})
        for rule in table.rules:
            out.append({"rule": copy.deepcopy(rule)})
        return out

    def run(self, commands: Sequence[Mapping[str, Any]]) -> None:
        if self.refuse is not None:
            raise NftError(self.refuse)
        staged = copy.deepcopy(self.tables)
        for command in commands:
            (verb, body), = command.items()
            (kind, spec), = body.items()
            self._one(staged, verb, kind, spec)
        self.tables = staged
        self.transactions += 1

    # --- one command -------------------------------------------------------------------------

    def _one(self, tables: dict[tuple[str, str], _Table], verb: str, kind: str, spec: Mapping[str, Any]) -> None:
        if kind == "table":
            key = (spec["family"], spec["name"])
            if verb == "add":
                tables.setdefault(key, _Table())    # nft's add of an existing table is no error
            elif verb == "delete":
                if tables.pop(key, None) is None:
                    raise NftError(NO_SUCH)
            else:
                raise NftError(f"unsupported {verb} {kind}")
            return
        table = tables.get((spec["family"], spec["table"]))
        if table is None:
            raise NftError(NO_SUCH)
        self._handles += 1
        if kind == "set" and verb == "add":
            if spec["name"] in table.sets:
                raise NftError(EXISTS)
            stored = {"family": spec["family"], "name": spec["name"], "table": spec["table"], "type": spec["type"],
                      "handle": self._handles, "elem": []}
            if spec.get("flags"):
                stored["flags"] = list(spec["flags"])
            table.sets[spec["name"]] = stored
            self._add_elements(stored, spec.get("elem", ()))
        elif kind == "chain" and verb == "add":
            if spec["name"] in table.chains:
                raise NftError(EXISTS)
            table.chains[spec["name"]] = {**spec, "handle": self._handles}
        elif kind == "rule" and verb == "add":
            if spec["chain"] not in table.chains:
                raise NftError(NO_SUCH)
            table.rules.append({**copy.deepcopy(dict(spec)), "handle": self._handles})
        elif kind == "element" and verb in ("add", "delete"):
            stored = table.sets.get(spec["name"])
            if stored is None:
                raise NftError(NO_SUCH)
            if verb == "add":
                self._add_elements(stored, spec["elem"])
            else:
                for raw in spec["elem"]:
                    if raw not in stored["elem"]:
                        raise NftError(ELEMENT_MISSING)
                    stored["elem"].remove(raw)
        else:
            raise NftError(f"unsupported {verb} {kind}")

    @staticmethod
    def _add_elements(stored: dict[str, Any], elements: Sequence[Any]) -> None:
        interval = "interval" in stored.get("flags", ())
        for raw in elements:
            if raw in stored["elem"]:
                continue
            if interval:
                new = parse_element(raw)
                for have in stored["elem"]:
                    if any(n.overlaps(h) for n in new for h in parse_element(have)):
                        raise NftError(f"{EXISTS}: interval overlaps an existing element")
            stored["elem"].append(copy.deepcopy(raw))
