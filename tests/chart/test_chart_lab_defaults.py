"""The chart's defaults are what the lab runs: the Calyx objects `helm template` renders with
default values are exactly the ones the default lab scenario (containerlab/mesh3, which
`make demo` and the mesh3 end-to-end tests deploy with felix and bgpd) applies to its API."""
from __future__ import annotations

from typing import Any

from calyx import crds, model
from calyxlab import manifests
from calyxlab.lab import REPO_ROOT
from chart_support import Helm

DEFAULT_SCENARIO = REPO_ROOT / "containerlab" / "mesh3" / "cluster.yaml"


def _calyx_objects(docs) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> spec with the CRD's defaults applied, as the API server stores it."""
    found = {}
    for doc in docs:
        if doc.get("apiVersion") != model.API_VERSION:
            continue
        schema = crds.crd(doc["kind"]).spec_schema
        found[(doc["kind"], doc["metadata"]["name"])] = crds.apply_defaults(schema, doc.get("spec", {}))
    return found


def test_default_lab_scenario_runs_the_charts_default_objects(helm: Helm):
    chart = _calyx_objects(helm.template().documents)
    lab = _calyx_objects(manifests.load(DEFAULT_SCENARIO))
    assert set(chart) == {("IPPool", "default-ipv4-ippool"), ("BGPConfiguration", "default")}
    assert lab == chart
