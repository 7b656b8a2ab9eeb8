"""``calyx-cni``: the CNI plugin entry point (ADD, DEL, CHECK, VERSION), plus two operator
subcommands: ``calyx-cni install`` (the chart's init container: binary + conflist + kubeconfig)
and ``calyx-cni gc`` (one garbage-collection run over the IPAM blocks of deleted nodes; felix
runs the same collection periodically, see :mod:`calyx.cni.gc`).

Wiring only: request parsing lives in :mod:`calyx.cni.config`, addresses in
:mod:`calyx.cni.ipam`, cluster blocks in :mod:`calyx.cni.blocks`, netlink in
:mod:`calyx.cni.netsetup`, installation in :mod:`calyx.cni.install`.
Results and errors go to stdout as the spec's JSON; logs go to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from ipaddress import IPv4Address
from typing import Mapping, Sequence, TextIO

from calyx import naming
from calyx.cni import ipam
from calyx.cni.config import (DEFAULT_MTU, ERR_CHECK_FAILED, ERR_INVALID_CONFIG, ERR_INVALID_ENV, ERR_IO,
                              AddResult, CniEnv, CniError, NetConf, parse_env, parse_mtu_file, parse_netconf,
                              peek_version, render_result, render_version)
from calyx.logs import configure_logging, get_logger

log = get_logger("calyx.cni")
POST_LOCK_NICENESS = 10


def pod_mtu(conf: NetConf) -> int:
    """The configured MTU, else the one felix wrote to ``$run_dir/mtu``, else 1500."""
    if conf.mtu is not None:
        return conf.mtu
    path = os.path.join(conf.run_dir, naming.MTU_FILE)
    try:
        with open(path, encoding="ascii") as f:
            return parse_mtu_file(f.read(), path)
    except FileNotFoundError:
        return DEFAULT_MTU
    except OSError as exc:
        raise CniError(ERR_IO, f"{path}: cannot read: {exc.strerror}") from None


def _claimer(conf: NetConf) -> ipam.CidrSource:
    # The kubernetes client is imported only on IPAM's slow path (no fresh cached CIDR has a
    # free address): the common ADD, and DEL, CHECK and VERSION, never load it, which matters
    # when the runtime starts or tears down many pods at once.
    log.info("IPAM: no fresh cached CIDR has a free address; asking the API", node=conf.nodename)
    from calyx.cni import blocks
    from calyx.kube import client as kube_client
    try:
        api = blocks.Api(kube_client.load(conf.kubeconfig))
    except kube_client.ClientConfigError as exc:
        raise CniError(ERR_INVALID_CONFIG, f"network configuration: kubeconfig: {exc}") from None
    return blocks.BlockClaimer(api, conf.nodename)


def host_link_index(ifname: str) -> int | None:
    """The index of a link in this network namespace (an ioctl: no netlink library under the lock)."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def _yield_to_lock_holders() -> None:
    """Past the IPAM lock, the rest (loading pyroute2, wiring) runs at a lower CPU priority.

    When hundreds of invocations start at once, the node lock is the critical path: each
    holder must get the CPU ahead of the crowd that has already left the lock, or every
    holder's share shrinks to 1/N and the queue behind it crawls.
    """
    try:
        os.nice(POST_LOCK_NICENESS)
    except OSError:
        pass


def cmd_add(conf: NetConf, env: CniEnv) -> dict:
    if not os.path.exists(env.netns):
        raise CniError(ERR_INVALID_ENV, f"CNI_NETNS: {env.netns!r}: network namespace does not exist")
    namespace, pod = env.pod_namespace or "", env.pod_name or ""
    host_ifname = naming.cali_interface_name(namespace, pod)
    mtu = pod_mtu(conf)
    store = ipam.AddressStore(conf.run_dir)
    ttl = ipam.CACHE_TTL_S if conf.ipam_cache_ttl is None else conf.ipam_cache_ttl
    with store.locked():
        alloc = ipam.assign(store, lambda: _claimer(conf), container_id=env.container_id, ifname=env.ifname,
                            namespace=namespace, pod=pod, host_ifname=host_ifname, cache_ttl=ttl)
    _yield_to_lock_holders()
    from calyx.cni import netsetup
    try:
        macs = netsetup.setup(netsetup.PodLink(host_ifname=host_ifname, pod_ifname=env.ifname,
                                               netns=env.netns, address=alloc.address, mtu=mtu))
    except CniError:
        with store.locked():
            ipam.release(store, container_id=env.container_id, ifname=env.ifname)
        raise
    log.info("pod added", pod=f"{namespace}/{pod}", container=env.container_id, address=str(alloc.address),
             interface=host_ifname, mtu=mtu)
    return render_result(conf.cni_version, AddResult(
        host_ifname=host_ifname, host_mac=macs.host, pod_ifname=env.ifname, pod_mac=macs.pod,
        sandbox=env.netns, address=alloc.address, gateway=IPv4Address(naming.POD_GATEWAY)))


