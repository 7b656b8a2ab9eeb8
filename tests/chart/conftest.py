"""Fixtures for the Helm chart tests (helpers live in chart_support)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from calyxlab.controlplane import cluster
from chart_support import SCENARIOS, ChartCluster, Helm, Kubectl, Release, Rendered, find_helm, find_kubectl


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(find_helm())


@pytest.fixture(params=sorted(SCENARIOS), scope="session")
def scenario(request: pytest.FixtureRequest) -> tuple[str, tuple[Path, ...]]:
    return request.param, SCENARIOS[request.param]


@pytest.fixture(scope="session")
def rendered_scenarios(helm: Helm) -> dict[str, Rendered]:
    return {name: helm.template(values, include_crds=True) for name, values in SCENARIOS.items()}


@pytest.fixture(scope="module")
def chart_cluster(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartCluster]:
    """A real control plane of the test module's own: fresh, so that helm installs the CRDs
    itself (the session-wide one has them preinstalled). Stopped after the module's last test,
    whatever its outcome."""
    control_plane = cluster.start(tmp_path_factory.mktemp("chart-control-plane"))
    try:
        kubectl = Kubectl(find_kubectl(), control_plane.admin_kubeconfig)
        yield ChartCluster(control_plane, kubectl, Release(helm, control_plane.admin_kubeconfig))
    finally:
        control_plane.stop()
