"""RBAC as the real authorizer applies it, after a real ``helm install``: each identity the chart
makes may do what its code does, and nothing else.

* ServiceAccount ``calyx``: felix and bgpd (the DaemonSet's pod). What they must do is derived
  from the code: the resources their datastores watch (``felix.daemon.watch_specs``,
  ``bgpd.daemon.watch_specs``), the Secrets bgpd watches by name (those the release's BGP
  configuration names, ``bgpd.peers.referenced_secrets``), the Events they record, and felix's
  IPAM garbage collection. No other Secret is readable, and none without a name.
* ServiceAccount ``calyx-cni-plugin``: the CNI plugin's IPAM (``calyx.cni.blocks``), through the
  kubeconfig install-cni writes from the token Secret mounted where the pod's own token would be.

``kubectl auth can-i --as=system:serviceaccount:...`` answers for every row of a table; then the
daemons' own code runs with each account's token against the API server, and must work; bgpd
reports a Secret a BGPPeer from outside the chart names until it is granted as docs/install.md
shows.
"""
from __future__ import annotations

import argparse
import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from bgpd import daemon as bgpd_daemon
from calyx import model
from calyx.cni import blocks as cni_blocks
from calyx.cni import gc as cni_gc
from calyx.cni import install as cni_install
from calyx.cni import token as cni_token
from calyx.kube import client as kube_client
from calyx.kube import events as kube_events
from calyx.kube import resources
from calyx.kube.datastore import UNREADABLE_REASON, Datastore, NamedState
from calyx.kube.reflector import Backoff, WatchSpec
from chart_support import NAMESPACE, REPO, SCENARIOS, ChartCluster, Kubectl, wait_for
from felix import daemon as felix_daemon

NODE_AGENT = "calyx"                  # felix and bgpd
CNI_PLUGIN = "calyx-cni-plugin"
NODE = "node-a"
TOKEN_SECRET = "calyx-cni-plugin-token"
# The release: external peers whose passwords are in bgp-passwords, and a mesh password in
# bgp-mesh. The chart grants felix and bgpd's account exactly these two Secrets, by name.
RELEASE_VALUES = SCENARIOS["external-peers"]
RELEASE_SETS = ("bgp.nodeMeshPassword.secretKeyRef.name=bgp-mesh", "bgp.nodeMeshPassword.secretKeyRef.key=pw")
PASSWORD_SECRETS = ("bgp-mesh", "bgp-passwords")
# A BGPPeer made outside the chart names another Secret: docs/install.md's Role grants it.
OUTSIDE_PEER, OUTSIDE_SECRET = "tor-outside", "other-bgp-password"


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
    spec's namespace (none: every namespace), of one object when the spec names it."""
    return [Access(verb, str(s.resource), s.namespace if s.resource.namespaced else None, name=s.name)
            for s in specs for verb in ("list", "watch")]


def named_secret_reads(names: tuple[str, ...]) -> list[Access]:
    """What bgpd's datastore asks to follow the Secrets ``names`` (``Datastore.set_named``)."""
    return datastore_reads([WatchSpec.named(resources.SECRETS, name, NAMESPACE) for name in names])


# --- what each identity's code does --------------------------------------------------------------
NODE_AGENT_USES = sorted(set(
    datastore_reads(felix_daemon.watch_specs())
    + datastore_reads(bgpd_daemon.watch_specs())
    + named_secret_reads(PASSWORD_SECRETS)
    + [  # EventRecorder: create, then patch the count of a repeat; any object's namespace
        Access("create", "events"), Access("patch", "events"),
        # felix's IPAM garbage collector (calyx.cni.gc through calyx.cni.blocks.Api)
        Access("list", "nodes"), Access("list", "ipamblocks.calyx.dev"), Access("list", "pods"),
        Access("delete", "ipamblocks.calyx.dev"),
        # felix.vtep.KubeNodeAnnotator: its own Node's VXLAN tunnel endpoint annotations
        Access("patch", "nodes"),
    ]), key=str)
# Not called by the code, granted as Calico grants its BGP password Secrets: get of the same names.
NODE_AGENT_ALSO_GRANTED = [Access("get", "secrets", NAMESPACE, name=name) for name in PASSWORD_SECRETS]
CNI_PLUGIN_USES = [  # calyx.cni.blocks.BlockClaimer
    Access("get", "nodes", name=NODE),
    Access("list", "nodes"),                           # pools overlapping a node network are refused
    Access("list", "ippools.calyx.dev"),
    Access("list", "bgpconfigurations.calyx.dev"),     # ... and those overlapping serviceClusterIPs
    Access("list", "ipamblocks.calyx.dev"),
    Access("create", "ipamblocks.calyx.dev"),
    Access("get", "ipamblocks.calyx.dev", name="10-244-0-0-26"),
]

