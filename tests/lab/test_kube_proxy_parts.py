"""The lab's kube-proxy setup (calyxlab.kubeproxy) and the Service traffic tools
(calyxlab.echoserver, calyxlab.requestloop), without a lab: which nodes run it and in which
mode, the configuration it gets, the legacy iptables links under UML, the echo server's answers
and the request loop's output, against a real server on the loopback."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pytest
import yaml

from calyxlab import echoserver, kubeproxy, requestloop
from calyxlab.topology import Node, Role


def node(env: dict[str, str]) -> Node:
    return Node("node1", "linux", "calyx/node:latest", Role.CLUSTER, env=env)


@pytest.mark.parametrize("raw, want", [("", None), ("none", None), ("nftables", "nftables"),
                                       ("iptables", "iptables")])
def test_the_env_chooses_the_proxy_mode(raw, want):
    assert kubeproxy.mode(node({kubeproxy.ENV: raw} if raw else {})) == want


def test_an_unknown_mode_is_refused_naming_node_env_and_value():
    with pytest.raises(kubeproxy.KubeProxyConfigError,
                       match=r"node node1: env CALYX_LAB_KUBE_PROXY='ipvs': choose one of nftables, iptables"):
        kubeproxy.mode(node({kubeproxy.ENV: "ipvs"}))


def test_nftables_mode_is_refused_under_uml_whose_kernel_lacks_it():
    with pytest.raises(kubeproxy.KubeProxyConfigError, match="no nf_tables for IPv4; use iptables"):
        kubeproxy.mode(node({kubeproxy.ENV: "nftables"}), kernel="uml")
    assert kubeproxy.mode(node({kubeproxy.ENV: "iptables"}), kernel="uml") == "iptables"


def test_the_configuration_names_the_node_mode_credentials_and_pod_cidrs():
    config = yaml.safe_load(kubeproxy.configuration("node2", "nftables", "/k/kubeconfig", "10.244.0.0/16"))
    assert config["kind"] == "KubeProxyConfiguration"
    assert config["mode"] == "nftables" and config["hostnameOverride"] == "node2"
    assert config["clientConnection"]["kubeconfig"] == "/k/kubeconfig"
    assert config["clusterCIDR"] == "10.244.0.0/16"
    # The nodes share one kernel: kube-proxy must not size its conntrack table.
    assert config["conntrack"]["maxPerCore"] == 0 and config["conntrack"]["min"] == 0
    assert config["iptables"]["syncPeriod"] == "5m"


def test_the_cluster_cidr_is_the_scenarios_pools_or_the_default():
    pools = [{"kind": "IPPool", "spec": {"cidr": "10.244.0.0/16"}},
             {"kind": "IPPool", "spec": {"cidr": "10.250.0.0/16"}},
             {"kind": "BGPConfiguration", "spec": {}}]
    assert kubeproxy.cluster_cidr(pools) == "10.244.0.0/16,10.250.0.0/16"
    assert kubeproxy.cluster_cidr([]) == kubeproxy.DEFAULT_CLUSTER_CIDR


def test_legacy_iptables_only_under_uml():
    assert kubeproxy.command_links("host") == {}
    links = kubeproxy.command_links("uml")
    assert links["iptables"] == "/usr/sbin/iptables-legacy"
    assert links["iptables-restore"] == "/usr/sbin/iptables-legacy-restore"
    assert links["ip6tables-save"] == "/usr/sbin/ip6tables-legacy-save"


def test_request_loop_output_parses_into_outcomes():
    text = "ok web-1 172.16.0.10\nfail URLError: timed out\nok web-2 10.0.0.11\nok web-"
    assert requestloop.parse(text) == [
        requestloop.Outcome(True, "web-1", "172.16.0.10"),
        requestloop.Outcome(False, reason="URLError: timed out"),
        requestloop.Outcome(True, "web-2", "10.0.0.11")]


def test_echo_server_answers_with_its_name_and_the_client_seen():
    server = ThreadingHTTPServer(("127.0.0.1", 0), echoserver.handler("web-7"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        line = requestloop.request(f"http://127.0.0.1:{server.server_port}/", timeout=5)
        assert line == "ok web-7 127.0.0.1"
        assert requestloop.request("http://127.0.0.1:1/", timeout=5).startswith("fail URLError")
    finally:
        server.shutdown()
        server.server_close()
