"""Every containerlab topology in the repository is valid for containerlab itself.

Validates ``containerlab/**/*.clab.yml`` and the tests' own topologies against containerlab's own
JSON schema (draft-07, vendored in ``containerlab/schema/clab.schema.json``) and checks that the
lab runner accepts each file too.
The schema's patterns use ``\\p{..}`` classes, which need the ``regex`` module in place of
``re`` inside jsonschema's keyword implementations.
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import jsonschema._keywords
import jsonschema._utils
import pytest
import regex
import yaml

from calyxlab.topology import load

REPO = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO / "containerlab" / "schema" / "clab.schema.json"
TOPOLOGIES = sorted((REPO / "containerlab").glob("**/*.clab.yml")) + sorted(
    (REPO / "tests" / "lab" / "topologies").glob("**/*.clab.yml")) + sorted(
    (REPO / "tests" / "e2e" / "topologies").glob("**/*.clab.yml")) + sorted(
    (REPO / "tests" / "bgpd" / "labs").glob("**/*.clab.yml")) + sorted(
    (REPO / "tests" / "calyxctl" / "lab").glob("*.clab.yml"))


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    with pytest.MonkeyPatch.context() as mp:
        for module in (jsonschema._keywords, jsonschema._utils):
            if hasattr(module, "re"):
                mp.setattr(module, "re", regex)
        yield jsonschema.Draft7Validator(schema)


def errors(validator, doc) -> list[str]:
    """Every error as '/path: message', descending into anyOf/oneOf alternatives."""
    out, todo = [], list(validator.iter_errors(doc))
    while todo:
        e = todo.pop()
        out.append(f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}")
        todo.extend(e.context or ())
    return sorted(out)


def test_there_are_topologies_to_check() -> None:
    names = {p.name for p in TOPOLOGIES}
    assert "two-nodes.clab.yml" in names and "routers.clab.yml" in names


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: str(p.relative_to(REPO)))
def test_topology_matches_containerlab_schema(validator, path: Path) -> None:
    assert errors(validator, yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: str(p.relative_to(REPO)))
def test_lab_runner_accepts_topology(path: Path) -> None:
    topo = load(path)
    assert topo.nodes and all(n.image for n in topo.nodes)


@pytest.mark.parametrize("doc,expected", [
    ({"name": "x", "topology": {"nodes": {"a": {"kind": "no_such_kind"}}}},
     "/topology/nodes/a/kind: 'no_such_kind' is not one of"),
    ({"name": "bad name!", "topology": {"nodes": {"a": {"kind": "linux"}}}},
     "/name: 'bad name!' does not match"),
    ({"name": "x", "topology": {"nodes": {"a": {"kind": "linux", "binds": "a:b"}}}},
     "/topology/nodes/a/binds: 'a:b' is not of type 'array'"),
    ({"name": "x", "mgmt": {"ipv4-subnet": "172.20.20.0"},
      "topology": {"nodes": {"a": {"kind": "linux"}}}},
     "/mgmt/ipv4-subnet: '172.20.20.0' does not match"),
    ({"name": "x", "topology": {"nodes": {"a": {"kind": "linux", "mgmt-ipv4": "300.1.1.1"}}}},
     "/topology/nodes/a/mgmt-ipv4: '300.1.1.1' does not match"),
])
def test_invalid_documents_are_rejected_naming_the_path(validator, doc, expected: str) -> None:
    found = errors(validator, doc)
    assert any(e.startswith(expected) for e in found), found
