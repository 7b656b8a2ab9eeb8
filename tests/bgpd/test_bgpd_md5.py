"""TCP-MD5 (RFC 2385) BGP passwords read from Secrets, end to end: the real ``bgpd run`` in lab
nodes against the lab's kube-apiserver, with Secrets, the BGPConfiguration and BGPPeers made
through the API. The mesh keyed by ``nodeMeshPassword``; BIRD and FRR keyed by BGPPeer
``password.secretKeyRef``, routes exchanged both ways; a wrong key and a missing Secret or key
(or one bgpd may not read) shown in ``bgpd status``; rotating a Secret re-keying its sessions alone; and no password in
any log, Event, metric, status, route listing or repr.

Lab ``labs/md5``: node1, node2 (10.0.0.11-12, pod CIDRs 10.244.N.0/24, pool in Never mode) in a
full mesh, a BIRD router (10.0.0.253, AS 65001, announcing 198.51.100.0/24) and an FRR router
(10.0.0.254, AS 65002, announcing 203.0.113.0/24), both holding a password for both nodes.
bgpd reads Secrets through the chart's ServiceAccount, which may read only the Secrets a Role
names (``resourceNames``): the tests grant theirs as an operator would for BGPPeers made
outside the chart. The tests of this module run in order on one lab.
"""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import kubernetes.client
import pytest

from calyx.kube import client as kube_client
from calyx.kube import resources
from calyx.naming import DEFAULT_NAMESPACE
from calyxlab import nodeview
from bgpd_lab import (apply, bgp_peer, bgp_routes, bgpd_cli, http_get, mesh_of, module_lab, peers, routes, status,
                      wait_for, wait_sessions)

# The whole module is a fault case: its last test searches everything the earlier ones made
# bgpd and ExaBGP write, so `make faults` runs them all, in order.
pytestmark = [pytest.mark.lab, pytest.mark.fault]

NAMESPACE = DEFAULT_NAMESPACE
NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12"}
CIDRS = {"node1": "10.244.1.0/24", "node2": "10.244.2.0/24"}
BIRD, BIRD_NET, BIRD_KEY = "10.0.0.253", "198.51.100.0/24", "bird-Md5-k3y"     # as in labs/md5/bird.conf
FRR, FRR_NET, FRR_KEY = "10.0.0.254", "203.0.113.0/24", "frr-Md5-k3y"          # as in labs/md5/frr.conf
FRR_KEY_ROTATED = "frr-R0tated-k3y"
MESH_KEY, MESH_KEY_ROTATED = "mesh-Md5-s3cret", "mesh-R0tated-s3cret"
WRONG_KEY = "wr0ng-Md5-k3y"
MESH_SECRET, PEER_SECRET, ABSENT_SECRET = "bgp-mesh", "bgp-peers", "bgp-absent"
UNGRANTED_SECRET = "bgp-ungranted"
HEALTH_PORT = 9098
# Every password these tests hand bgpd: none may show anywhere (test_no_password_anywhere).
PASSWORDS = (MESH_KEY, MESH_KEY_ROTATED, BIRD_KEY, FRR_KEY, FRR_KEY_ROTATED, WRONG_KEY)


@pytest.fixture(scope="module")
def lab(request, unique_lab_name):
    with module_lab(request, unique_lab_name, "md5", kernel="host") as lab:
        yield lab


def all_sessions(node: str) -> dict[str, str]:
    return {**mesh_of(NODES, node), BIRD: "global", FRR: "global"}


