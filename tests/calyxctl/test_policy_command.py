"""``calyxctl policy``: felix's /v1/policy answer rendered for an operator (pure), and a pod
given without its namespace refused."""
from __future__ import annotations

from calyxctl import cli
from calyxctl.policy import render

VIEW = {"pod": "shop/web", "ip": "10.244.1.5", "selected_by": ["shop/default-deny", "shop/web"],
        "ingress": ["from pods app=client in namespace shop, TCP 8080"],
        "egress": "not isolated: everything allowed",
        "verdict": {"direction": "Ingress", "peer": "10.244.3.7", "protocol": "TCP", "port": 9090,
                    "allowed": False}}


def test_the_view_reads_as_a_list_and_a_verdict():
    assert render(VIEW, "node2") == "\n".join([
        "pod shop/web (10.244.1.5) on node node2",
        "selected by: shop/default-deny, shop/web",
        "ingress:",
        "  - from pods app=client in namespace shop, TCP 8080",
        "egress: not isolated: everything allowed",
        "verdict: Ingress from 10.244.3.7 TCP 9090: DROPPED"])
    isolated = {**VIEW, "selected_by": [], "ingress": "not isolated: everything allowed"}
    del isolated["verdict"]
    assert render(isolated, "node2").splitlines()[1:3] == ["selected by: no policy",
                                                            "ingress: not isolated: everything allowed"]


def test_a_pod_without_namespace_is_refused(capsys):
    assert cli.main(["policy", "web"]) == 2
    assert "give the pod as NAMESPACE/NAME" in capsys.readouterr().err
