"""calyx-lab's main() can run inside another program (the tests call it): the SIGTERM handler it
installs while it works must not outlive it, or every process that program forks later (pyroute2
forks to enter a namespace) would turn SIGTERM into SystemExit and run its parent's code."""
from __future__ import annotations

import signal

from calyxlab import cli


def test_main_restores_the_previous_sigterm_action():
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["inspect", "--name", "no-such-lab-for-signal-test"]) == 1
    assert signal.getsignal(signal.SIGTERM) is before
