"""Fixtures for the Helm chart tests (helpers live in chart_support)."""
from __future__ import annotations

from pathlib import Path

import pytest

from chart_support import SCENARIOS, Helm, Rendered, find_helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(find_helm())


@pytest.fixture(params=sorted(SCENARIOS), scope="session")
def scenario(request: pytest.FixtureRequest) -> tuple[str, tuple[Path, ...]]:
    return request.param, SCENARIOS[request.param]


@pytest.fixture(scope="session")
def rendered_scenarios(helm: Helm) -> dict[str, Rendered]:
    return {name: helm.template(values, include_crds=True) for name, values in SCENARIOS.items()}