def cmd_del(conf: NetConf, env: CniEnv) -> None:
    store = ipam.AddressStore(conf.run_dir)
    with store.locked():
        state = store.read()
        alloc = state.find(env.container_id, env.ifname)
        if alloc is not None:
            host_ifname: str | None = alloc.host_ifname
        elif env.pod_namespace and env.pod_name:
            host_ifname = naming.cali_interface_name(env.pod_namespace, env.pod_name)
        else:
            host_ifname = None
        # The host veth belongs to the newest sandbox of the pod: never remove a successor's.
        holders = state.find_by_host_ifname(host_ifname) if host_ifname else []
        if holders and holders[-1].key != (env.container_id, env.ifname):
            host_ifname = None
        host_index = host_link_index(host_ifname) if host_ifname else None
        ipam.release(store, container_id=env.container_id, ifname=env.ifname)
    # Outside the lock: removing a veth waits for the kernel (RCU), and many DELs overlap those
    # waits. The address may be handed out meanwhile: the new pod's route replaces this one.
    _yield_to_lock_holders()
    from calyx.cni import netsetup
    netsetup.teardown(host_index, env.netns, env.ifname)
    log.info("pod deleted", container=env.container_id, address=str(alloc.address) if alloc else None)


def cmd_check(conf: NetConf, env: CniEnv) -> None:
    from calyx.cni import netsetup
    store = ipam.AddressStore(conf.run_dir)
    with store.locked():
        alloc = store.read().find(env.container_id, env.ifname)
    if alloc is None:
        raise CniError(ERR_CHECK_FAILED, f"CHECK: container {env.container_id!r} interface {env.ifname!r} "
                                         f"holds no address on node {conf.nodename!r}")
    if conf.prev_result is not None:
        wanted = {str(ip.get("address", "")).split("/")[0] for ip in conf.prev_result.get("ips", [])}
        if wanted and str(alloc.address) not in wanted:
            raise CniError(ERR_CHECK_FAILED, f"CHECK: prevResult ips {sorted(wanted)} but IPAM holds {alloc.address} "
                                             f"for container {env.container_id!r}")
    netsetup.check(netsetup.PodLink(host_ifname=alloc.host_ifname, pod_ifname=env.ifname, netns=env.netns,
                                    address=alloc.address, mtu=pod_mtu(conf)))


def run_cni(environ: Mapping[str, str], stdin: TextIO, stdout: TextIO) -> int:
    """One CNI invocation; returns the process exit code."""
    version = "1.0.0"
    try:
        env = parse_env(environ)
        if env.command == "VERSION":
            stdout.write(json.dumps(render_version()) + "\n")
            return 0
        text = stdin.read()
        version = peek_version(text)
        conf = parse_netconf(text, environ)
        version = conf.cni_version
        if env.command == "ADD":
            stdout.write(json.dumps(cmd_add(conf, env)) + "\n")
        elif env.command == "DEL":
            cmd_del(conf, env)
        else:
            cmd_check(conf, env)
        return 0
    except CniError as exc:
        log.error("CNI request failed", command=environ.get("CNI_COMMAND"), code=exc.code, error=exc.msg)
        stdout.write(exc.to_json(version) + "\n")
        return 1
    except Exception as exc:  # noqa: BLE001 - the runtime must always get the spec's error object
        log.error("CNI request failed unexpectedly", exc_info=True, command=environ.get("CNI_COMMAND"))
        stdout.write(CniError(999, f"internal error: {type(exc).__name__}: {exc}").to_json(version) + "\n")
        return 1


def _gc_main(args: argparse.Namespace) -> int:
    from calyx.cni import blocks, gc
    from calyx.kube import client as kube_client
    try:
        api = blocks.Api(kube_client.load(args.kubeconfig or os.environ.get("KUBECONFIG")))
    except kube_client.ClientConfigError as exc:
        print(f"calyx-cni gc: {exc}", file=sys.stderr)
        return 2
    collector = gc.GarbageCollector(api, node_grace=args.node_grace)
    try:
        released = collector.pass_once()
        if collector.pending():
            # One run sees absence once; look again when the grace period is over.
            time.sleep(args.node_grace)
            released += collector.pass_once()
    except blocks.API_FAILURES as exc:
        log.warning("block garbage collection failed", error=str(exc))
        return 1
    log.info("block garbage collection done", released=released)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging(os.environ.get("CALYX_LOG_LEVEL", "info"))
    if not argv:
        sys.exit(run_cni(os.environ, sys.stdin, sys.stdout))
    parser = argparse.ArgumentParser(prog="calyx-cni", description="Calyx CNI plugin. Without arguments it "
                                     "serves a CNI request (CNI_COMMAND, stdin); these subcommands are for operators.")
    sub = parser.add_subparsers(dest="verb", required=True)
    gc = sub.add_parser("gc", help="release the IPAM blocks of deleted nodes once their pods are gone")
    gc.add_argument("--kubeconfig", default=None, help="kubeconfig (default: KUBECONFIG, else in-cluster)")
    gc.add_argument("--node-grace", type=float, default=120.0,
                    help="release a node's blocks only after its Node has been absent this long (must "
                         "exceed the plugin's ipam_cache_ttl, 60 s by default; a single run waits for it)")
    from calyx.cni import install    # operators' verb: kept off the plugin's per-pod import path
    install.add_arguments(sub.add_parser("install", help="install the plugin and its conflist on this host "
                                                         "(the chart's init container runs it)"))
    args = parser.parse_args(argv)
    if args.verb == "gc":
        return _gc_main(args)
    return install.run(args, os.environ)


if __name__ == "__main__":
    sys.exit(main())
