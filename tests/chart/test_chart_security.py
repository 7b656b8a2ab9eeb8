"""What a platform team checks before accepting the chart: the DaemonSet's placement, privileges,
probes and mounts, and RBAC that grants each identity exactly what its code uses (the real
authorizer's answers are in test_chart_rbac.py)."""
from __future__ import annotations

from typing import Any

from chart_support import NAMESPACE, Helm, Rendered

DAEMONS = ("felix", "bgpd")
# Capabilities per container, and why (docs/install.md, "Privileges"). felix opens netlink
# sockets only, nfnetlink for natOutgoing included (no raw IP or packet socket: no NET_RAW).
EXPECTED_CAPABILITIES = {
    "install-cni": set(),
    "felix": {"NET_ADMIN"},
    "bgpd": {"NET_ADMIN", "NET_BIND_SERVICE"},
}
ALLOWED_HOST_PATHS = {"/var/run/calyx", "/opt/cni/bin", "/etc/cni/net.d"}


def _pod(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("DaemonSet")["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}


def test_daemonset_runs_on_every_node(rendered_scenarios: dict[str, Rendered]) -> None:
    for rendered in rendered_scenarios.values():
        ds = rendered.one("DaemonSet", "calyx")
        assert ds["metadata"]["namespace"] == NAMESPACE
        assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
        pod = ds["spec"]["template"]["spec"]
        assert pod["tolerations"] == [{"operator": "Exists"}]
        assert pod["priorityClassName"] == "system-node-critical"
        assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "Default"
        assert [c["name"] for c in pod["containers"]] == list(DAEMONS)
        assert [c["name"] for c in pod["initContainers"]] == ["install-cni"]


def test_containers_are_not_privileged_and_hold_only_needed_capabilities(rendered_scenarios: dict[str, Rendered]) -> None:
    for rendered in rendered_scenarios.values():
        pod = _pod(rendered)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "hostPID" not in pod and "hostIPC" not in pod
        for name, container in _containers(pod).items():
            sc = container["securityContext"]
            assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert set(sc["capabilities"].get("add", [])) == EXPECTED_CAPABILITIES[name], name


def test_probes_resources_and_environment(rendered_scenarios: dict[str, Rendered]) -> None:
    ports = {"felix": 9099, "bgpd": 9098}
    for rendered in rendered_scenarios.values():
        containers = _containers(_pod(rendered))
        for name in DAEMONS:
            c = containers[name]
            assert c["livenessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/livez", "port": ports[name]}
            # a slow start (a loaded node, a large table to adopt) is not a liveness failure
            assert c["startupProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/livez", "port": ports[name]}
            assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
            assert c["readinessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/readyz", "port": ports[name]}
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"], f"{name}: no memory limit"
            assert "cpu" not in c["resources"]["limits"], f"{name}: a CPU limit throttles the dataplane"
            env = {e["name"]: e for e in c["env"]}
            assert env["NODENAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
            assert env["CALYX_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
            assert env["CALYX_LOG_LEVEL"]["value"] == "info"
            assert env["CALYX_HEALTH_PORT"]["value"] == str(ports[name])
            assert env["CALYX_HEALTH_HOST"]["value"] == "127.0.0.1"
            declared = {p["containerPort"] for p in c["ports"]}
            assert ports[name] in declared
        assert {"name": "bgp", "containerPort": 179, "protocol": "TCP"} in containers["bgpd"]["ports"]


def test_health_ports_are_distinct_and_configurable(helm: Helm) -> None:
    rendered = helm.template(sets=["felix.healthPort=19099", "bgpd.healthPort=19098",
                                   "metricsOnAllInterfaces=true", "logLevel=debug"])
    containers = _containers(_pod(rendered))
    for name, port in (("felix", 19099), ("bgpd", 19098)):
        env = {e["name"]: e.get("value") for e in containers[name]["env"]}
        assert env["CALYX_HEALTH_PORT"] == str(port) and env["CALYX_HEALTH_HOST"] == "0.0.0.0"
        assert env["CALYX_LOG_LEVEL"] == "debug"
        assert containers[name]["readinessProbe"]["httpGet"]["port"] == port
    error = helm.template_error(sets=["felix.healthPort=9098"])
    assert "felix.healthPort and bgpd.healthPort" in error and "9098" in error


def test_host_mounts_are_only_what_is_needed(rendered_scenarios: dict[str, Rendered]) -> None:
    for rendered in rendered_scenarios.values():
        pod = _pod(rendered)
        host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
        assert host_paths == ALLOWED_HOST_PATHS
        containers = _containers(pod)
        cni_mounts = {m["mountPath"] for m in containers["install-cni"]["volumeMounts"]}
        assert cni_mounts >= {"/host/opt/cni/bin", "/host/etc/cni/net.d"}
        for name in DAEMONS:
            mounts = {m["name"] for m in containers[name]["volumeMounts"]}
            assert "cni-bin-dir" not in mounts, name
        # felix rewrites the CNI kubeconfig's token; bgpd has no business there.
        assert "cni-net-dir" in {m["name"] for m in containers["felix"]["volumeMounts"]}
        assert "cni-net-dir" not in {m["name"] for m in containers["bgpd"]["volumeMounts"]}
        # Besides the host paths: scratch space, and the CNI plugin's token.
        others = {v["name"]: v for v in pod["volumes"] if "hostPath" not in v}
        assert set(others) == {"tmp", "cni-plugin-token"}
        assert others["tmp"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}


def test_only_install_cni_and_felix_see_the_cni_plugins_token(rendered_scenarios: dict[str, Rendered]) -> None:
    for rendered in rendered_scenarios.values():
        pod = _pod(rendered)
        volume = next(v for v in pod["volumes"] if v["name"] == "cni-plugin-token")
        assert volume["secret"] == {"secretName": "calyx-cni-plugin-token", "defaultMode": 0o400,
                                    "items": [{"key": "token", "path": "token"}, {"key": "ca.crt", "path": "ca.crt"}]}
        mounted = {name: [m for m in c["volumeMounts"] if m["name"] == "cni-plugin-token"]
                   for name, c in _containers(pod).items()}
        assert {name for name, found in mounted.items() if found} == {"install-cni", "felix"}
        assert all(m.get("readOnly") is True for found in mounted.values() for m in found)
        # The pod itself runs as felix and bgpd's account, never as the CNI plugin's.
        assert pod["serviceAccountName"] == "calyx"


def _rules(rendered: Rendered, kind: str) -> list[dict[str, Any]]:
    return [rule for role in rendered.of_kind(kind) for rule in role["rules"]]


def _grants(rendered: Rendered, kind: str) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in _rules(rendered, kind):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_rbac_has_no_wildcards(rendered_scenarios: dict[str, Rendered]) -> None:
    for rendered in rendered_scenarios.values():
        for kind in ("ClusterRole", "Role"):
            for rule in _rules(rendered, kind):
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[key], f"{kind} rule {rule}: wildcard in {key}"
                assert "nonResourceURLs" not in rule


WATCH = {"list", "watch"}


def _bound(rendered: Rendered, binding_kind: str, role_kind: str) -> dict[str, dict[tuple[str, str], set[str]]]:
    """ServiceAccount name -> what the roles of ``role_kind`` bound to it grant."""
    roles = {r["metadata"]["name"]: r for r in rendered.of_kind(role_kind)}
    grants: dict[str, dict[tuple[str, str], set[str]]] = {}
    for binding in rendered.of_kind(binding_kind):
        assert binding["roleRef"]["kind"] == role_kind, binding["metadata"]["name"]
        role = Rendered((roles[binding["roleRef"]["name"]],))
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE, subject
            for key, verbs in _grants(role, role_kind).items():
                grants.setdefault(subject["name"], {}).setdefault(key, set()).update(verbs)
    return grants


def test_cluster_roles_are_exactly_what_each_identity_uses(rendered_scenarios: dict[str, Rendered]) -> None:
    for rendered in rendered_scenarios.values():
        assert _bound(rendered, "ClusterRoleBinding", "ClusterRole") == {
            # felix and bgpd: their datastores list and watch; felix's garbage collector deletes
            # the blocks of deleted nodes; felix publishes its node's VXLAN tunnel endpoint
            # (patch); both record Events; bgpd reads Services and EndpointSlices to advertise
            # Service addresses; felix reads NetworkPolicies and the Namespaces' labels.
            "calyx": {
                ("", "pods"): WATCH,
                ("", "namespaces"): WATCH,
                ("networking.k8s.io", "networkpolicies"): WATCH,
                ("", "nodes"): WATCH | {"patch"},
                ("calyx.dev", "ippools"): WATCH,
                ("calyx.dev", "bgpconfigurations"): WATCH,
                ("calyx.dev", "bgppeers"): WATCH,
                ("calyx.dev", "ipamblocks"): WATCH | {"delete"},
                ("", "services"): WATCH,
                ("discovery.k8s.io", "endpointslices"): WATCH,
                ("", "events"): {"create", "patch"},
            },
            # The CNI plugin's IPAM: its node, the pools and what they must not overlap (the
            # nodes' networks, serviceClusterIPs), and claiming blocks.
            "calyx-cni-plugin": {
                ("", "nodes"): {"get", "list"},
                ("calyx.dev", "ippools"): {"list"},
                ("calyx.dev", "bgpconfigurations"): {"list"},
                ("calyx.dev", "ipamblocks"): {"get", "list", "create"},
            },
        }


# The Secrets each example's values name for BGP passwords (bgp.nodeMeshPassword,
# bgp.externalPeers[].password), de-duplicated: what felix and bgpd may read, by name.
PASSWORD_SECRETS = {"defaults": [], "bgp-only": [], "route-reflectors": [], "external-peers": ["bgp-passwords"]}
NAMED_READ = {"get", "list", "watch"}


def _secret_rules(rendered: Rendered) -> list[dict[str, Any]]:
    return [r for kind in ("ClusterRole", "Role") for r in _rules(rendered, kind) if "secrets" in r["resources"]]


def test_secrets_are_granted_by_name_only(rendered_scenarios: dict[str, Rendered]) -> None:
    assert set(PASSWORD_SECRETS) == set(rendered_scenarios)
    for scenario, rendered in rendered_scenarios.items():
        names = PASSWORD_SECRETS[scenario]
        assert not any(r for r in _rules(rendered, "ClusterRole") if "secrets" in r["resources"]), scenario
        if not names:
            # Nothing refers to a Secret: bgpd watches none, and no Role grants one.
            assert rendered.of_kind("Role") == [] and rendered.of_kind("RoleBinding") == [], scenario
            continue
        role = rendered.one("Role", "calyx-secrets")
        assert role["metadata"]["namespace"] == NAMESPACE
        # bgpd lists and watches each Secret with the field selector metadata.name=NAME, which
        # the authorizer checks against resourceNames; get is granted as Calico does.
        assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": names,
                                  "verbs": ["get", "list", "watch"]}], scenario
        binding = rendered.one("RoleBinding", "calyx-secrets")
        assert binding["metadata"]["namespace"] == NAMESPACE
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "calyx-secrets"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "calyx", "namespace": NAMESPACE}]
        assert _bound(rendered, "RoleBinding", "Role") == {"calyx": {("", "secrets"): NAMED_READ}}
        assert all(r.get("resourceNames") for r in _secret_rules(rendered)), scenario


