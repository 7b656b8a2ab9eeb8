"""pytest fixtures for tests that build labs (loaded by the root ``tests/conftest.py``).

- ``lab_factory``: ``lab_factory(topology, kernel="host", **kw) -> Lab`` deploys with a lab
  name unique to this test session and a free management subnet, and destroys every lab it
  made at teardown, also when the test fails (logs are kept then, and their path printed).
- ``mgmt_subnet``: a free random ``172.31.X.0/24`` claimed for this session.
- ``unique_lab_name``: ``unique_lab_name("mesh") -> "mesh-<session id>-<n>"``.

Concurrent test sessions (other checkouts on the same machine) never collide: subnets are
claimed through :mod:`calyxlab.subnets`, and lab names carry a random session id.
"""
from __future__ import annotations

import itertools
import os
import secrets
from ipaddress import IPv4Network
from pathlib import Path
from typing import Callable, Iterator

import pytest

from calyxlab import lab as labmod
from calyxlab.lab import Lab
from calyxlab.subnets import claim_free_subnet, release_subnet

@pytest.fixture(scope="session")
def lab_session_id() -> str:
    return secrets.token_hex(3)


@pytest.fixture(scope="session")
def unique_lab_name(lab_session_id: str) -> Callable[[str], str]:
    counter = itertools.count(1)
    return lambda base: f"{base}-{lab_session_id}-{next(counter)}"


@pytest.fixture
def mgmt_subnet() -> Iterator[IPv4Network]:
    subnet = claim_free_subnet()
    yield subnet
    release_subnet(subnet)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"calyx_lab_{report.when}_failed", report.failed)


@pytest.fixture
def lab_factory(request, unique_lab_name) -> Iterator[Callable[..., Lab]]:
    made: list[tuple[str, IPv4Network]] = []

    def deploy(topology: str | os.PathLike[str], *, kernel: str = "host",
               name: str | None = None, mgmt_subnet: str | None = None, **kwargs) -> Lab:
        lab_name = unique_lab_name(name or Path(topology).name.split(".")[0])
        subnet = IPv4Network(mgmt_subnet) if mgmt_subnet else claim_free_subnet()
        made.append((lab_name, subnet))
        return Lab.deploy(topology, name=lab_name, mgmt_subnet=str(subnet), kernel=kernel,
                          **kwargs)

    yield deploy
    failed = getattr(request.node, "calyx_lab_call_failed", False)
    for lab_name, subnet in made:
        try:
            labmod.destroy(lab_name, cleanup=not failed)
            if failed:
                print(f"\nlab {lab_name}: logs kept in {labmod.LabNames(lab_name).state_dir}")
        finally:
            release_subnet(subnet)
