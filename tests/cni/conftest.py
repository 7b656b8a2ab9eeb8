"""Fixtures of the CNI tests: a private subnet per session, and a Cluster (a node namespace
reaching the session's Kubernetes API) per test, always torn down."""
from __future__ import annotations

import pytest

from cnitest_support import Cluster, random_session_subnet


@pytest.fixture(scope="session")
def link_subnets():
    """/29s of a random 10.2XX.Y.0/24 chosen for this session, then of another when its 32 are
    used up (each test's /29 is free again once the test has removed its namespaces)."""
    def endless():
        while True:
            yield from random_session_subnet().subnets(new_prefix=29)
    return endless()


@pytest.fixture
def cluster(tmp_path, link_subnets, kube):
    c = Cluster(subnet=next(link_subnets), workdir=tmp_path, kube=kube)
    try:
        c.start()
        yield c
    finally:
        c.stop()