def secret(name: str, **values: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def peer_with_password(name: str, address: str, asn: int, secret_name: str, key: str) -> dict:
    return bgp_peer(name, peerIP=address, asNumber=asn,
                    password={"secretKeyRef": {"name": secret_name, "key": key}})


def bgp_configuration(**spec) -> dict:
    return {"apiVersion": "calyx.dev/v1", "kind": "BGPConfiguration", "metadata": {"name": "default"},
            "spec": spec}


def grant_secrets(lab, *names: str) -> None:
    """A Role letting the chart's ServiceAccount read exactly these Secrets, by resourceNames."""
    api = kube_client.load(str(lab.kubeconfig))
    try:
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(NAMESPACE, {
            "metadata": {"name": "bgp-passwords"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": list(names),
                       "verbs": ["get", "list", "watch"]}]})
        rbac.create_namespaced_role_binding(NAMESPACE, {
            "metadata": {"name": "bgp-passwords"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bgp-passwords"},
            "subjects": [{"kind": "ServiceAccount", "name": "calyx", "namespace": NAMESPACE}]})
    finally:
        api.close()


def sinces(node: str, lab) -> dict[str, float]:
    return {a: p["since"] for a, p in peers(status(lab, node)).items()}


def exabgp_config(lab, node: str) -> str:
    return (Path(nodeview.calyx_run_dir(lab.names, node)) / "bgpd" / "exabgp.conf").read_text()


def neighbor_block(config: str, address: str) -> str:
    return config.split(f"neighbor {address} {{", 1)[1].split("\n}", 1)[0]


def frr_set_password(lab, password: str) -> None:
    lab.exec("frr", ["vtysh", "-c", "configure terminal", "-c", "router bgp 65002",
                     "-c", f"neighbor CALYX password {password}"], check=True)


def frr_established(lab) -> set[str]:
    summary = json.loads(lab.exec("frr", ["vtysh", "-c", "show bgp ipv4 unicast summary json"]).stdout or "{}")
    return {a for a, p in summary.get("peers", {}).items() if p.get("state") == "Established"}


def status_row(lab, node: str, address: str) -> dict | None:
    return peers(status(lab, node)).get(address)


def status_table(lab, node: str) -> str:
    res = bgpd_cli(lab, node, "status")
    assert res.returncode == 0, res.stderr
    return res.stdout


def table_row(table: str, address: str) -> str:
    return next((line for line in table.splitlines() if line.startswith(f"| {address} ")), "")


def signed_handshake(capture: str) -> bool:
    """A SYN and a SYN-ACK carrying the TCP-MD5 option in tcpdump's text: the peer's kernel
    answered a signed SYN, so it checked the signature with the same key."""
    lines = capture.splitlines()
    return (any("Flags [S]," in line and "md5" in line for line in lines)
            and any("Flags [S.]," in line and "md5" in line for line in lines))


def test_mesh_keyed_by_node_mesh_password_from_a_secret(lab, tmp_path):
    for node in NODES:       # up without a password first
        wait_sessions(lab, node, mesh_of(NODES, node))
    grant_secrets(lab, MESH_SECRET, PEER_SECRET, ABSENT_SECRET)
    # bgpd logs at debug from here on: the password must not show even there.
    apply(lab, bgp_configuration(logSeverityScreen="Debug"))
    wait_for("bgpd logs at debug", lambda: all("now=debug" in lab.daemon_log(n, "bgpd") for n in NODES))
    apply(lab, secret(MESH_SECRET, password=MESH_KEY))
    capture = tmp_path / "mesh-capture.txt"
    tcpdump = lab.spawn("node1", ["tcpdump", "-l", "-n", "-i", "eth1", "-c", "200",
                                  f"tcp port 179 and host {NODES['node2']}"], name="tcpdump-mesh", log=capture)
    try:
        time.sleep(1)     # tcpdump listening before the sessions are keyed
        before = time.time()
        apply(lab, bgp_configuration(nodeMeshPassword={"secretKeyRef": {"name": MESH_SECRET, "key": "password"}}))
        wait_for("the mesh handshake signed with TCP-MD5 on the wire",
                 lambda: signed_handshake(capture.read_text(errors="replace")))
    finally:
        if lab.alive(tcpdump):
            lab.kill(tcpdump)
    print("\n".join([line for line in capture.read_text(errors="replace").splitlines() if "Flags [S" in line][:4]))
    for node in NODES:
        other = next(a for n, a in NODES.items() if n != node)
        wait_for(f"{node}: ExaBGP holds the mesh key", lambda n=node, o=other: "md5-password" in
                 neighbor_block(exabgp_config(lab, n), o))
        st = wait_for(f"{node}: the mesh session re-established with its key", lambda n=node, o=other: (
            p := status_row(lab, n, o)) and p["state"] == "Established" and p["since"] > before and p)
        assert st["info"] == ""
        block = neighbor_block(exabgp_config(lab, node), other)
        assert f"md5-password {base64.b64encode(MESH_KEY.encode()).decode()};" in block
        wait_for(f"{node}: routes over the keyed mesh", lambda n=node: bgp_routes(lab, n) == {
            CIDRS[o]: f"via {NODES[o]} dev eth1" for o in NODES if o != n})


def test_bird_and_frr_keyed_by_bgppeer_passwords_from_a_secret(lab):
    mesh_before = {n: sinces(n, lab) for n in NODES}
    apply(lab, secret(PEER_SECRET, bird=BIRD_KEY, frr=FRR_KEY))
    apply(lab, peer_with_password("bird", BIRD, 65001, PEER_SECRET, "bird"),
          peer_with_password("frr", FRR, 65002, PEER_SECRET, "frr"))
    for node in NODES:
        st = wait_sessions(lab, node, all_sessions(node))
        assert all(p["info"] == "" for p in st["peers"])
        for address, since in mesh_before[node].items():       # adding peers reset no session
            assert peers(st)[address]["since"] == since, f"{node}: session to {address} was reset"
        wait_for(f"{node}: routes from BIRD and FRR", lambda n=node: (
            r := bgp_routes(lab, n)).get(BIRD_NET) == f"via {BIRD} dev eth1"
            and r.get(FRR_NET) == f"via {FRR} dev eth1")
    wait_for("BIRD learns both pod CIDRs", lambda: all(
        c in lab.exec("bird", ["birdc", "show", "route"]).stdout for c in CIDRS.values()))
    print(lab.exec("bird", ["birdc", "show", "protocols"]).stdout)
    wait_for("FRR has both nodes Established", lambda: frr_established(lab) == set(NODES.values()))
    frr_rib = lab.exec("frr", ["vtysh", "-c", "show bgp ipv4 unicast"]).stdout
    assert all(c in frr_rib for c in CIDRS.values()), frr_rib


def test_rotating_a_secret_rekeys_its_sessions_alone(lab):
    before = {n: status(lab, n) for n in NODES}
    rotated_at = time.time()
    frr_set_password(lab, FRR_KEY_ROTATED)
    apply(lab, secret(PEER_SECRET, bird=BIRD_KEY, frr=FRR_KEY_ROTATED))
    for node in NODES:
        block = wait_for(f"{node}: ExaBGP holds the new FRR key", lambda n=node: (
            b := neighbor_block(exabgp_config(lab, n), FRR)) and
            base64.b64encode(FRR_KEY_ROTATED.encode()).decode() in b and b)
        assert base64.b64encode(FRR_KEY.encode()).decode() not in block
        # Back, and FRR's routes refreshed (no longer kept stale as a graceful-restart helper).
        wait_for(f"{node}: the FRR session back, re-keyed", lambda n=node: (
            p := status_row(lab, n, FRR)) and p["state"] == "Established" and p["since"] > rotated_at
            and p["info"] == "")
        st = status(lab, node)
        for address, p in peers(before[node]).items():
            if address != FRR:
                assert peers(st)[address]["since"] == p["since"], f"{node}: session to {address} was reset"
                assert peers(st)[address]["state"] == "Established"
        assert st["exabgp_pid"] == before[node]["exabgp_pid"] and st["exabgp_restarts"] == 0
        wait_for(f"{node}: FRR's network again", lambda n=node: bgp_routes(lab, n).get(FRR_NET)
                 == f"via {FRR} dev eth1")
    wait_for("FRR has both nodes Established with the new key",
             lambda: frr_established(lab) == set(NODES.values()))


def test_rotating_the_mesh_password_keeps_the_routers_sessions(lab):
    before = {n: status(lab, n) for n in NODES}
    rotated_at = time.time()
    apply(lab, secret(MESH_SECRET, password=MESH_KEY_ROTATED))
    for node in NODES:
        other = next(a for n, a in NODES.items() if n != node)
        wait_for(f"{node}: the mesh session back with the new key", lambda n=node, o=other: (
            p := status_row(lab, n, o)) and p["state"] == "Established" and p["since"] > rotated_at
            and p["info"] == "")
        assert base64.b64encode(MESH_KEY_ROTATED.encode()).decode() in neighbor_block(exabgp_config(lab, node), other)
        st = status(lab, node)
        for address in (BIRD, FRR):
            assert peers(st)[address]["since"] == peers(before[node])[address]["since"], \
                f"{node}: session to {address} was reset"
            assert peers(st)[address]["state"] == "Established"
        assert st["exabgp_pid"] == before[node]["exabgp_pid"] and st["exabgp_restarts"] == 0


def test_a_wrong_key_shows_the_md5_hint_in_status(lab):
    node = "node1"
    others = {a: p["since"] for a, p in peers(status(lab, node)).items() if a != BIRD}
    apply(lab, secret(PEER_SECRET, bird=WRONG_KEY, frr=FRR_KEY_ROTATED))
    row = wait_for("node1: the BIRD session down with the MD5 hint", lambda: (
        p := status_row(lab, node, BIRD)) and p["state"] != "Established" and "MD5" in p["info"] and p)
    assert "TCP MD5 authentication failed" in row["info"] and "check the BGP password" in row["info"]
    line = table_row(status_table(lab, node), BIRD)
    print(line)
    assert "TCP MD5 authentication failed" in line
    for address, since in others.items():          # the others stay up, untouched
        row = status_row(lab, node, address)
        assert row["state"] == "Established" and row["since"] == since, address
    apply(lab, secret(PEER_SECRET, bird=BIRD_KEY, frr=FRR_KEY_ROTATED))
    for n in NODES:
        wait_sessions(lab, n, all_sessions(n))
    assert status_row(lab, node, BIRD)["info"] == ""


def test_a_missing_secret_or_key_is_named_in_status(lab):
    node = "node1"
    others = {a: p["since"] for a, p in peers(status(lab, node)).items() if a != BIRD}
    apply(lab, peer_with_password("bird", BIRD, 65001, PEER_SECRET, "no-such-key"))
    row = wait_for("node1: the missing key named", lambda: (
        p := status_row(lab, node, BIRD)) and "no-such-key" in p["info"] and p)
    assert row["state"] == "Idle"
    assert row["info"] == ("BGPPeer 'bird': password.secretKeyRef.key: 'no-such-key': "
                           f"key not in Secret '{PEER_SECRET}'")
    assert "key not in Secret" in table_row(status_table(lab, node), BIRD)
    assert "neighbor 10.0.0.253 " not in exabgp_config(lab, node)     # not configured without its key

    apply(lab, peer_with_password("bird", BIRD, 65001, ABSENT_SECRET, "bird"))
    row = wait_for("node1: the missing Secret named", lambda: (
        p := status_row(lab, node, BIRD)) and ABSENT_SECRET in p["info"] and p)
    assert row["state"] == "Idle"
    assert row["info"] == (f"BGPPeer 'bird': password.secretKeyRef.name: '{ABSENT_SECRET}': "
                           f"Secret not found in '{NAMESPACE}'")
    print(status_table(lab, node))

    # A Secret bgpd's ServiceAccount may not read (no Role names it): the API's refusal, named.
    apply(lab, peer_with_password("bird", BIRD, 65001, UNGRANTED_SECRET, "bird"),
          secret(UNGRANTED_SECRET, bird=BIRD_KEY))
    row = wait_for("node1: the unreadable Secret named", lambda: (
        p := status_row(lab, node, BIRD)) and UNGRANTED_SECRET in p["info"] and p)
    assert row["state"] == "Idle"
    assert row["info"].startswith(f"BGPPeer 'bird': password.secretKeyRef.name: '{UNGRANTED_SECRET}': "
                                  f"Secret in '{NAMESPACE}' cannot be read: HTTP 403 Forbidden"), row["info"]

    apply(lab, peer_with_password("bird", BIRD, 65001, PEER_SECRET, "bird"))
    for n in NODES:
        wait_sessions(lab, n, all_sessions(n))
    st = status(lab, node)
    assert peers(st)[BIRD]["info"] == ""
    for address, since in others.items():      # the BIRD peer's troubles reset no other session
        assert peers(st)[address]["since"] == since, f"session to {address} was reset"


def outputs_to_search(lab) -> dict[str, str]:
    """Every place a password could leak to, by name."""
    out: dict[str, str] = {}
    for node in NODES:
        out[f"{node} bgpd log"] = lab.daemon_log(node, "bgpd")
        out[f"{node} exabgp log"] = (Path(nodeview.calyx_run_dir(lab.names, node)) / "bgpd" / "exabgp.log"
                                     ).read_text(errors="replace")
        out[f"{node} /metrics"] = http_get(lab, node, HEALTH_PORT, "/metrics")[1]
        out[f"{node} status"] = status_table(lab, node)
        out[f"{node} status -o json"] = json.dumps(status(lab, node))
        out[f"{node} routes -o json"] = json.dumps(routes(lab, node))
        text = bgpd_cli(lab, node, "routes")
        assert text.returncode == 0, text.stderr
        out[f"{node} routes"] = text.stdout
    api = kube_client.load(str(lab.kubeconfig))
    try:
        events = resources.list_objects(api, resources.EVENTS).items
        out["events"] = json.dumps(events)
    finally:
        api.close()
    return out


def test_no_password_anywhere(lab, fault_record):
    found = outputs_to_search(lab)
    assert found["node1 bgpd log"] and found["node1 exabgp log"] is not None and found["events"] != "[]"
    forms = {pw: (pw, base64.b64encode(pw.encode()).decode()) for pw in PASSWORDS}
    with fault_record.case(f"{len(PASSWORDS)} BGP passwords set, rotated and mistyped, logging at debug",
                           "none in any log, Event, metric, status or route view") as case:
        leaks = [f"{where}: {pw!r}" for where, text in found.items() for pw, variants in forms.items()
                 if any(v in text for v in variants)]
        case.detail = f"{len(leaks)} found in {len(found)} outputs ({', '.join(sorted(found))})"
        assert leaks == [], leaks
    # The search can fail: what bgpd logged and the Events name the Secrets it read.
    assert PEER_SECRET in found["node1 bgpd log"] or PEER_SECRET in found["events"]