def test_the_secret_grant_follows_the_values_de_duplicated(helm: Helm) -> None:
    peer = "bgp.externalPeers[{i}].{field}"
    sets = ["bgp.nodeMeshPassword.secretKeyRef.name=mesh", "bgp.nodeMeshPassword.secretKeyRef.key=pw"]
    for i, (name, secret) in enumerate((("tor-a", "racks"), ("tor-b", "racks"), ("edge", "edge-pw"), ("open", ""))):
        sets += [peer.format(i=i, field="name") + f"={name}", peer.format(i=i, field="peerIP") + f"=10.0.{i}.1",
                 peer.format(i=i, field="asNumber") + "=65001"]
        if secret:
            sets += [peer.format(i=i, field="password.secretKeyRef.name") + f"={secret}",
                     peer.format(i=i, field="password.secretKeyRef.key") + f"={name}"]
    [rule] = helm.template(sets=sets).one("Role", "calyx-secrets")["rules"]
    assert rule["resourceNames"] == ["edge-pw", "mesh", "racks"]
    # The mesh password alone; and not when the chart does not render the BGPConfiguration.
    [rule] = helm.template(sets=sets[:2]).one("Role", "calyx-secrets")["rules"]
    assert rule["resourceNames"] == ["mesh"]
    assert helm.template(sets=[*sets[:2], "bgp.createConfiguration=false"]).of_kind("Role") == []


