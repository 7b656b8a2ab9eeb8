"""Pure parts of the plugin and the on-disk address store (no namespaces, no API)."""
from __future__ import annotations

import json
import multiprocessing
import os
from argparse import Namespace
from ipaddress import IPv4Address, IPv4Network

import pytest

from calyx import crds, model
from calyx.cni import blocks, install, ipam
from calyx.cni.config import (AddResult, CniError, parse_cni_args, parse_env, parse_netconf, render_result)
from cnitest_support import Clock


def test_cni_args_and_env():
    assert parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;") == {
        "IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p"}
    with pytest.raises(CniError, match="CNI_ARGS: malformed pair 'oops'") as err:
        parse_cni_args("A=1;oops")
    assert err.value.code == 7
    env = parse_env({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"})
    assert env.netns == "" and env.pod_name is None
    with pytest.raises(CniError, match="CNI_IFNAME: 'a/b'"):
        parse_env({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "a/b"})


def test_netconf_defaults_from_environment():
    conf = parse_netconf(json.dumps({"cniVersion": "0.4.0", "name": "n", "type": "calyx"}),
                         {"NODENAME": "w1", "CALYX_RUN_DIR": "/run/x", "KUBECONFIG": "/k"})
    assert (conf.nodename, conf.run_dir, conf.kubeconfig, conf.mtu) == ("w1", "/run/x", "/k", None)


def test_result_layout_per_version():
    res = AddResult("caliabc", "ee:ee:ee:ee:ee:ee", "eth0", "02:00:00:00:00:01", "/var/run/netns/x",
                    IPv4Address("10.0.0.5"), IPv4Address("169.254.1.1"))
    assert "version" not in render_result("1.0.0", res)["ips"][0]
    assert render_result("0.3.1", res)["ips"][0]["version"] == "4"


def test_pick_address_skips_used_and_reserved():
    cidrs = (IPv4Network("10.0.0.0/30"), IPv4Network("10.0.1.0/30"))
    assert ipam.pick_address(cidrs, frozenset()) == IPv4Address("10.0.0.1")
    used = frozenset(IPv4Address(f"10.0.0.{i}") for i in range(4))
    assert ipam.pick_address(cidrs, used) == IPv4Address("10.0.1.1")
    assert ipam.pick_address(cidrs[:1], used) is None


def test_candidate_blocks_skip_overlaps_of_any_size():
    pool = model.IPPool(name="p", cidr=IPv4Network("10.1.0.0/24"), block_size=26)
    taken = [IPv4Network("10.1.0.0/26"), IPv4Network("10.1.0.72/29")]   # second one from an older blockSize
    assert list(blocks.candidate_blocks(pool, taken)) == [IPv4Network("10.1.0.128/26"),
                                                          IPv4Network("10.1.0.192/26")]
    with pytest.raises(CniError, match="IPPool 'q': spec.blockSize: 20"):
        list(blocks.candidate_blocks(model.IPPool(name="q", cidr=IPv4Network("10.2.0.0/24"), block_size=20), []))


def test_only_blocks_of_pools_that_allocate_give_new_addresses():
    pools = {"old": model.IPPool(name="old", cidr=IPv4Network("10.1.0.0/16"), disabled=True),
             "new": model.IPPool(name="new", cidr=IPv4Network("10.2.0.0/16"))}
    held = (IPv4Network("10.1.0.0/26"), IPv4Network("10.2.0.0/26"), IPv4Network("10.3.0.0/26"))
    # the disabled pool's block keeps its pods but gives no address; a block outside every
    # accepted pool (deleted, or refused for overlapping) neither
    assert blocks.allocatable_cidrs(held, pools) == (IPv4Network("10.2.0.0/26"),)
    assert blocks.allocatable_cidrs(held, {}) == ()


def test_block_object_is_named_after_its_cidr_and_parses_back():
    raw = blocks.block_object(IPv4Network("10.244.1.0/26"), "w1", "default")
    raw["spec"]["deleted"] = False
    parsed = model.parse_ipam_block(raw, crds.spec_schemas())
    assert (parsed.name, parsed.node, parsed.pool) == ("10-244-1-0-26", "w1", "default")


class FixedCidrs:
    """A node with fixed CIDRs and no pool to claim from (spec.podCIDRs-like). Calling it is
    ``connect`` (counted: how often IPAM took the slow path)."""

    def __init__(self, *cidrs: str):
        self.cidrs = tuple(IPv4Network(c) for c in cidrs)
        self.connects = 0

    def __call__(self):
        self.connects += 1
        return self

    def current(self):
        return self.cidrs

    def claim_more(self):
        raise CniError(100, "full")


def _assign_many(run_dir: str, start: int, count: int, out) -> None:
    store = ipam.AddressStore(run_dir)
    got = []
    for i in range(start, start + count):
        with store.locked():
            got.append(str(ipam.assign(store, FixedCidrs("10.5.0.0/23"), container_id=f"c{i}", ifname="eth0",
                                       namespace="ns", pod=f"p{i}", host_ifname=f"cali{i}").address))
    out.put(got)


def test_store_is_race_free_across_processes_and_state_survives(tmp_path):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_assign_many, args=(str(tmp_path), i * 50, 50, out)) for i in range(8)]
    for p in procs:
        p.start()
    results = [a for _ in procs for a in out.get(timeout=120)]
    for p in procs:
        p.join(60)
    assert len(results) == 400 and len(set(results)) == 400
    assert "10.5.0.0" not in results                       # the CIDR's first address is the node's
    store = ipam.AddressStore(str(tmp_path))
    state = store.read()
    assert len(state.allocations) == 400
    assert not [f for f in os.listdir(store.dir) if f.startswith(".state.")]   # no temp files left
    with store.locked():
        released = ipam.release(store, container_id="c7", ifname="eth0")
        assert released is not None and released.pod == "p7"
        assert ipam.release(store, container_id="c7", ifname="eth0") is None
    assert store.read().cidrs == (IPv4Network("10.5.0.0/23"),)    # cached for the next ADDs
    with store.locked():
        with pytest.raises(CniError) as full:
            for i in range(400, 530):
                ipam.assign(store, FixedCidrs("10.5.0.0/23"), container_id=f"c{i}", ifname="eth0",
                            namespace="ns", pod=f"p{i}", host_ifname=f"cali{i}")
    assert full.value.code == 100
    assert len(store.read().allocations) == 511            # all of the /23 but its first address


