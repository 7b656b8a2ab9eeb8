"""RBAC as the real authorizer applies it, after a real ``helm install``: each identity the chart
makes may do what its code does, and nothing else.

* ServiceAccount ``calyx``: felix and bgpd (the DaemonSet's pod). What they must do is derived
  from the code: the resources their datastores watch (``felix.daemon.watch_specs``,
  ``bgpd.daemon.watch_specs``), the Events they record, and felix's IPAM garbage collection.
* ServiceAccount ``calyx-cni-plugin``: the CNI plugin's IPAM (``calyx.cni.blocks``), through the
  kubeconfig install-cni writes from the token Secret mounted where the pod's own token would be.

``kubectl auth can-i --as=system:serviceaccount:...`` answers for every row of a table; then the
daemons' own code runs with each account's token against the API server, and must work.
"""
from __future__ import annotations

import argparse
import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from bgpd import daemon as bgpd_daemon
from calyx import model
from calyx.cni import blocks as cni_blocks
from calyx.cni import gc as cni_gc
from calyx.cni import install as cni_install
from calyx.cni import token as cni_token
from calyx.kube import client as kube_client
from calyx.kube import events as kube_events
from calyx.kube.datastore import Datastore
from calyx.kube.reflector import WatchSpec
from chart_support import NAMESPACE, ChartCluster, Kubectl, wait_for
from felix import daemon as felix_daemon

NODE_AGENT = "calyx"                  # felix and bgpd
CNI_PLUGIN = "calyx-cni-plugin"
NODE = "node-a"
TOKEN_SECRET = "calyx-cni-plugin-token"


@dataclass(frozen=True)
class Access:
    verb: str
    resource: str                      # plural[.group], as kubectl auth can-i takes it
    namespace: str | None = None       # None: cluster-wide (cluster-scoped, or every namespace)
    subresource: str | None = None
    name: str | None = None

    def args(self) -> list[str]:
        target = f"{self.resource}/{self.name}" if self.name else self.resource
        args = [self.verb, target, *(["-n", self.namespace] if self.namespace else ["-A"])]
        return args + ([f"--subresource={self.subresource}"] if self.subresource else [])

    def __str__(self) -> str:
        where = f"-n {self.namespace}" if self.namespace else "-A"
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"{self.verb} {self.resource}{sub}{'/' + self.name if self.name else ''} {where}"


def datastore_reads(specs: list[WatchSpec]) -> list[Access]:
    """What a Datastore watching ``specs`` asks of the API: list, then watch, each resource in the
    spec's namespace (none: every namespace)."""
    return [Access(verb, str(s.resource), s.namespace if s.resource.namespaced else None)
            for s in specs for verb in ("list", "watch")]


# --- what each identity's code does --------------------------------------------------------------
NODE_AGENT_USES = sorted(set(
    datastore_reads(felix_daemon.watch_specs(NODE))
    + datastore_reads(bgpd_daemon.watch_specs(NAMESPACE))
    + [  # EventRecorder: create, then patch the count of a repeat; any object's namespace
        Access("create", "events"), Access("patch", "events"),
        # felix's IPAM garbage collector (calyx.cni.gc through calyx.cni.blocks.Api)
        Access("list", "nodes"), Access("list", "ipamblocks.calyx.dev"), Access("list", "pods"),
        Access("delete", "ipamblocks.calyx.dev"),
    ]), key=str)
CNI_PLUGIN_USES = [  # calyx.cni.blocks.BlockClaimer
    Access("get", "nodes", name=NODE),
    Access("list", "ippools.calyx.dev"),
    Access("list", "ipamblocks.calyx.dev"),
    Access("create", "ipamblocks.calyx.dev"),
    Access("get", "ipamblocks.calyx.dev", name="10-244-0-0-26"),
]