# --- what no identity's code does: refused ------------------------------------------------------
NODE_AGENT_REFUSED = [
    Access("get", "pods"), Access("create", "pods", "default"), Access("delete", "pods", "default"),
    Access("create", "pods", NAMESPACE, subresource="exec"),
    Access("get", "nodes", name=NODE), Access("update", "nodes"), Access("delete", "nodes"),
    Access("create", "ipamblocks.calyx.dev"),       # claiming blocks is the CNI plugin's
    Access("get", "ipamblocks.calyx.dev"), Access("patch", "ipamblocks.calyx.dev"),
    Access("update", "ipamblocks.calyx.dev"),
    Access("get", "ippools.calyx.dev"), Access("create", "ippools.calyx.dev"),
    Access("patch", "ippools.calyx.dev"), Access("delete", "ippools.calyx.dev"),
    Access("create", "bgppeers.calyx.dev"), Access("patch", "bgpconfigurations.calyx.dev"),
    # Secrets: none without a name, none but the two named, nothing but reading them.
    Access("list", "secrets", NAMESPACE), Access("watch", "secrets", NAMESPACE),
    Access("get", "secrets", NAMESPACE, name=OUTSIDE_SECRET), Access("list", "secrets", NAMESPACE, name=OUTSIDE_SECRET),
    Access("watch", "secrets", NAMESPACE, name=OUTSIDE_SECRET),
    Access("get", "secrets", NAMESPACE, name=TOKEN_SECRET), Access("list", "secrets", NAMESPACE, name=TOKEN_SECRET),
    Access("get", "secrets", "default", name="bgp-passwords"), Access("list", "secrets", "default", name="bgp-passwords"),
    Access("update", "secrets", NAMESPACE, name="bgp-passwords"), Access("patch", "secrets", NAMESPACE, name="bgp-mesh"),
    Access("delete", "secrets", NAMESPACE, name="bgp-passwords"),
    Access("create", "secrets", NAMESPACE), Access("update", "secrets", NAMESPACE),
    Access("list", "secrets"), Access("list", "secrets", "default"), Access("watch", "secrets", "kube-system"),
    Access("list", "events"), Access("delete", "events", "default"),
    Access("create", "serviceaccounts", NAMESPACE, subresource="token", name=CNI_PLUGIN),
    Access("list", "configmaps", NAMESPACE), Access("list", "customresourcedefinitions.apiextensions.k8s.io"),
    # Services and EndpointSlices: read (bgpd's Service advertisement), never written.
    Access("get", "services", "default"), Access("create", "services", "default"),
    Access("patch", "services", "default"), Access("patch", "services", "default", subresource="status"),
    Access("delete", "services", "default"), Access("list", "endpoints"),
    Access("get", "endpointslices.discovery.k8s.io", "default"),
    Access("create", "endpointslices.discovery.k8s.io", "default"),
    Access("update", "endpointslices.discovery.k8s.io", "default"),
]
CNI_PLUGIN_REFUSED = [
    Access("watch", "nodes"), Access("patch", "nodes"),
    Access("get", "ippools.calyx.dev", name="default-ipv4-ippool"), Access("watch", "ippools.calyx.dev"),
    Access("create", "ippools.calyx.dev"),
    Access("watch", "ipamblocks.calyx.dev"), Access("delete", "ipamblocks.calyx.dev"),
    Access("patch", "ipamblocks.calyx.dev"), Access("update", "ipamblocks.calyx.dev"),
    Access("list", "pods"), Access("get", "pods", "default"),
    Access("list", "bgppeers.calyx.dev"), Access("watch", "bgpconfigurations.calyx.dev"),
    Access("list", "secrets", NAMESPACE), Access("get", "secrets", NAMESPACE, name=TOKEN_SECRET),
    Access("create", "events", "default"),
    Access("list", "services"), Access("list", "endpointslices.discovery.k8s.io"),
]

TABLE = ([(NODE_AGENT, a, True) for a in NODE_AGENT_USES + NODE_AGENT_ALSO_GRANTED]
         + [(NODE_AGENT, a, False) for a in NODE_AGENT_REFUSED]
         + [(CNI_PLUGIN, a, True) for a in CNI_PLUGIN_USES] + [(CNI_PLUGIN, a, False) for a in CNI_PLUGIN_REFUSED]
         # The release namespace's default account (no pod of the chart uses it) gets nothing.
         + [("default", a, False) for a in (Access("list", "pods"), Access("list", "secrets", NAMESPACE),
                                             Access("create", "ipamblocks.calyx.dev"))])


