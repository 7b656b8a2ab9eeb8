"""What a platform team checks before accepting the chart: the DaemonSet's placement, privileges,
probes and mounts, and RBAC that grants exactly what the daemons use."""
from __future__ import annotations

from typing import Any

from chart_support import NAMESPACE, Helm, Rendered

DAEMONS = ("felix", "bgpd")
# Capabilities per container, and why (docs/install.md, "Privileges"). felix opens netlink
# sockets only (no raw IP or packet socket: no NET_RAW); natOutgoing is not programmed.
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


READ = {"get", "list", "watch"}


def test_cluster_role_is_exactly_what_the_daemons_use(rendered_scenarios: dict[str, Rendered]) -> None:
    grants = _grants(rendered_scenarios["defaults"], "ClusterRole")
    assert grants == {
        ("", "pods"): READ,
        ("", "nodes"): READ,
        ("calyx.dev", "ippools"): READ,
        ("calyx.dev", "bgpconfigurations"): READ,
        ("calyx.dev", "bgppeers"): READ,
        ("calyx.dev", "ipamblocks"): READ | {"create", "delete"},
        ("", "events"): {"create", "patch"},
    }


def test_secret_access_is_namespaced(rendered_scenarios: dict[str, Rendered]) -> None:
    for rendered in rendered_scenarios.values():
        assert not any(r for r in _rules(rendered, "ClusterRole") if "secrets" in r["resources"])
        role = rendered.one("Role", "calyx-secrets")
        assert role["metadata"]["namespace"] == NAMESPACE
        assert _grants(rendered, "Role") == {("", "secrets"): READ}
        binding = rendered.one("RoleBinding", "calyx-secrets")
        assert binding["metadata"]["namespace"] == NAMESPACE
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "calyx-secrets"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "calyx", "namespace": NAMESPACE}]
        assert rendered.one("ServiceAccount", "calyx")["metadata"]["namespace"] == NAMESPACE