# --- what no identity's code does: refused ------------------------------------------------------
NODE_AGENT_REFUSED = [
    Access("get", "pods"), Access("create", "pods", "default"), Access("delete", "pods", "default"),
    Access("create", "pods", NAMESPACE, subresource="exec"),
    Access("get", "nodes", name=NODE), Access("patch", "nodes"), Access("update", "nodes"),
    Access("delete", "nodes"),
    Access("create", "ipamblocks.calyx.dev"),       # claiming blocks is the CNI plugin's
    Access("get", "ipamblocks.calyx.dev"), Access("patch", "ipamblocks.calyx.dev"),
    Access("update", "ipamblocks.calyx.dev"),
    Access("get", "ippools.calyx.dev"), Access("create", "ippools.calyx.dev"),
    Access("patch", "ippools.calyx.dev"), Access("delete", "ippools.calyx.dev"),
    Access("create", "bgppeers.calyx.dev"), Access("patch", "bgpconfigurations.calyx.dev"),
    Access("get", "secrets", NAMESPACE, name="bgp-passwords"),      # the datastore lists and watches
    Access("create", "secrets", NAMESPACE), Access("update", "secrets", NAMESPACE),
    Access("list", "secrets"), Access("list", "secrets", "default"), Access("watch", "secrets", "kube-system"),
    Access("list", "events"), Access("delete", "events", "default"),
    Access("create", "serviceaccounts", NAMESPACE, subresource="token", name=CNI_PLUGIN),
    Access("list", "configmaps", NAMESPACE), Access("list", "customresourcedefinitions.apiextensions.k8s.io"),
]
CNI_PLUGIN_REFUSED = [
    Access("list", "nodes"), Access("watch", "nodes"), Access("patch", "nodes"),
    Access("get", "ippools.calyx.dev", name="default-ipv4-ippool"), Access("watch", "ippools.calyx.dev"),
    Access("create", "ippools.calyx.dev"),
    Access("watch", "ipamblocks.calyx.dev"), Access("delete", "ipamblocks.calyx.dev"),
    Access("patch", "ipamblocks.calyx.dev"), Access("update", "ipamblocks.calyx.dev"),
    Access("list", "pods"), Access("get", "pods", "default"),
    Access("list", "bgppeers.calyx.dev"), Access("list", "bgpconfigurations.calyx.dev"),
    Access("list", "secrets", NAMESPACE), Access("get", "secrets", NAMESPACE, name=TOKEN_SECRET),
    Access("create", "events", "default"),
]

TABLE = ([(NODE_AGENT, a, True) for a in NODE_AGENT_USES] + [(NODE_AGENT, a, False) for a in NODE_AGENT_REFUSED]
         + [(CNI_PLUGIN, a, True) for a in CNI_PLUGIN_USES] + [(CNI_PLUGIN, a, False) for a in CNI_PLUGIN_REFUSED]
         # The release namespace's default account (no pod of the chart uses it) gets nothing.
         + [("default", a, False) for a in (Access("list", "pods"), Access("list", "secrets", NAMESPACE),
                                             Access("create", "ipamblocks.calyx.dev"))])


@pytest.fixture(scope="module")
def installed(chart_cluster: ChartCluster) -> ChartCluster:
    chart_cluster.release.use()
    chart_cluster.register_node(NODE)
    return chart_cluster


def test_no_row_is_both_used_and_refused() -> None:
    uses, refused = set(map(str, NODE_AGENT_USES)), set(map(str, NODE_AGENT_REFUSED))
    assert not uses & refused and not set(map(str, CNI_PLUGIN_USES)) & set(map(str, CNI_PLUGIN_REFUSED))
    # What the datastores watch came from the code: pods of every namespace, Secrets of one.
    assert {"watch pods -A", "watch secrets -n calyx-system", "watch bgppeers.calyx.dev -A"} <= uses


@pytest.mark.parametrize("account,access,allowed", TABLE,
                         ids=[f"{acc}: {a}: {'yes' if ok else 'no'}" for acc, a, ok in TABLE])
def test_can_i(installed: ChartCluster, account: str, access: Access, allowed: bool) -> None:
    proc = installed.kubectl("auth", "can-i", f"--as=system:serviceaccount:{NAMESPACE}:{account}",
                             *access.args(), check=False)
    # A warning would mean kubectl did not know the resource (and "no" would prove nothing).
    assert proc.stderr == "", proc.stderr
    assert (proc.stdout, proc.returncode) == (("yes\n", 0) if allowed else ("no\n", 1)), \
        f"{account} {access}: {proc.stdout.strip()}"