def test_each_identity_has_its_own_service_account(rendered_scenarios: dict[str, Rendered]) -> None:
    for rendered in rendered_scenarios.values():
        accounts = {a["metadata"]["name"]: a for a in rendered.of_kind("ServiceAccount")}
        assert set(accounts) == {"calyx", "calyx-cni-plugin"}
        assert all(a["metadata"]["namespace"] == NAMESPACE for a in accounts.values())
        # No pod runs as the CNI plugin: its token comes from its Secret only.
        assert accounts["calyx-cni-plugin"]["automountServiceAccountToken"] is False
        [secret] = rendered.of_kind("Secret")
        assert secret["type"] == "kubernetes.io/service-account-token" and "data" not in secret
        assert secret["metadata"]["name"] == "calyx-cni-plugin-token"
        assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "calyx-cni-plugin"


def test_service_account_annotations_go_on_both_accounts(helm: Helm) -> None:
    rendered = helm.template(sets=["serviceAccount.annotations.example\\.com/owner=network-team"])
    for account in rendered.of_kind("ServiceAccount"):
        assert account["metadata"]["annotations"] == {"example.com/owner": "network-team"}


def test_packet_probe_adds_exactly_its_privileges_to_felix(helm: Helm) -> None:
    """felix.packetProbe (calyxctl trace --probe) gives felix NET_RAW and SYS_ADMIN and the node's
    /run/netns read-only, tells felix through FELIX_PACKETPROBE, and changes nothing else."""
    off = _pod(helm.template())
    on = _pod(helm.template(sets=["felix.packetProbe=true"]))
    felix_off, felix_on = _containers(off)["felix"], _containers(on)["felix"]
    assert {e["name"]: e.get("value") for e in felix_off["env"]}["FELIX_PACKETPROBE"] == "false"
    assert {e["name"]: e.get("value") for e in felix_on["env"]}["FELIX_PACKETPROBE"] == "true"
    assert set(felix_on["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}
    assert felix_on["securityContext"]["privileged"] is False
    added = [m for m in felix_on["volumeMounts"] if m not in felix_off["volumeMounts"]]
    assert added == [{"name": "host-netns", "mountPath": "/run/netns", "mountPropagation": "HostToContainer",
                      "readOnly": True}]
    volume = next(v for v in on["volumes"] if v["name"] == "host-netns")
    assert volume["hostPath"] == {"path": "/run/netns", "type": "DirectoryOrCreate"}
    for name in ("install-cni", "bgpd"):
        assert _containers(on)[name] == _containers(off)[name], name
