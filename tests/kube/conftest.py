"""Fixtures for the datastore tests: a real API emulator over HTTP and clients pointed at it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from calyx.kube import client
from calyxlab.apiserver import EmbeddedAPIServer


class Emulator:
    """One running emulator plus a kubeconfig for it; restartable on the same port."""

    def __init__(self, tmp: Path, history: int = 1000, bookmark_interval: float = 5.0, port: int = 0):
        self.tmp = tmp
        self.history = history
        self.bookmark_interval = bookmark_interval
        self.server = EmbeddedAPIServer(port=port, history=history, bookmark_interval=bookmark_interval).start()
        self.port = int(self.server.url.rsplit(":", 1)[1])
        self.kubeconfig = self.server.write_kubeconfig(tmp / f"kubeconfig-{self.port}")

    def client(self):
        return client.load(str(self.kubeconfig))

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        """A brand-new emulator (empty, new history) on the same port."""
        self.server.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.server = EmbeddedAPIServer(port=self.port, history=self.history,
                                                bookmark_interval=self.bookmark_interval).start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def make(**kwargs) -> Emulator:
        emulator = Emulator(tmp_path, **kwargs)
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(emulator_factory) -> Emulator:
    return emulator_factory()
