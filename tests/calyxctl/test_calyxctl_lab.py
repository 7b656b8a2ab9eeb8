"""``calyxctl`` run as the console script (the entry point pyproject.toml declares) inside a lab
node, against the lab's kube-apiserver and the real felix and bgpd of two nodes: ``node status``
of this node (control socket) and of the other (bgpd's ``/status`` over the network), ``ipam
show`` / ``--show-blocks`` / ``--ip`` and ``ipam check`` over pods wired by the CNI plugin, with
the other node's assignments read from its felix's ``/ipam``, a leaked address (a Pod deleted
without CNI DEL) and a block of a node that does not exist found; and ``get`` listing resources,
an invalid one with its error, a BGP password only by reference.

Lab ``lab/ctl.clab.yml``: node1 (10.0.0.1) and node2 (10.0.0.2), pool 10.70.0.0/24 in blocks
of 16. The tests of this module run in order on one lab.
"""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
from kubernetes import client as k8s

from calyx.kube import client as kube_client
from calyxlab import manifests, pods
from calyxlab.pytest_plugin import module_lab, wait_for

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = Path(__file__).parent / "lab" / "ctl.clab.yml"
NODES = {"node1": "10.0.0.1", "node2": "10.0.0.2"}
TIMEOUT = 120.0
SECRET_VALUE = "calyxctl-never-shows-this"


