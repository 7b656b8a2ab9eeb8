"""Fixtures: an emulator per test on a free loopback port, with the fixture CRDs, and official
`kubernetes` clients pointed at it through a kubeconfig file."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from kubernetes import client, config

from calyxlab.apiserver import EmbeddedAPIServer

from apitest_support import FIXTURE_CRDS, start_server  # noqa: F401 (fixtures use both)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedAPIServer]:
    srv = EmbeddedAPIServer(crd_dir=FIXTURE_CRDS, bookmark_interval=0.5).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api(server: EmbeddedAPIServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    api_client = config.new_client_from_config(str(kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)