# --- the code, with each account's token ---------------------------------------------------------

@pytest.fixture(scope="module")
def node_agent_kubeconfig(installed: ChartCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What felix and bgpd authenticate with: a token of their account from the TokenRequest API."""
    token = installed.service_account_token(NODE_AGENT)
    return installed.token_kubeconfig(token, tmp_path_factory.mktemp("node-agent") / "kubeconfig")


@pytest.fixture
def sa_dir(installed: ChartCluster, tmp_path: Path) -> Path:
    """The CNI plugin's token Secret as the kubelet projects it into install-cni and felix."""
    data = installed.cni_plugin_token(TOKEN_SECRET)["data"]
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    for key in ("token", "ca.crt"):
        (directory / key).write_bytes(base64.b64decode(data[key]))
    return directory


@pytest.fixture
def cni_kubeconfig(installed: ChartCluster, sa_dir: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """``calyx-cni install`` run as in the install-cni container: in a pod (KUBERNETES_SERVICE_*),
    reading the token at the service-account path, where the chart mounts the CNI plugin's."""
    monkeypatch.setattr(cni_install, "SERVICE_ACCOUNT_DIR", str(sa_dir))
    parser = argparse.ArgumentParser()
    cni_install.add_arguments(parser)
    conf_dir, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    args = parser.parse_args(["--conf-dir", str(conf_dir), "--bin-dir", str(bin_dir)])
    environ = {"NODENAME": NODE, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
               "KUBERNETES_SERVICE_PORT": str(installed.control_plane.ports.api)}
    assert cni_install.run(args, environ) == 0
    return conf_dir / cni_install.KUBECONFIG_NAME


def test_felix_and_bgpd_datastores_sync_as_their_account(installed: ChartCluster, node_agent_kubeconfig: Path) -> None:
    installed.kubectl.apply([{"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "bgp-passwords", "namespace": NAMESPACE},
                              "stringData": {"tor-a": "alpha"}}])
    try:
        for daemon, specs in (("felix", felix_daemon.watch_specs(NODE)), ("bgpd", bgpd_daemon.watch_specs(NAMESPACE))):
            api = kube_client.load(str(node_agent_kubeconfig))
            datastore = Datastore(api, specs, namespace=NAMESPACE)
            datastore.start()
            try:
                # A refused list never syncs: the reflector retries and the daemon stays unready.
                assert datastore.wait_synced(90), f"{daemon}: {datastore.readiness().detail}"
                snapshot = datastore.snapshot()
            finally:
                datastore.stop()
                api.close()
            assert NODE in snapshot.nodes and "default-ipv4-ippool" in snapshot.ippools, daemon
            if daemon == "bgpd":
                assert snapshot.bgp_configuration.as_number == 64512
                assert snapshot.secrets[(NAMESPACE, "bgp-passwords")] == {"tor-a": "alpha"}
    finally:
        installed.kubectl("delete", "secret", "bgp-passwords", "-n", NAMESPACE)


def test_felix_and_bgpd_record_events_as_their_account(installed: ChartCluster, node_agent_kubeconfig: Path) -> None:
    api = kube_client.load(str(node_agent_kubeconfig))
    recorder = kube_events.EventRecorder(api, component="bgpd", host=NODE)
    pool = installed.kubectl.get("ippool.calyx.dev", "default-ipv4-ippool")
    pod = kube_events.ObjectRef(kind="Pod", name="web", namespace="kube-public", api_version="v1")
    try:
        for _ in range(2):      # the second is a patch of the first one's count
            recorder.warning(pool, "InvalidResource", "IPPool default-ipv4-ippool: a test")
            recorder.warning(pod, "InvalidResource", "Pod kube-public/web: a test")
            assert recorder.flush(30)
    finally:
        recorder.close()
        api.close()
    for namespace, name in (("default", "default-ipv4-ippool"), ("kube-public", "web")):
        events = installed.kubectl("get", "events", "-n", namespace, "-o", "json",
                                   f"--field-selector=involvedObject.name={name},reason=InvalidResource")
        [event] = json.loads(events.stdout)["items"]
        assert event["count"] == 2 and event["source"] == {"component": "bgpd", "host": NODE}


def test_felix_releases_the_blocks_of_deleted_nodes_and_the_cni_plugin_cannot(
        installed: ChartCluster, node_agent_kubeconfig: Path, cni_kubeconfig: Path) -> None:
    orphan = {"apiVersion": "calyx.dev/v1", "kind": "IPAMBlock", "metadata": {"name": "10-244-255-0-26"},
              "spec": {"cidr": "10.244.255.0/26", "affinity": "host:gone-node", "pool": "default-ipv4-ippool"}}
    installed.kubectl.apply([orphan])
    cni_api = kube_client.load(str(cni_kubeconfig))
    with pytest.raises(ApiException) as refused:
        cni_gc.GarbageCollector(cni_blocks.Api(cni_api), node_grace=0).pass_once()
    cni_api.close()
    assert refused.value.status == 403
    api = kube_client.load(str(node_agent_kubeconfig))
    try:
        released = cni_gc.GarbageCollector(cni_blocks.Api(api), node_grace=0).pass_once()
    finally:
        api.close()
    assert released == ["10-244-255-0-26"]
    assert not installed.kubectl.exists("ipamblock.calyx.dev", "10-244-255-0-26")


def test_cni_plugin_claims_blocks_with_the_kubeconfig_install_cni_writes(
        installed: ChartCluster, cni_kubeconfig: Path, sa_dir: Path) -> None:
    whoami = Kubectl(installed.kubectl.binary, cni_kubeconfig)("auth", "whoami", "-o",
                                                               "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == f"system:serviceaccount:{NAMESPACE}:{CNI_PLUGIN}"
    api = kube_client.load(str(cni_kubeconfig))
    try:
        claimer = cni_blocks.BlockClaimer(cni_blocks.Api(api), NODE)
        claimed = claimer.claim_more()
        assert claimer.current() == (claimed,)
    finally:
        api.close()
    block = installed.kubectl.get("ipamblock.calyx.dev", model.block_name(claimed))
    assert block["spec"]["affinity"] == f"host:{NODE}" and block["spec"]["pool"] == "default-ipv4-ippool"
    # felix keeps that kubeconfig in step with the same token: nothing to rewrite, and never
    # its own account's token.
    assert cni_token.KubeconfigRefresher(str(cni_kubeconfig), service_account_dir=str(sa_dir)).refresh_once() is False


def test_the_daemonset_pod_gives_each_container_its_credentials(installed: ChartCluster) -> None:
    """As admitted by the API server (ServiceAccount admission adds the pod's own token to every
    container that has nothing mounted at the service-account path)."""
    [pod] = wait_for("the DaemonSet's pod", lambda: installed.kubectl.get("pods", namespace=NAMESPACE)["items"], 90.0)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == NODE_AGENT
    volumes = {v["name"]: v for v in spec["volumes"]}
    own_token = next(name for name, v in volumes.items() if name.startswith("kube-api-access-"))
    assert volumes["cni-plugin-token"]["secret"]["secretName"] == TOKEN_SECRET
    containers = {c["name"]: c for c in spec["initContainers"] + spec["containers"]}
    mounts = {name: {m["mountPath"]: m["name"] for m in c["volumeMounts"]} for name, c in containers.items()}
    sa_path = cni_install.SERVICE_ACCOUNT_DIR
    assert mounts["install-cni"][sa_path] == "cni-plugin-token"
    assert own_token not in mounts["install-cni"].values()
    felix_env = {e["name"]: e.get("value") for e in containers["felix"]["env"]}
    assert mounts["felix"][sa_path] == own_token
    assert mounts["felix"][felix_env["CALYX_CNI_TOKEN_DIR"]] == "cni-plugin-token"
    assert mounts["bgpd"][sa_path] == own_token
    assert "cni-plugin-token" not in mounts["bgpd"].values()