def _entry_point() -> tuple[str, str]:
    """(module, function) of the ``calyxctl`` console script pyproject.toml declares."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["calyxctl"].partition(":")
    return module, function


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    # The daemons and calyxctl run this checkout's code (PYTHONPATH), whatever is installed.
    with module_lab(request, unique_lab_name("ctl"), TOPOLOGY, kernel="host", daemons=()) as lab:
        for node in NODES:
            lab.start_daemons(node, ("felix", "bgpd"), env={"PYTHONPATH": str(REPO)})
        yield lab


def calyxctl(lab, node: str, *args: str):
    """``calyxctl ARGS`` in ``node``: its environment (NODENAME, CALYX_RUN_DIR), the operator's
    kubeconfig, the console script's entry point as pip's wrapper calls it."""
    module, function = _entry_point()
    script = f"import sys\nfrom {module} import {function}\nsys.exit({function}())"
    env = {**lab.node_env(node), "KUBECONFIG": str(lab.kubeconfig), "PYTHONPATH": str(REPO)}
    return lab.exec(node, [sys.executable, "-c", script, *args], env=env, timeout=90)


def ok(res) -> str:
    assert res.returncode == 0, f"exit {res.returncode}: {res.stdout}\n{res.stderr}"
    return res.stdout


def _api(lab):
    return kube_client.load(str(lab.kubeconfig))


def test_node_status_here_through_the_socket_and_there_through_the_network(lab):
    def established(node: str, *extra: str):
        res = calyxctl(lab, "node1", "node", "status", *extra, "-o", "json")
        if res.returncode != 0:
            return None
        status = json.loads(res.stdout)
        peers = {p["peer_address"]: p["state"] for p in status["peers"]}
        other = NODES["node2" if node == "node1" else "node1"]
        return status if peers == {other: "Established"} else None

    local = wait_for("node1's mesh session, from its socket", lambda: established("node1"), TIMEOUT)
    assert local["node"] == "node1" and local["router_id"] == NODES["node1"]
    remote = wait_for("node2's mesh session, over the network", lambda: established("node2", "node2"), TIMEOUT)
    assert remote["node"] == "node2" and remote["router_id"] == NODES["node2"]
    assert set(remote) == set(local)                                  # the same view as bgpd status -o json
    assert "password" not in json.dumps(remote).lower()

    text = ok(calyxctl(lab, "node1", "node", "status"))
    print(text)
    lines = text.splitlines()
    assert re.fullmatch(r"Calyx bgpd is running on node node1 \(router ID 10\.0\.0\.1, AS \d+\)\.", lines[0])
    header = next(line for line in lines if "PEER ADDRESS" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]
    row = next(line for line in lines if line.startswith("| 10.0.0.2"))
    assert [c.strip() for c in row.strip("|").split("|")][1:3] == ["node-to-node mesh", "Established"]
    assert lines[-2:] == ["IPv6 BGP status", "No IPv6 peers found."]
    there = ok(calyxctl(lab, "node1", "node", "status", "node2"))
    assert there.splitlines()[0].startswith("Calyx bgpd is running on node node2 (router ID 10.0.0.2")

    nowhere = calyxctl(lab, "node1", "node", "status", "--run-dir", "/nonexistent")
    assert nowhere.returncode == 1
    assert "Calyx bgpd is not running on this node: no bgpd is running: cannot connect to " \
           "/nonexistent/bgpd.sock" in nowhere.stderr
    closed = calyxctl(lab, "node1", "node", "status", "node2", "--bgpd-port", "1")
    assert closed.returncode == 1 and "http://10.0.0.2:1/status" in closed.stderr
    unknown = calyxctl(lab, "node1", "node", "status", "node9")
    assert unknown.returncode == 1 and "Node 'node9' not found" in unknown.stderr


def test_ipam_show_and_check_find_a_leaked_address_and_an_orphaned_block(lab):
    a = pods.add_pod(lab, "node1", "default", "a")
    b = pods.add_pod(lab, "node1", "default", "b")
    c = pods.add_pod(lab, "node2", "default", "c")
    assert (a, b, c) == ("10.70.0.1", "10.70.0.2", "10.70.0.17")

    show = ok(calyxctl(lab, "node1", "ipam", "show"))
    print(show)
    assert re.search(r"\| IP Pool +\| 10\.70\.0\.0/24 \| +256 \| 5 \(1%\) +\| 251 \(98%\) +\|", show)
    assert "leaked" not in show and "not read" not in show
    blocks = ok(calyxctl(lab, "node1", "ipam", "show", "--show-blocks"))
    print(blocks)
    assert re.search(r"\| Block +\| 10\.70\.0\.0/28 +\| host:node1 +\| +16 \| 3 \(18%\) +\| 13 \(81%\) +\|", blocks)
    assert re.search(r"\| Block +\| 10\.70\.0\.16/28 +\| host:node2 +\| +16 \| 2 \(12%\) +\| 14 \(87%\) +\|", blocks)
    # node2's pod as node2's felix records it, read from node1.
    who = ok(calyxctl(lab, "node1", "ipam", "show", "--ip", c))
    print(who)
    assert who.splitlines()[0] == f"IP {c} is in use"
    assert "  assigned on node node2:" in who and "    pod: c" in who and "    handle: " in who
    assert "  held by pod default/c on node node2 (Running)" in who
    free = ok(calyxctl(lab, "node1", "ipam", "show", "--ip", "10.70.0.9"))
    assert free.splitlines()[:3] == ["IP 10.70.0.9 is not assigned", "  pool: pool (10.70.0.0/24)",
                                     "  block: 10.70.0.0/28, affine to node node1"]

    clean = calyxctl(lab, "node1", "ipam", "check")
    print(clean.stdout)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "  node1 has 2 assignments" in clean.stdout and "  node2 has 1 assignments" in clean.stdout
    assert clean.stdout.splitlines()[-1] == "Check complete; found 0 problems."

    # Pod a's object goes without a CNI DEL: node1 still assigns its address.
    k8s.CoreV1Api(_api(lab)).delete_namespaced_pod("a", "default", grace_period_seconds=0)
    k8s.CustomObjectsApi(_api(lab)).create_cluster_custom_object("calyx.dev", "v1", "ipamblocks", {
        "apiVersion": "calyx.dev/v1", "kind": "IPAMBlock", "metadata": {"name": "10-70-0-224-28"},
        "spec": {"cidr": "10.70.0.224/28", "affinity": "host:gone", "pool": "pool"}})

    leaky = calyxctl(lab, "node2", "ipam", "check")       # from the other node: node1's records over HTTP
    print(leaky.stdout)
    assert leaky.returncode == 1, leaky.stdout + leaky.stderr
    out = leaky.stdout
    assert "Found 1 leaked addresses." in out
    assert re.search(rf"^  {re.escape(a)} on node node1, handle \S+/eth0: pod default/a no longer exists$", out, re.M)
    assert "Found 1 orphaned blocks." in out
    assert "  block 10.70.0.224/28 (IPAMBlock 10-70-0-224-28): node gone does not exist" in out
    assert "Found 0 pods with unrecorded addresses." in out
    assert out.splitlines()[-1] == "Check complete; found 2 problems."
    summary = ok(calyxctl(lab, "node1", "ipam", "show"))
    assert f"1 leaked address(es): assigned on a node to a pod that no longer holds them ({a})" in summary
    gone = ok(calyxctl(lab, "node1", "ipam", "show", "--ip", a))
    assert "  no pod in the API holds it: leaked (`calyxctl ipam check`)" in gone

    # Without node2's felix to ask, the check says it is incomplete rather than clean.
    partial = calyxctl(lab, "node1", "ipam", "check", "--felix-port", "1")
    assert partial.returncode == 1 and "  node2: not read: http://10.0.0.2:1/ipam" in partial.stdout
    assert "Incomplete: the assignments of node2 could not be read." in partial.stdout


def test_get_lists_resources_invalid_ones_with_their_error_and_passwords_by_reference(lab):
    manifests.apply(str(lab.kubeconfig), [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp-secrets", "namespace": "calyx-system"},
         "stringData": {"tor": SECRET_VALUE}},
        {"apiVersion": "calyx.dev/v1", "kind": "BGPPeer", "metadata": {"name": "tor"},
         "spec": {"peerIP": "10.0.0.254", "asNumber": 65001, "node": "node1",
                  "password": {"secretKeyRef": {"name": "bgp-secrets", "key": "tor"}}}},
        {"apiVersion": "calyx.dev/v1", "kind": "IPPool", "metadata": {"name": "badsel"},
         "spec": {"cidr": "10.71.0.0/24", "nodeSelector": "has("}},
    ])
    pools = ok(calyxctl(lab, "node1", "get", "ippools"))
    print(pools)
    lines = pools.splitlines()
    assert lines[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert lines[2].split() == ["pool", "10.70.0.0/24", "all()"]
    assert lines[1].split()[:2] == ["badsel", "10.71.0.0/24"]
    assert lines[-1].startswith("INVALID (ignored by the daemons): IPPool 'badsel': spec.nodeSelector: 'has(': ")
    wide = ok(calyxctl(lab, "node1", "get", "ippool", "pool", "-o", "wide"))
    assert wide.splitlines()[1].split() == ["pool", "10.70.0.0/24", "false", "Never", "Never", "false", "false",
                                           "28", "all()"]

    outputs = [ok(calyxctl(lab, "node1", "get", "bgppeers", *o)) for o in ((), ("-o", "wide"), ("-o", "yaml"),
                                                                            ("-o", "json"))]
    assert outputs[0].splitlines()[1].split() == ["tor", "10.0.0.254", "node1", "65001"]
    assert outputs[1].splitlines()[1].split()[-4:] == ["secret", "bgp-secrets", "key", "tor"]
    assert json.loads(outputs[3])["items"][0]["spec"]["password"] == {
        "secretKeyRef": {"name": "bgp-secrets", "key": "tor"}}
    assert all(SECRET_VALUE not in text for text in outputs)
    assert "managedFields" not in outputs[2]
    config = ok(calyxctl(lab, "node1", "get", "bgpconfig"))
    assert config.splitlines()[0].split() == ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"]

    missing = calyxctl(lab, "node1", "get", "ippool", "nope")
    assert missing.returncode == 1 and "IPPool 'nope' not found" in missing.stderr
    bad_kind = calyxctl(lab, "node1", "get", "felixconfig")
    assert bad_kind.returncode == 2 and "unknown resource type 'felixconfig'" in bad_kind.stderr
