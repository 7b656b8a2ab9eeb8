"""pytest fixtures for tests that build labs (loaded by the root ``tests/conftest.py``).

- ``lab_factory``: ``lab_factory(topology, kernel="host", **kw) -> Lab`` deploys with a lab
  name unique to this test session and a free management subnet, and destroys every lab it
  made at teardown, also when the test fails (logs are kept then, and their path printed).
- ``mgmt_subnet``: a free random ``172.31.X.0/24`` claimed for this session.
- ``unique_lab_name``: ``unique_lab_name("mesh") -> "mesh-<session id>-<n>"``.
- ``module_lab(request, name, topology, kernel=..., **kw)``: a context manager for a lab shared
  by a whole test module (a module-scoped fixture wraps it); destroyed afterwards, its logs kept
  when a test failed meanwhile.
- ``wait_for(what, predicate, timeout)``: poll until ``predicate()`` is truthy, or fail naming
  ``what`` and the last value seen.

Concurrent test sessions (other checkouts on the same machine) never collide: subnets are
claimed through :mod:`calyxlab.subnets`, and lab names carry a random session id.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, Callable, Iterator

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
        _destroy(lab_name, subnet, keep_logs=failed)


def _destroy(lab_name: str, subnet: IPv4Network, *, keep_logs: bool) -> None:
    try:
        labmod.destroy(lab_name, cleanup=not keep_logs)
        if keep_logs:
            print(f"\nlab {lab_name}: logs kept in {labmod.LabNames(lab_name).state_dir}")
    finally:
        release_subnet(subnet)


@contextlib.contextmanager
def module_lab(request, name: str, topology: str | os.PathLike[str], *, kernel: str,
               **kwargs) -> Iterator[Lab]:
    """Deploy a lab named ``name`` on a free subnet for a test module; destroy it afterwards,
    keeping its logs (and printing their path) when a test failed while it was up."""
    subnet = claim_free_subnet()
    failed_before = request.session.testsfailed
    try:
        yield Lab.deploy(topology, name=name, mgmt_subnet=str(subnet), kernel=kernel, **kwargs)
    finally:
        _destroy(name, subnet, keep_logs=request.session.testsfailed > failed_before)


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.3) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail naming
    ``what`` and the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
