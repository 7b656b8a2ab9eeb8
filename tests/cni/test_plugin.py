"""The plugin as the container runtime drives it: a real process in a node namespace, a real
kube-apiserver over HTTPS, real pod namespaces. CNI spec 1.0.0 conformance."""
from __future__ import annotations

import ipaddress
import json

import jsonschema
import pytest
from kubernetes import client as k8s

from calyx import naming
from cnitest_support import Namespaces, sh

pytestmark = pytest.mark.lab

# The CNI 1.0.0 success result, as the specification describes it.
RESULT_SCHEMA = {
    "type": "object",
    "required": ["cniVersion", "ips"],
    "properties": {
        "cniVersion": {"const": "1.0.0"},
        "interfaces": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "mac": {"type": "string"},
                           "sandbox": {"type": "string"}}}},
        "ips": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["address"],
            "properties": {"address": {"type": "string"}, "gateway": {"type": "string"},
                           "interface": {"type": "integer", "minimum": 0}},
            "not": {"required": ["version"]}}},
        "routes": {"type": "array", "items": {"type": "object", "required": ["dst"]}},
        "dns": {"type": "object"},
    },
}
ERROR_SCHEMA = {"type": "object", "required": ["cniVersion", "code", "msg"],
                "properties": {"code": {"type": "integer"}, "msg": {"type": "string", "minLength": 1}}}


def _error(run, code: int) -> str:
    assert run.returncode != 0
    body = run.json
    jsonschema.validate(body, ERROR_SCHEMA)
    assert body["code"] == code, body
    return body["msg"]


def test_version(cluster):
    run = cluster.plugin({"CNI_COMMAND": "VERSION"}, "{}")
    assert run.returncode == 0
    assert "1.0.0" in run.json["supportedVersions"] and run.json["cniVersion"] == "1.0.0"


def test_add_check_del_cycle(cluster):
    cluster.create_pool("pool-a", "10.77.0.0/24", block_size=28)
    pod_ns, run = cluster.add_pod("default", "web-1", container_id="cid-1")
    assert run.returncode == 0, run.stdout + run.stderr
    result = run.json
    jsonschema.validate(result, RESULT_SCHEMA)
    host_if = naming.cali_interface_name("default", "web-1")
    assert result["interfaces"][0] == {"name": host_if, "mac": "ee:ee:ee:ee:ee:ee"}
    assert result["interfaces"][1]["name"] == "eth0"
    assert result["interfaces"][1]["sandbox"] == Namespaces.path(pod_ns)
    assert result["ips"][0]["interface"] == 1
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    address = ipaddress.ip_interface(result["ips"][0]["address"])
    # First block of the pool; its first address is the node's (tunl0), never a pod's.
    assert address == ipaddress.ip_interface("10.77.0.1/32")
    blocks = cluster.blocks()
    assert [(b["spec"]["cidr"], b["spec"]["affinity"]) for b in blocks] == [("10.77.0.0/28", "host:node-a")]

    assert f"10.77.0.1 dev {host_if} proto 80 scope link" in sh("ip", "route", netns=cluster.node_ns).stdout
    assert "inet 10.77.0.1/32" in sh("ip", "addr", "show", "eth0", netns=pod_ns).stdout
    ping = sh("ping", "-c", "1", "-W", "2", "10.77.0.1", netns=cluster.node_ns, check=False)
    assert ping.returncode == 0, ping.stdout

    env_check = cluster.env("CHECK", "cid-1", Namespaces.path(pod_ns), ("default", "web-1"))
    assert cluster.plugin(env_check, cluster.netconf(prevResult=result)).returncode == 0

    # ADD retried with the same container: same address, still one allocation.
    again = cluster.plugin(cluster.env("ADD", "cid-1", Namespaces.path(pod_ns), ("default", "web-1")))
    assert again.returncode == 0 and again.json["ips"] == result["ips"]

    env_del = cluster.env("DEL", "cid-1", Namespaces.path(pod_ns), ("default", "web-1"))
    assert cluster.plugin(env_del).returncode == 0
    assert host_if not in sh("ip", "link", netns=cluster.node_ns).stdout
    assert "10.77.0.1 " not in sh("ip", "route", netns=cluster.node_ns).stdout
    state = json.loads((cluster.workdir / "run" / "ipam" / "state.json").read_text())
    assert state["allocations"] == []

    # CHECK after DEL names the cause.
    msg = _error(cluster.plugin(env_check, cluster.netconf(prevResult=result)), 103)
    assert "cid-1" in msg

    # DEL is idempotent: again, with the netns gone, for a container never seen, without CNI_NETNS.
    assert cluster.plugin(env_del).returncode == 0
    sh("ip", "netns", "del", pod_ns)
    assert cluster.plugin(env_del).returncode == 0
    assert cluster.plugin(cluster.env("DEL", "never-seen", "", None)).returncode == 0
    assert cluster.plugin(cluster.env("DEL", "never-seen", "/var/run/netns/none-such", ("x", "y"))).returncode == 0


