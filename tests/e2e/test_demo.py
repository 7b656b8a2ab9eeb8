"""``make demo`` (``python -m calyxlab.demo``) runs to the end and leaves nothing behind.

The full run deploys mesh3 with the kernel chosen automatically (UML on a kernel without
ipip), so it is marked ``uml``; both tests use a claimed free management subnet instead of the
topology's.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from calyxlab.lab import leftovers
from calyxlab.state import LabNames
from calyxlab.subnets import claim_free_subnet, release_subnet

@pytest.mark.lab
@pytest.mark.uml
def test_demo_runs_to_the_end_and_cleans_up():
    subnet = claim_free_subnet()
    try:
        proc = subprocess.run([sys.executable, "-m", "calyxlab.demo", "--mgmt-subnet",
                               str(subnet)], capture_output=True, text=True, timeout=900)
    finally:
        release_subnet(subnet)
    out = proc.stdout
    print(out[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, f"demo exited {proc.returncode}: {proc.stderr[-2000:]}"
    name = re.search(r"--name (demo-[0-9a-f]+)", out)[1]
    assert out.count("node-to-node mesh") >= 6, "bgpd status of the three nodes not shown"
    assert "IPIP Always: 6/6 pod pairs answer" in out
    assert "ipipMode Never: 6/6 pod pairs answer" in out
    assert re.search(r"continuous ping during the switch: \d+ sent, \d+ lost", out)
    assert "vxlanMode Always: 6/6 pod pairs answer" in out
    assert "vxlan id 4096" in out and "dev vxlan.calico proto 80 onlink" in out
    assert re.search(r"VXLAN Always +\S+ via \S+ dev vxlan.calico proto 80 onlink +\d+ of \d+", out), \
        "the three modes are not summed up side by side"
    assert "dev tunl0" in out and "demo: done, nothing left behind" in out
    trace = out[out.index("=== calyxctl trace"):]
    # the pods were made under IPIP: the trace may rightly find their MTU too large for VXLAN
    assert "VXLAN via vxlan.calico" in trace and "result: the path" in trace and "BROKEN" not in trace, trace
    assert leftovers(name) == []


@pytest.mark.lab
def test_demo_destroys_the_lab_on_sigterm():
    """SIGTERM in the middle of the demo (pods being created) unwinds like Ctrl-C: exit 130,
    the lab destroyed. The host kernel suffices here: nothing is routed yet."""
    subnet = claim_free_subnet()
    proc = subprocess.Popen([sys.executable, "-u", "-m", "calyxlab.demo", "--kernel", "host",
                             "--mgmt-subnet", str(subnet)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("=== one pod per node"):
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        release_subnet(subnet)
    text = "".join(lines) + out
    assert proc.returncode == 130, text + err
    assert "interrupted" in err
    name = re.search(r"--name (demo-[0-9a-f]+)", text)[1]
    assert leftovers(name) == []
    assert not LabNames(name).state_dir.exists(), "an interrupted demo keeps no logs behind"
