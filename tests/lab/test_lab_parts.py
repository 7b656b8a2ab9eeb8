"""The lab's pure parts (wiring plan, node view, roles, UML init) and the UML agent over TCP."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from calyxlab import agentauth, netplan, nodeview, roles, uml
from calyxlab.cli import format_table
from calyxlab.state import LabNames
from calyxlab.topology import load

TOPOS = Path(__file__).resolve().parent / "topologies"


def test_names_fit_linux_limits_and_differ_per_lab() -> None:
    a, b = LabNames("a-very-long-lab-name-for-testing"), LabNames("other")
    for n in (a, b):
        assert len(n.bridge) <= 15 and len(n.tap) <= 15 and len(n.mgmt_veth("node1")) <= 15
    assert a.bridge != b.bridge and a.tap != b.tap and a.mgmt_veth("x") != a.mgmt_veth("y")
    assert a.namespace("n1") == "clab-a-very-long-lab-name-for-testing-n1"


def test_root_batch_creates_both_link_ends_inside_their_namespaces() -> None:
    topo = load(TOPOS / "routers" / "routers.clab.yml", name="t", mgmt_subnet="10.209.1.0/24")
    names = LabNames("t")
    batch = netplan.root_batch(topo, names, bridge_address="10.209.1.1/24").splitlines()
    assert batch[:3] == [f"link add {names.bridge} type bridge",
                         f"addr add 10.209.1.1/24 dev {names.bridge}",
                         f"link set {names.bridge} up"]
    assert f"link add eth2 netns clab-t-bird type veth peer name eth2 netns clab-t-gobgp" in batch
    assert (f"link add {names.mgmt_veth('frr')} type veth peer name eth0 netns clab-t-frr"
            in batch)
    under_uml = netplan.root_batch(topo, names, bridge_address=None, create_bridge=False)
    assert "type bridge" not in under_uml and f"master {names.bridge}" in under_uml
    script = netplan.node_script(topo, "gobgp")
    assert "addr add 10.209.1.4/24 dev eth0" in script and "link set eth2 up" in script
    assert "default" not in script
    assert "ip_nonlocal_bind" in script        # a router may listen before its address exists
    assert "ip_nonlocal_bind" not in netplan.node_script(
        load(TOPOS / "slow.clab.yml", name="t"), "a")


def test_node_view_mounts_runtime_dirs_and_binds() -> None:
    topo = load(TOPOS / "routers" / "routers.clab.yml", name="t")
    names = LabNames("t")
    argv = nodeview.enter_argv(names, topo.node("frr"), ["vtysh", "-c", "show bgp summary"])
    assert argv[:6] == ["ip", "netns", "exec", "clab-t-frr", "sh", "-c"]
    script = argv[6]
    assert f"install -d -o frr -g frr {names.node_run_dir('frr')}/frr" in script
    assert f"mount --bind {names.node_run_dir('frr')}/frr /run/frr" in script
    assert f"mount --bind {TOPOS}/routers/frr/frr.conf /etc/frr/frr.conf" in script
    assert argv[-4:] == ["calyx-node", "vtysh", "-c", "show bgp summary"]
    plain = load(TOPOS / "failing.clab.yml", name="t").node("a")
    assert nodeview.enter_argv(names, plain, ["true"]) == ["ip", "netns", "exec", "clab-t-a",
                                                           "true"]


def test_roles() -> None:
    topo = load(TOPOS / "routers" / "routers.clab.yml")
    frr = roles.router_daemons(topo.node("frr"))
    assert [d.name for d in frr] == ["zebra", "staticd", "bgpd"]
    assert frr[0].argv == ("/usr/lib/frr/zebra", "-A", "127.0.0.1", "-s", "90000000")
    assert roles.router_daemons(topo.node("bird"))[0].argv[:4] == (
        "bird", "-f", "-c", "/etc/bird/bird.conf")
    assert roles.router_daemons(topo.node("gobgp"))[0].argv[:4] == (
        "gobgpd", "-f", "/etc/gobgp/gobgp.yml", "-t")
    assert roles.frr_enabled("bgpd=yes\nospfd=yes\nisisd=no\n") == ("zebra", "staticd", "bgpd",
                                                                     "ospfd")
    two = load(TOPOS.parent.parent.parent / "containerlab" / "two-nodes.clab.yml")
    assert roles.cluster_daemons(two.node("node1")) == ("felix", "bgpd")
    slow = load(TOPOS / "slow.clab.yml")
    assert roles.cluster_daemons(slow.node("a")) == ()
    bad = slow.node("a").__class__(**{**slow.node("a").__dict__,
                                      "env": {"CALYX_LAB_DAEMONS": "felix,kubelet"}})
    with pytest.raises(roles.RoleError, match="node 'a': env CALYX_LAB_DAEMONS='felix,kubelet': "
                                              "unknown daemon\\(s\\) kubelet"):
        roles.cluster_daemons(bad)


def test_uml_module_order_and_init_script() -> None:
    dep = ("kernel/net/ipv4/ipip.ko: kernel/net/ipv4/tunnel4.ko kernel/net/ipv4/ip_tunnel.ko\n"
           "kernel/net/ipv4/tunnel4.ko:\nkernel/net/ipv4/ip_tunnel.ko:\n"
           "kernel/drivers/net/veth.ko:\n")
    # like modprobe: a module's dependencies load last-listed first, each module once
    assert uml.module_load_order(dep, ["ipip", "veth", "tunnel4"]) == [
        "kernel/net/ipv4/ip_tunnel.ko", "kernel/net/ipv4/tunnel4.ko", "kernel/net/ipv4/ipip.ko",
        "kernel/drivers/net/veth.ko"]
    with pytest.raises(uml.UmlError, match="kernel module 'gre' not found"):
        uml.module_load_order(dep, ["gre"])
    script = uml.init_script(bridge="br-x", agent=IPv4Address("10.209.2.254"),
                             subnet=IPv4Network("10.209.2.0/24"), python="/v/bin/python",
                             module_dir=Path("/m"), modules=["a.ko"], key_file=Path("/s/k"),
                             host=IPv4Address("10.209.2.1"))
    assert "mount -t tmpfs -o mode=0755 tmpfs /run\n" in script and " /tmp" not in script
    assert "ip addr add 10.209.2.254/24 dev br-x" in script
    assert script.rstrip().endswith(
        "exec /v/bin/python -m calyxlab.umlagent --listen 10.209.2.254:7179 "
        "--key-file /s/k --allow 10.209.2.1")


def test_inspect_table() -> None:
    table = format_table([{"name": "clab-x-n1", "kind": "linux", "image": "calyx/node:latest",
                           "state": "running", "ipv4_address": "172.31.1.2/24"}])
    lines = table.splitlines()
    assert lines[1] == "| # | Name      | Kind  | Image             | State   | IPv4 Address  |"
    assert lines[3] == "| 1 | clab-x-n1 | linux | calyx/node:latest | running | 172.31.1.2/24 |"


@pytest.fixture
def agent(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = agentauth.create_key_file(tmp_path / "agent.key")
    proc = subprocess.Popen([sys.executable, "-m", "calyxlab.umlagent", "--listen",
                             f"127.0.0.1:{port}", "--key-file", str(tmp_path / "agent.key"),
                             "--allow", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "agent ready"
        yield uml.UmlBackend(IPv4Address("127.0.0.1"), key, port)
    finally:
        proc.terminate()
        proc.wait(10)


def test_agent_runs_spawns_and_terminates(agent: uml.UmlBackend, tmp_path: Path) -> None:
    assert agent.ping()
    res = agent.run(["sh", "-c", "cat; echo err >&2; exit 4"], input="in\n", env={"X": "1"})
    assert (res.returncode, res.stdout, res.stderr) == (4, "in\n", "err\n")
    slow = agent.run(["sleep", "30"], timeout=0.5)
    assert slow.returncode == -9 and "timed out after 0.5 s" in slow.stderr
    assert agent.run(["/nonexistent/x"]).returncode == 127
    log = tmp_path / "spawned.log"
    pid, started = agent.spawn(["sh", "-c", "echo $V; exec sleep 60"], env={"V": "hello"},
                               log=str(log))
    assert agent.alive(pid, started)
    for _ in range(100):
        if log.exists() and log.read_text():
            break
        time.sleep(0.02)
    assert log.read_text() == "hello\n"
    assert not agent.alive(pid, started + 1)        # a different start time: not ours
    assert agent.terminate(pid, started + 1) is False
    assert agent.terminate(pid, started) is True
    assert not agent.alive(pid, started)
    with pytest.raises(uml.UmlError, match="refused explode: unknown op 'explode'"):
        agent._call({"op": "explode"}, 5)


def _exchange(port: int, answer, source: str = "127.0.0.1") -> tuple[bytes, dict | None]:
    """One raw connection to the agent: its greeting, then ``answer(challenge)``'s line sent and
    the reply read (None when the agent closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        lines = sock.makefile("rb")
        hello = lines.readline()
        if not hello:
            return b"", None
        sock.sendall(answer(bytes.fromhex(json.loads(hello)["challenge"])) + b"\n")
        reply = lines.readline()
        return hello, json.loads(reply) if reply else None


def test_agent_acts_only_for_its_key_holder_at_the_host_address(agent: uml.UmlBackend,
                                                                 tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    request = json.dumps({"op": "run", "argv": ["touch", str(marker)]})
    refused = {"ok": False, "error": "not authenticated"}
    # a request signed with another key, unsigned, or in the bare form of old: nothing runs
    stranger = uml.UmlBackend(agent.agent, bytes(32), agent.port)
    with pytest.raises(uml.UmlError, match="not authenticated"):
        stranger.run(["touch", str(marker)])
    assert _exchange(agent.port, lambda c: json.dumps({"request": request}).encode())[1] == refused
    assert _exchange(agent.port, lambda c: request.encode())[1] == refused
    assert _exchange(agent.port, lambda c: b"\xff garbage")[1] == refused
    assert not marker.exists()
    # a correctly signed exchange, recorded and played again on a new connection: refused
    recorded: list[bytes] = []

    def sign_and_record(challenge: bytes) -> bytes:
        recorded.append(json.dumps({"mac": agentauth.sign(agent.key, challenge, request),
                                    "request": request}).encode())
        return recorded[-1]
    assert _exchange(agent.port, sign_and_record)[1]["returncode"] == 0
    assert marker.exists()
    marker.unlink()
    assert _exchange(agent.port, lambda c: recorded[0])[1] == refused
    assert not marker.exists()
    # from any address but the host's, the connection closes before a challenge is sent
    assert _exchange(agent.port, sign_and_record, source="127.0.0.2") == (b"", None)
    assert not marker.exists()
    assert agent.key.hex() not in repr(agent)


def test_agent_will_not_start_with_a_key_others_can_read(tmp_path: Path) -> None:
    key_file = tmp_path / "agent.key"

    def start() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "calyxlab.umlagent", "--listen",
                               "127.0.0.1:0", "--key-file", str(key_file), "--allow", "127.0.0.1"],
                              capture_output=True, text=True, timeout=30)
    res = start()
    assert res.returncode == 2 and f"agent key {key_file}: cannot open" in res.stderr
    agentauth.create_key_file(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_file.chmod(0o640)
    res = start()
    assert res.returncode == 2 and "mode 0640 lets group or others at it" in res.stderr
    key_file.chmod(0o600)
    key_file.write_text("not hex\n")
    with pytest.raises(agentauth.AgentKeyError, match="not 32 hex-encoded bytes"):
        agentauth.read_key_file(key_file)