def test_address_released_by_del_is_reused_and_check_detects_damage(cluster):
    cluster.create_pool("pool-a", "10.78.0.0/24", block_size=26)
    ns1, r1 = cluster.add_pod("default", "a", "c-a")
    ns2, r2 = cluster.add_pod("default", "b", "c-b")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stdout + r2.stdout
    a1, a2 = r1.json["ips"][0]["address"], r2.json["ips"][0]["address"]
    assert (a1, a2) == ("10.78.0.1/32", "10.78.0.2/32")

    sh("ip", "addr", "del", "10.78.0.2/32", "dev", "eth0", netns=ns2)
    msg = _error(cluster.plugin(cluster.env("CHECK", "c-b", Namespaces.path(ns2), ("default", "b"))), 103)
    assert "10.78.0.2/32" in msg and "eth0" in msg

    assert cluster.plugin(cluster.env("DEL", "c-a", Namespaces.path(ns1), ("default", "a"))).returncode == 0
    ns3, r3 = cluster.add_pod("default", "c", "c-c")
    assert r3.json["ips"][0]["address"] == "10.78.0.1/32"


def test_new_sandbox_of_same_pod_survives_late_del_of_old_one(cluster):
    cluster.create_pool("pool-a", "10.79.0.0/24")
    old_ns, old = cluster.add_pod("default", "sts-0", "old")
    new_ns, new = cluster.add_pod("default", "sts-0", "new")
    assert old.returncode == 0 and new.returncode == 0
    assert cluster.plugin(cluster.env("DEL", "old", Namespaces.path(old_ns), ("default", "sts-0"))).returncode == 0
    check = cluster.plugin(cluster.env("CHECK", "new", Namespaces.path(new_ns), ("default", "sts-0")))
    assert check.returncode == 0, check.stdout


def test_mtu_from_felix_file_and_from_config(cluster):
    cluster.create_pool("pool-a", "10.80.0.0/24")
    run_dir = cluster.workdir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "mtu").write_text("1480\n")
    ns1, r1 = cluster.add_pod("default", "m1")
    assert r1.returncode == 0
    assert "mtu 1480" in sh("ip", "link", "show", "eth0", netns=ns1).stdout
    ns2 = cluster.namespaces.add("mtu2")
    r2 = cluster.plugin(cluster.env("ADD", "m2", Namespaces.path(ns2), ("default", "m2")), cluster.netconf(mtu=1400))
    assert r2.returncode == 0
    assert "mtu 1400" in sh("ip", "link", "show", "eth0", netns=ns2).stdout
    assert "mtu 1400" in sh("ip", "link", "show", naming.cali_interface_name("default", "m2"),
                            netns=cluster.node_ns).stdout


@pytest.mark.parametrize("conf, code, words", [
    ("not json", 6, ["not JSON"]),
    ({"cniVersion": "2.0.0"}, 1, ["cniVersion", "2.0.0"]),
    ({"type": "bridge"}, 4, ["type", "bridge"]),
    ({"mtu": 10}, 4, ["mtu", "10"]),
    ({"run_dir": "relative/dir"}, 4, ["run_dir", "relative/dir"]),
    ({"nodename": None}, 4, ["nodename"]),
    ({"kubeconfig": "/nonexistent/kubeconfig"}, 4, ["kubeconfig", "/nonexistent/kubeconfig"]),
])
def test_bad_config_is_reported_as_spec_error(cluster, conf, code, words):
    cluster.create_pool("pool-a", "10.81.0.0/24")
    pod_ns = cluster.namespaces.add("bad")
    stdin = conf if isinstance(conf, str) else json.dumps(cluster.netconf(**conf))
    msg = _error(cluster.plugin(cluster.env("ADD", "c1", Namespaces.path(pod_ns), ("default", "p")), stdin), code)
    for word in words:
        assert word in msg
    assert "eth0" not in sh("ip", "link", netns=pod_ns).stdout