@pytest.fixture(scope="module")
def installed(chart_cluster: ChartCluster) -> ChartCluster:
    chart_cluster.release.use(RELEASE_VALUES, RELEASE_SETS)
    chart_cluster.register_node(NODE)
    return chart_cluster


def test_no_row_is_both_used_and_refused() -> None:
    uses, refused = set(map(str, NODE_AGENT_USES + NODE_AGENT_ALSO_GRANTED)), set(map(str, NODE_AGENT_REFUSED))
    assert not uses & refused and not set(map(str, CNI_PLUGIN_USES)) & set(map(str, CNI_PLUGIN_REFUSED))
    # What the datastores watch came from the code: pods of every namespace, two Secrets by name.
    assert {"watch pods -A", "watch bgppeers.calyx.dev -A", "list secrets/bgp-passwords -n calyx-system",
            "watch secrets/bgp-mesh -n calyx-system"} <= uses
    assert not any(a.resource == "secrets" and not a.name for a in NODE_AGENT_USES)


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


def _secret(name: str, **values: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
            "stringData": values}


def test_felix_and_bgpd_datastores_sync_as_their_account(installed: ChartCluster, node_agent_kubeconfig: Path) -> None:
    installed.kubectl.apply([_secret("bgp-passwords", **{"tor-a": "alpha", "tor-b": "beta"}),
                             _secret("bgp-mesh", pw="m")])
    try:
        for daemon, specs in (("felix", felix_daemon.watch_specs()), ("bgpd", bgpd_daemon.watch_specs())):
            api = kube_client.load(str(node_agent_kubeconfig))
            datastore = Datastore(api, specs, namespace=NAMESPACE)
            datastore.start()
            try:
                # A refused list never syncs: the reflector retries and the daemon stays unready.
                assert datastore.wait_synced(90), f"{daemon}: {datastore.readiness().reason}"
                snapshot = datastore.snapshot() if daemon == "felix" else \
                    bgpd_daemon.settled_snapshot(datastore, NAMESPACE)
                named = datastore.named()
            finally:
                datastore.stop()
                api.close()
            assert NODE in snapshot.nodes and "default-ipv4-ippool" in snapshot.ippools, daemon
            if daemon == "felix":
                assert snapshot.secrets == {} and named == []
            else:
                assert snapshot.bgp_configuration.as_number == 64512
                # The Secrets the release's BGPPeers and BGPConfiguration name: those the chart grants.
                assert tuple(w.name for w in named) == PASSWORD_SECRETS
                assert all(w.state is NamedState.FOUND for w in named), [w.describe() for w in named]
                assert snapshot.secrets == {(NAMESPACE, "bgp-passwords"): {"tor-a": "alpha", "tor-b": "beta"},
                                            (NAMESPACE, "bgp-mesh"): {"pw": "m"}}
                assert snapshot.bgp_peers["tor-rack-a"].password == model.SecretKeyRef("bgp-passwords", "tor-a")
                # Service advertisement's reads (EndpointSlices too: the datastore synced), here
                # the API server's own Service.
                assert snapshot.services[("default", "kubernetes")].cluster_ips
    finally:
        installed.kubectl("delete", "secret", "bgp-passwords", "bgp-mesh", "-n", NAMESPACE)