def test_corrupt_state_is_refused_not_overwritten(tmp_path):
    store = ipam.AddressStore(str(tmp_path))
    os.makedirs(store.dir)
    with open(store.state_path, "w") as f:
        f.write("{half")
    with pytest.raises(CniError, match="corrupt IPAM state") as err:
        store.read()
    assert err.value.code == 5
    assert open(store.state_path).read() == "{half"


def test_install_writes_wrapper_conflist_and_kubeconfig(tmp_path):
    args = Namespace(bin_dir=str(tmp_path / "bin"), conf_dir=str(tmp_path / "net.d"), conf_name=None,
                     nodename=None, kubeconfig="/etc/cni/net.d/kc", run_dir=None, mtu=1440, python="/usr/bin/python3",
                     plugin_dir=None)
    assert install.run(args, {"NODENAME": "w3", "CALYX_RUN_DIR": "/var/run/calyx"}) == 0
    wrapper = tmp_path / "bin" / "calyx"
    assert os.access(wrapper, os.X_OK) and "/usr/bin/python3 -m calyx.cni.plugin" in wrapper.read_text()
    conflist = json.loads((tmp_path / "net.d" / "10-calyx.conflist").read_text())
    assert conflist["cniVersion"] == "1.0.0"
    assert conflist["plugins"] == [{"type": "calyx", "kubeconfig": "/etc/cni/net.d/kc", "nodename": "w3",
                                    "run_dir": "/var/run/calyx", "mtu": 1440}]
    args.nodename, args.kubeconfig = None, None
    assert install.run(args, {}) == 2                                   # no node name
    assert install.run(args, {"NODENAME": "w3"}) == 2                   # not in a pod, no kubeconfig


def _add(store, connect, i: int, clock, ttl: float = 60.0):
    with store.locked():
        return ipam.assign(store, connect, container_id=f"c{i}", ifname="eth0", namespace="ns", pod=f"p{i}",
                           host_ifname=f"cali{i}", cache_ttl=ttl, now=clock).address


