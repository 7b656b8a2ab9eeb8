"""The scenario manifest (cluster.yaml) is checked before a lab is built, and applied like
`kubectl apply`: created when absent, merged when present."""
from pathlib import Path

import pytest

from calyxlab import manifests

REPO = Path(__file__).resolve().parents[2]


def test_every_scenario_manifest_loads():
    files = sorted((REPO / "containerlab").glob("*/cluster.yaml"))
    assert len(files) >= 5
    for f in files:
        kinds = {d["kind"] for d in manifests.load(f)}
        assert "IPPool" in kinds, f


def test_manifest_beside_topology_is_found(tmp_path):
    topo = tmp_path / "x.clab.yml"
    topo.write_text("name: x\n")
    assert manifests.scenario_manifest(topo) is None
    (tmp_path / "cluster.yaml").write_text("")
    assert manifests.scenario_manifest(topo) == tmp_path / "cluster.yaml"


@pytest.mark.parametrize("text, problem", [
    ("a: [", "not valid YAML"),
    ("- 1\n", "document 1: expected a mapping, got list"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
     "document 1: kind 'Deployment' of 'apps/v1' is not one the lab applies"),
    ("apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {}\n", "document 1: metadata.name is required"),
    ("apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: a}\n---\n"
     "apiVersion: calyx.dev/v1\nkind: Nope\nmetadata: {name: b}\n", "document 2: kind 'Nope'"),
])
def test_bad_manifest_names_file_document_and_problem(tmp_path, text, problem):
    f = tmp_path / "cluster.yaml"
    f.write_text(text)
    with pytest.raises(manifests.ManifestError) as err:
        manifests.load(f)
    assert str(err.value).startswith(str(f))
    assert problem in str(err.value)


def test_merge_patch_keeps_what_the_manifest_does_not_set():
    doc = {"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": "rr1", "annotations": {"calyx.dev/route-reflector-cluster-id": "244.0.0.1"}}}
    assert manifests._merge_patch(doc) == {
        "metadata": {"annotations": {"calyx.dev/route-reflector-cluster-id": "244.0.0.1"}}}