def _docs_role_for_another_secret() -> list[dict]:
    """The Role and RoleBinding docs/install.md shows for a BGPPeer made outside the chart."""
    section = (REPO / "docs" / "install.md").read_text().split("### BGP passwords", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```yaml\n(.*?)```", section, re.S):
        documents = [d for d in yaml.safe_load_all(block) if d]
        if {d["kind"] for d in documents} == {"Role", "RoleBinding"}:
            return documents
    raise AssertionError("docs/install.md, BGP passwords: no Role and RoleBinding example")


def test_bgpd_follows_its_secrets_and_reports_another_until_granted_as_documented(
        installed: ChartCluster, node_agent_kubeconfig: Path) -> None:
    """bgpd's datastore as its account: create, update and delete of a granted Secret arrive; a
    Secret a BGPPeer from outside the chart names is refused, reported as such (Event on the
    BGPPeer, ``Snapshot.secret_errors``, from which bgpd makes the session's error) and read
    once the Role of docs/install.md grants it."""
    kubectl = installed.kubectl
    grant = _docs_role_for_another_secret()
    assert {d["metadata"]["namespace"] for d in grant} == {NAMESPACE}
    assert [r["resourceNames"] for r in grant[0]["rules"]] == [[OUTSIDE_SECRET]]
    kubectl.apply([_secret(OUTSIDE_SECRET, pw="outside"), {
        "apiVersion": "calyx.dev/v1", "kind": "BGPPeer", "metadata": {"name": OUTSIDE_PEER},
        "spec": {"peerIP": "192.0.2.99", "asNumber": 65099,
                 "password": {"secretKeyRef": {"name": OUTSIDE_SECRET, "key": "pw"}}}}])
    api = kube_client.load(str(node_agent_kubeconfig))
    recorder = kube_events.EventRecorder(api, component="bgpd", host=NODE)
    datastore = Datastore(api, bgpd_daemon.watch_specs(), events=recorder, namespace=NAMESPACE,
                          backoff=lambda: Backoff(base=0.05, cap=0.5))

    def settled() -> model.Snapshot:
        datastore.wait_for_change(0.5)
        return bgpd_daemon.settled_snapshot(datastore, NAMESPACE)

    def password() -> dict[str, str] | None:
        return settled().secrets.get((NAMESPACE, "bgp-passwords"))

    datastore.start()
    try:
        assert datastore.wait_synced(90), datastore.readiness().reason
        snapshot = settled()
        states = {w.name: w for w in datastore.named()}
        assert {name: w.state for name, w in states.items()} == {
            "bgp-mesh": NamedState.NOT_FOUND, "bgp-passwords": NamedState.NOT_FOUND,
            OUTSIDE_SECRET: NamedState.FORBIDDEN}
        refused = states[OUTSIDE_SECRET]
        assert f'User "system:serviceaccount:{NAMESPACE}:{NODE_AGENT}" cannot list resource "secrets"' in refused.error
        assert refused.describe().startswith(
            f"Secret {NAMESPACE}/{OUTSIDE_SECRET} (referenced by BGPPeer {OUTSIDE_PEER}): cannot be read: HTTP 403")
        assert snapshot.secrets == {}
        assert snapshot.secret_errors == {(NAMESPACE, OUTSIDE_SECRET): f"cannot be read: {refused.error}"}
        assert datastore.readiness().ok

        # The granted Secret: created, updated, deleted.
        kubectl.apply([_secret("bgp-passwords", **{"tor-a": "one"})])
        wait_for("the created Secret", lambda: password() == {"tor-a": "one"}, 30.0)
        kubectl.apply([_secret("bgp-passwords", **{"tor-a": "two"})])
        wait_for("the updated Secret", lambda: password() == {"tor-a": "two"}, 30.0)
        kubectl("delete", "secret", "bgp-passwords", "-n", NAMESPACE)
        wait_for("the deleted Secret", lambda: (NAMESPACE, "bgp-passwords") not in settled().secrets, 30.0)

        assert recorder.flush(30)
        events = kubectl("get", "events", "-n", "default", "-o", "json",
                         f"--field-selector=involvedObject.name={OUTSIDE_PEER},reason={UNREADABLE_REASON}")
        [event] = json.loads(events.stdout)["items"]
        assert event["involvedObject"]["kind"] == "BGPPeer" and event["message"] == refused.describe()

        # Granted as docs/install.md shows: the watch's retry reads it.
        kubectl.apply(grant)
        wait_for("the Secret granted by docs/install.md's Role",
                 lambda: settled().secrets.get((NAMESPACE, OUTSIDE_SECRET)) == {"pw": "outside"}, 60.0)
        assert {w.name: w.state for w in datastore.named()}[OUTSIDE_SECRET] is NamedState.FOUND
        assert (NAMESPACE, OUTSIDE_SECRET) not in settled().secret_errors
        can_i = kubectl("auth", "can-i", f"--as=system:serviceaccount:{NAMESPACE}:{NODE_AGENT}",
                        "get", f"secrets/{OUTSIDE_SECRET}", "-n", NAMESPACE, check=False)
        assert can_i.stdout == "yes\n"
    finally:
        datastore.stop()
        recorder.close()
        api.close()
        kubectl("delete", "--ignore-not-found", "-f", "-", stdin=yaml.safe_dump_all(grant))
        kubectl("delete", "bgppeer.calyx.dev", OUTSIDE_PEER)
        kubectl("delete", "secret", OUTSIDE_SECRET, "-n", NAMESPACE)
        kubectl("delete", "secret", "bgp-passwords", "-n", NAMESPACE, "--ignore-not-found")


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