@pytest.mark.parametrize("env, words", [
    ({"CNI_COMMAND": "FROB"}, ["CNI_COMMAND", "FROB"]),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c"}, ["CNI_NETNS", "CNI_IFNAME"]),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/var/run/netns/none-such-ns",
      "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b"}, ["none-such-ns"]),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0"},
     ["K8S_POD_NAME"]),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
      "CNI_ARGS": "garbage"}, ["CNI_ARGS", "garbage"]),
])
def test_bad_environment_is_code_7(cluster, env, words):
    msg = _error(cluster.plugin(env), 7)
    for word in words:
        assert word in msg


def test_unknown_node_and_no_pool_are_named(cluster):
    pod_ns = cluster.namespaces.add("nopool")
    env = cluster.env("ADD", "c1", Namespaces.path(pod_ns), ("default", "p"))
    msg = _error(cluster.plugin(env), 100)
    assert "node-a" in msg and "no enabled IPPool" in msg
    msg = _error(cluster.plugin(env, cluster.netconf(nodename="ghost")), 101)
    assert "'ghost'" in msg and "not found" in msg


def test_node_pod_cidrs_are_used_when_the_cluster_allocates_them(cluster):
    cluster.create_pool("pool-a", "10.82.0.0/16")
    cluster.create_node("node-b", pod_cidrs=["10.83.5.0/30"])
    conf = cluster.netconf(nodename="node-b")
    got = []
    for i in range(3):
        ns = cluster.namespaces.add(f"pc{i}")
        run = cluster.plugin(cluster.env("ADD", f"c{i}", Namespaces.path(ns), ("default", f"p{i}")), conf)
        got.append(run)
    assert [r.json["ips"][0]["address"] for r in got[:3]] == ["10.83.5.1/32", "10.83.5.2/32", "10.83.5.3/32"]
    ns = cluster.namespaces.add("pc-full")
    msg = _error(cluster.plugin(cluster.env("ADD", "c9", Namespaces.path(ns), ("default", "p9")), conf), 100)
    assert "node-b" in msg and "10.83.5.0/30" in msg
    assert cluster.blocks() == []


def test_api_unreachable_is_try_again_later_unless_cached_and_del_still_works(cluster):
    cluster.create_pool("pool-a", "10.84.0.0/24")
    ns1, r1 = cluster.add_pod("default", "p1", "c1")
    assert r1.returncode == 0
    cluster.kube.stop_api()                  # the kube fixture starts it again afterwards
    # The node's block was confirmed moments ago: ADD needs no API.
    ns3 = cluster.namespaces.add("cached")
    r3 = cluster.plugin(cluster.env("ADD", "c3", Namespaces.path(ns3), ("default", "p3")))
    assert r3.returncode == 0 and r3.json["ips"][0]["address"] == "10.84.0.2/32", r3.stdout + r3.stderr
    assert "asking the API" not in r3.stderr
    # Without a fresh cache it must ask the API, which is down: try again later.
    ns2 = cluster.namespaces.add("down")
    msg = _error(cluster.plugin(cluster.env("ADD", "c2", Namespaces.path(ns2), ("default", "p2")),
                                cluster.netconf(ipam_cache_ttl=0)), 11)
    assert "unreachable" in msg
    assert cluster.plugin(cluster.env("DEL", "c1", Namespaces.path(ns1), ("default", "p1"))).returncode == 0
    assert "eth0" not in sh("ip", "link", netns=ns1).stdout


def test_a_disabled_pool_gives_no_new_address_and_an_overlapping_pool_none_at_all(cluster):
    conf = cluster.netconf(ipam_cache_ttl=0)         # every ADD asks the API

    def add(name: str) -> str:
        ns = cluster.namespaces.add(name)
        run = cluster.plugin(cluster.env("ADD", f"cid-{name}", Namespaces.path(ns), ("default", name)), conf)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.json["ips"][0]["address"]

    cluster.create_pool("old", "10.78.0.0/24", block_size=28)
    assert add("first") == "10.78.0.1/32"
    k8s.CustomObjectsApi(cluster.api).patch_cluster_custom_object("calyx.dev", "v1", "ippools", "old",
                                                                  {"spec": {"disabled": True}})
    # created later and overlapping "old" (disabled pools count): refused, although its name sorts first
    cluster.create_pool("a-shadow", "10.78.0.0/25", block_size=28)
    cluster.create_pool("new", "10.79.0.0/24", block_size=28)
    assert add("second") == "10.79.0.1/32"
    assert add("third") == "10.79.0.2/32"
    assert sorted((b["spec"]["cidr"], b["spec"]["pool"]) for b in cluster.blocks()) == [
        ("10.78.0.0/28", "old"), ("10.79.0.0/28", "new")]       # the old block stays the node's
    assert "10.78.0.1 dev" in sh("ip", "route", netns=cluster.node_ns).stdout
