"""The pod plumbing on real namespaces: a node namespace running the code, a pod namespace."""
from __future__ import annotations

import multiprocessing
from ipaddress import IPv4Address

import pyroute2.netns
import pytest

from calyx import naming
from calyx.cni import netsetup, plugin
from calyx.cni.config import ERR_CHECK_FAILED, CniError
from cnitest_support import Namespaces, sh

pytestmark = pytest.mark.lab


@pytest.fixture
def namespaces():
    ns = Namespaces()
    try:
        yield ns
    finally:
        ns.cleanup()


def _in_netns(netns: str, fn, *args):
    """Run fn(*args) in a child process that has entered ``netns`` (as the plugin would run)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            pyroute2.netns.setns(netns)
            queue.put(("ok", fn(*args)))
        except CniError as exc:
            queue.put(("err", (exc.code, exc.msg)))
        except Exception as exc:  # noqa: BLE001 - reported to the test, not swallowed
            queue.put(("exception", repr(exc)))

    proc = ctx.Process(target=child)
    proc.start()
    result = queue.get(timeout=30)
    proc.join(timeout=30)
    return result


def _link(namespaces: Namespaces, pod_ns: str, address: str) -> netsetup.PodLink:
    return netsetup.PodLink(host_ifname=naming.cali_interface_name("default", pod_ns), pod_ifname="eth0",
                            netns=namespaces.path(pod_ns), address=IPv4Address(address), mtu=1410)


def test_setup_wires_pod_and_host_and_node_reaches_pod(namespaces):
    node, pod = namespaces.add("node"), namespaces.add("pod")
    link = _link(namespaces, pod, "10.233.7.9")
    kind, macs = _in_netns(node, netsetup.setup, link)
    assert kind == "ok", macs
    assert macs.host == "ee:ee:ee:ee:ee:ee"

    host = sh("ip", "-d", "link", "show", link.host_ifname, netns=node).stdout
    assert "ee:ee:ee:ee:ee:ee" in host and "mtu 1410" in host and "veth" in host
    routes = sh("ip", "route", "show", "10.233.7.9/32", netns=node).stdout
    assert f"10.233.7.9 dev {link.host_ifname} proto 80 scope link" in routes
    for path, value in netsetup.host_sysctls(link.host_ifname).items():
        assert sh("cat", path, netns=node).stdout.strip() == value

    assert "inet 10.233.7.9/32" in sh("ip", "addr", "show", "eth0", netns=pod).stdout
    assert "mtu 1410" in sh("ip", "link", "show", "eth0", netns=pod).stdout
    pod_routes = sh("ip", "route", netns=pod).stdout
    assert "default via 169.254.1.1 dev eth0" in pod_routes
    assert "169.254.1.1 dev eth0 scope link" in pod_routes

    # The node has no other address: give it one so the pod can answer it.
    sh("ip", "addr", "add", "10.233.250.1/32", "dev", "lo", netns=node)
    ping = sh("ping", "-c", "2", "-W", "2", "-I", "10.233.250.1", "10.233.7.9", netns=node, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    assert _in_netns(node, netsetup.check, link) == ("ok", None)


def test_check_names_what_is_missing(namespaces):
    node, pod = namespaces.add("node"), namespaces.add("pod")
    link = _link(namespaces, pod, "10.233.7.10")
    assert _in_netns(node, netsetup.setup, link)[0] == "ok"
    sh("ip", "route", "del", "default", netns=pod)
    kind, (code, msg) = _in_netns(node, netsetup.check, link)
    assert kind == "err" and code == ERR_CHECK_FAILED
    assert "default route via 169.254.1.1 missing" in msg

    sh("ip", "link", "del", link.host_ifname, netns=node)
    kind, (code, msg) = _in_netns(node, netsetup.check, link)
    assert kind == "err" and f"host interface {link.host_ifname} is missing" in msg


def test_setup_replaces_leftover_veth_and_teardown_is_idempotent(namespaces):
    node, pod1, pod2 = namespaces.add("node"), namespaces.add("pod1"), namespaces.add("pod2")
    first = _link(namespaces, pod1, "10.233.7.11")
    assert _in_netns(node, netsetup.setup, first)[0] == "ok"
    # Same pod name, new sandbox: the stale host veth is replaced.
    second = netsetup.PodLink(host_ifname=first.host_ifname, pod_ifname="eth0", netns=namespaces.path(pod2),
                              address=IPv4Address("10.233.7.12"), mtu=1500)
    assert _in_netns(node, netsetup.setup, second)[0] == "ok"
    assert "eth0" not in sh("ip", "link", netns=pod1).stdout
    assert _in_netns(node, netsetup.check, second) == ("ok", None)

    kind, index = _in_netns(node, plugin.host_link_index, second.host_ifname)
    assert kind == "ok" and isinstance(index, int)
    # An index that is not the veth's any more (the pod's next sandbox replaced it) is left alone.
    assert _in_netns(node, netsetup.teardown, index + 1000, "", "eth0") == ("ok", None)
    assert second.host_ifname in sh("ip", "link", netns=node).stdout
    assert _in_netns(node, netsetup.teardown, index, second.netns, "eth0") == ("ok", None)
    assert second.host_ifname not in sh("ip", "link", netns=node).stdout
    assert "10.233.7.12" not in sh("ip", "route", netns=node).stdout
    # Again, and with the namespace gone: nothing to do, no error.
    assert _in_netns(node, plugin.host_link_index, second.host_ifname) == ("ok", None)
    assert _in_netns(node, netsetup.teardown, index, second.netns, "eth0") == ("ok", None)
    assert _in_netns(node, netsetup.teardown, None, "/var/run/netns/does-not-exist", "eth0") == ("ok", None)


def test_setup_into_missing_netns_is_an_env_error(namespaces):
    node = namespaces.add("node")
    link = netsetup.PodLink(host_ifname="calitest0000000"[:15], pod_ifname="eth0",
                            netns="/var/run/netns/absent-ns-xyz", address=IPv4Address("10.233.7.13"), mtu=1500)
    kind, (code, msg) = _in_netns(node, netsetup.setup, link)
    assert kind == "err" and code == 7 and "absent-ns-xyz" in msg
    assert "calitest" not in sh("ip", "link", netns=node).stdout


@pytest.mark.parametrize("failure", [TimeoutError("no response from the child pid 7"),
                                     RuntimeError("child process is dead, status: 0")])
def test_a_netns_helper_that_does_not_answer_is_tried_again(monkeypatch, tmp_path, failure):
    """On a loaded node pyroute2's helper for entering the pod's namespace may not answer within
    its 2 s, by timing out or by giving up: the plugin starts another within its budget."""
    attempts = []

    class Opened:
        def close(self) -> None:
            attempts.append("closed")

    def open_once_failing(netns: str):
        attempts.append(netns)
        if len(attempts) == 1:
            raise failure
        return Opened()

    pod_ns = tmp_path / "pod-ns"
    pod_ns.touch()
    monkeypatch.setattr(netsetup, "IPRoute", open_once_failing)
    with netsetup._pod_ns(str(pod_ns)) as ipr:
        assert isinstance(ipr, Opened)
    assert attempts == [str(pod_ns), str(pod_ns), "closed"]
