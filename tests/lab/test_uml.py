"""Labs inside user-mode Linux: IPIP between nodes, the host's API server, clean teardown."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from calyxlab import procs
from calyxlab import uml as uml_backend
from calyxlab.lab import leftovers, resolve_kernel
from calyxlab.state import LabNames

pytestmark = [pytest.mark.uml, pytest.mark.lab]

TOPOS = Path(__file__).resolve().parent / "topologies"
CLI = str(Path(sys.executable).parent / "calyx-lab")


def test_auto_kernel_follows_ipip_support(unique_lab_name) -> None:
    ns = unique_lab_name("ipip-check")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        host_has_ipip = subprocess.run(["ip", "-n", ns, "link", "add", "t0", "type", "ipip",
                                        "remote", "192.0.2.9"], capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert resolve_kernel("auto") == ("host" if host_has_ipip else "uml")


def test_ipip_between_nodes_inside_uml(lab_factory) -> None:
    lab = lab_factory(TOPOS / "ipip.clab.yml", kernel="uml")
    assert lab.kernel == "uml"
    uname = lab.run_root(["uname", "-r"], check=True).stdout.strip()
    assert uname != subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    # IPIP: a's tunnel address reaches b's through tunl0, encapsulated over eth1
    res = lab.exec("a", ["ping", "-c2", "-W3", "-I", "10.244.1.1", "10.244.2.1"], check=True)
    assert "2 received" in res.stdout
    stats = json.loads(lab.exec("b", ["ip", "-j", "-s", "link", "show", "tunl0"],
                                check=True).stdout)[0]
    assert stats["stats64"]["rx"]["packets"] >= 2
    route = lab.exec("a", ["ip", "route", "get", "10.244.2.1"], check=True).stdout
    assert "dev tunl0" in route and "via 10.0.0.2" in route
    # the API server runs on the host; nodes inside UML reach it over the tap, with TLS
    nodes = json.loads(lab.exec("b", ["kubectl", "--kubeconfig", str(lab.kubeconfig), "get",
                                      "nodes", "-o", "json"], check=True, timeout=120).stdout)
    assert sorted(n["metadata"]["name"] for n in nodes["items"]) == ["a", "b"]
    # the host reaches each node's mgmt address directly
    subprocess.run(["ping", "-c1", "-W3", lab.nodes["b"].mgmt_ipv4], check=True,
                   capture_output=True)
    # `calyx-lab exec` reaches into UML too
    res = subprocess.run([CLI, "exec", "--name", lab.name, "--node", "a", "--", "ip", "-br",
                          "addr", "show", "tunl0"], capture_output=True, text=True)
    assert res.returncode == 0 and "10.244.1.1/32" in res.stdout
    # the lab's agent acts for the host with the lab's key only: a node inside UML gets no
    # greeting, the host without the key is refused, and the key file is root's alone
    agent = lab.topology.mgmt.agent_address
    probe = ("import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), "
             "timeout=10); print(repr(s.recv(100)))")
    res = lab.exec("a", [sys.executable, "-c", probe, str(agent), str(uml_backend.AGENT_PORT)],
                   check=True, timeout=60)
    assert res.stdout.strip() == "b''"
    with pytest.raises(uml_backend.UmlError, match="not authenticated"):
        uml_backend.UmlBackend(agent, bytes(32)).run(["true"])
    assert LabNames(lab.name).uml_agent_key.stat().st_mode & 0o777 == 0o600
    uml = lab.state.data["uml"]
    assert procs.alive(uml["pid"], uml["start_time"])
    lab.destroy()
    assert not procs.alive(uml["pid"], uml["start_time"])
    assert leftovers(lab.name) == []
    tap = LabNames(lab.name).tap
    assert subprocess.run(["ip", "link", "show", tap], capture_output=True).returncode != 0


def test_destroy_of_uml_lab_without_state_file(lab_factory) -> None:
    lab = lab_factory(TOPOS / "routers" / "routers.clab.yml", kernel="uml")
    # routers inside UML: FRR's vtysh reaches its own daemons through the per-node run dir
    out = lab.exec("frr", ["vtysh", "-c", "show running-config"], check=True).stdout
    assert "router bgp 65001" in out
    lab.names.state_file.unlink()
    assert leftovers(lab.name) != []
    subprocess.run([CLI, "destroy", "--name", lab.name], check=True, capture_output=True)
    assert leftovers(lab.name) == []