def test_fresh_cache_serves_adds_without_the_api_and_stale_or_full_cache_asks_again(tmp_path):
    store, clock = ipam.AddressStore(str(tmp_path)), Clock(1000.0)
    api = FixedCidrs("10.6.0.0/30")
    assert _add(store, api, 0, clock) == IPv4Address("10.6.0.1") and api.connects == 1
    assert store.read().confirmed_at == 1000.0
    clock.t = 1059.0
    assert _add(store, api, 1, clock) == IPv4Address("10.6.0.2") and api.connects == 1    # from the cache
    clock.t = 1060.0                                                                      # TTL reached
    assert _add(store, api, 2, clock) == IPv4Address("10.6.0.3") and api.connects == 2
    assert store.read().confirmed_at == 1060.0
    # The cached CIDR is full: the slow path runs and the API's answer replaces the cache.
    api.cidrs = (IPv4Network("10.6.0.0/30"), IPv4Network("10.6.1.0/30"))
    assert _add(store, api, 3, clock) == IPv4Address("10.6.1.1") and api.connects == 3
    assert store.read().cidrs == api.cidrs
    # A CIDR the API no longer confirms (its block released) is never used again.
    with store.locked():
        ipam.release(store, container_id="c0", ifname="eth0")
    api.cidrs = (IPv4Network("10.6.1.0/30"),)
    clock.t = 2000.0
    assert _add(store, api, 4, clock) == IPv4Address("10.6.1.2") and api.connects == 4
    assert store.read().cidrs == (IPv4Network("10.6.1.0/30"),)
    # A confirmation from the future (boot clock reset, run dir kept) is stale; TTL 0 disables the cache.
    clock.t = 10.0
    assert _add(store, api, 5, clock) == IPv4Address("10.6.1.3") and api.connects == 5
    with store.locked(), pytest.raises(CniError) as full:
        ipam.assign(store, api, container_id="c6", ifname="eth0", namespace="ns", pod="p6", host_ifname="x",
                    cache_ttl=0.0, now=clock)
    assert full.value.code == 100 and api.connects == 6


def test_state_of_the_previous_format_reads_as_an_empty_cache(tmp_path):
    store = ipam.AddressStore(str(tmp_path))
    os.makedirs(store.dir)
    with open(store.state_path, "w") as f:
        json.dump({"version": 1, "allocations": [{"address": "10.7.0.1", "containerID": "c", "ifname": "eth0",
                                                   "namespace": "ns", "pod": "p", "hostInterface": "calix"}]}, f)
    state = store.read()
    assert state.cidrs == () and not state.cache_is_fresh(ipam.clock_now(), 60.0)
    assert state.allocations[0].address == IPv4Address("10.7.0.1")
    api = FixedCidrs("10.7.0.0/29")
    assert _add(store, api, 1, ipam.clock_now) == IPv4Address("10.7.0.2") and api.connects == 1
    assert json.loads(open(store.state_path).read())["version"] == 2


def test_cache_ttl_in_the_network_configuration_is_bounded():
    conf = parse_netconf(json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "calyx", "ipam_cache_ttl": 5}),
                         {"NODENAME": "w1"})
    assert conf.ipam_cache_ttl == 5.0
    with pytest.raises(CniError, match="ipam_cache_ttl: 600: must be a number of seconds in 0..60") as err:
        parse_netconf(json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "calyx", "ipam_cache_ttl": 600}),
                      {"NODENAME": "w1"})
    assert err.value.code == 4


def test_lock_wait_ends_with_try_again_later_in_main_thread_and_other_threads(tmp_path):
    import fcntl
    import threading
    import time as _time
    store = ipam.AddressStore(str(tmp_path))
    os.makedirs(store.dir)
    holder = os.open(store.lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)               # another invocation holds the node lock
    try:
        started = _time.monotonic()
        with pytest.raises(CniError, match="IPAM lock held by another invocation") as err:
            with store.locked(timeout=0.3):
                pass
        assert err.value.code == 11 and _time.monotonic() - started < 5
        errors = []

        def in_thread():
            try:
                with store.locked(timeout=0.3):
                    pass
            except CniError as exc:
                errors.append(exc.code)
        t = threading.Thread(target=in_thread)
        t.start()
        t.join(10)
        assert errors == [11]
    finally:
        os.close(holder)
    with store.locked(timeout=1):                    # released: taken at once
        pass


def test_a_writer_killed_before_its_rename_leaves_no_file_behind_for_long(tmp_path):
    store = ipam.AddressStore(str(tmp_path))
    with store.locked():
        store.write(ipam.State())
        for name in (".state.a1b2c3", ".state.zz"):           # what a SIGKILL between mkstemp and rename leaves
            (tmp_path / "ipam" / name).write_text('{"version": 2')
        store.write(ipam.State())
    assert sorted(p.name for p in (tmp_path / "ipam").iterdir()) == ["lock", "state.json"]
