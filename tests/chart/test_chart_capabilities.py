"""The capabilities the chart grants each daemon container are enough for the kernel operations
that daemon performs, and each one is needed: the operations run through pyroute2, sockets and
libnftables (felix's natOutgoing table) in a fresh network namespace, in a process whose capability set is exactly the container's
(``setpriv`` bounding set, no new privileges), as the container runtime would start it."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from typing import Iterator

import pytest

from chart_support import Helm

pytestmark = pytest.mark.lab

FELIX_OPS = r"""
import json, sys
from pyroute2 import IPRoute
results = {}
with IPRoute() as ipr:
    dev = ipr.link_lookup(ifname="cali0123456789a")[0]
    def attempt(name, fn):
        try:
            fn(); results[name] = "ok"
        except Exception as exc:
            results[name] = type(exc).__name__ + ":" + str(getattr(exc, "code", exc))
    attempt("link-up", lambda: ipr.link("set", index=dev, state="up", mtu=1440))
    attempt("pod-route", lambda: ipr.route("replace", dst="10.244.3.7/32", oif=dev, scope=253, proto=80))
    attempt("blackhole", lambda: ipr.route("replace", dst="10.244.3.0/26", type="blackhole", proto=80))
    attempt("address", lambda: ipr.addr("add", index=dev, address="10.244.3.0", prefixlen=32))
def nat_table():
    from ipaddress import IPv4Address, IPv4Network
    from felix.dataplane.nfttable import LibNftables
    from felix.dataplane.nftjson import build_commands
    from felix.nat import NatState
    pools = (IPv4Network("10.244.0.0/16"),)
    LibNftables().run(build_commands(NatState(pools, pools, (IPv4Address("192.0.2.1"),))))
attempt("nat-table", nat_table)
print(json.dumps(results))
sys.exit(0 if set(results.values()) == {"ok"} else 1)
"""

BGPD_OPS = r"""
import json, socket, struct, sys
from pyroute2 import IPRoute
results = {}
def attempt(name, fn):
    try:
        fn(); results[name] = "ok"
    except Exception as exc:
        results[name] = type(exc).__name__ + ":" + str(getattr(exc, "code", exc))
def listen():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 179)); s.listen(); s.close()
def md5():
    # struct tcp_md5sig: sockaddr_storage, flags, prefixlen, keylen, ifindex, key[80]
    addr = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton("192.0.2.9")).ljust(128, b"\0")
    key = b"peer-password"
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, 14, addr + struct.pack("=BBHI", 0, 0, len(key), 0) + key.ljust(80, b"\0"))
    s.close()
def learned_route():
    with IPRoute() as ipr:
        ipr.route("replace", dst="10.244.9.0/26", gateway="192.0.2.9", proto=186)
attempt("listen-179", listen)
attempt("tcp-md5", md5)
attempt("install-route", learned_route)
print(json.dumps(results))
sys.exit(0 if set(results.values()) == {"ok"} else 1)
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"calyxchart-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        def ip(*args: str) -> None:
            subprocess.run(["ip", "-n", name, *args], check=True)
        ip("link", "set", "lo", "up")
        ip("link", "add", "cali0123456789a", "type", "veth", "peer", "name", "eth0")
        ip("link", "set", "eth0", "up")
        ip("address", "add", "192.0.2.1/24", "dev", "eth0")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _capabilities(helm: Helm) -> dict[str, list[str]]:
    pod = helm.template().one("DaemonSet")["spec"]["template"]["spec"]
    return {c["name"]: c["securityContext"]["capabilities"].get("add", []) for c in pod["containers"]}


def _run_with(netns: str, caps: list[str], program: str) -> subprocess.CompletedProcess[str]:
    bounding = ",".join(["-all"] + [f"+{c.lower()}" for c in caps])
    cmd = ["ip", "netns", "exec", netns, "setpriv", "--no-new-privs", "--inh-caps=-all",
           f"--bounding-set={bounding}", sys.executable, "-c", program]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("container,program", [("felix", FELIX_OPS), ("bgpd", BGPD_OPS)])
def test_granted_capabilities_suffice(helm: Helm, netns: str, container: str, program: str) -> None:
    caps = _capabilities(helm)[container]
    proc = _run_with(netns, caps, program)
    assert proc.returncode == 0, f"{container} with {caps}: {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("container,program,cap,operation", [
    ("felix", FELIX_OPS, "NET_ADMIN", "pod-route"),
    ("felix", FELIX_OPS, "NET_ADMIN", "nat-table"),
    ("bgpd", BGPD_OPS, "NET_ADMIN", "install-route"),
    ("bgpd", BGPD_OPS, "NET_BIND_SERVICE", "listen-179"),
])
def test_each_capability_is_needed(helm: Helm, netns: str, container: str, program: str,
                                   cap: str, operation: str) -> None:
    caps = _capabilities(helm)[container]
    assert cap in caps
    proc = _run_with(netns, [c for c in caps if c != cap], program)
    assert proc.returncode == 1, proc.stderr
    results = json.loads(proc.stdout)
    assert results[operation] != "ok", f"{operation} worked without {cap}: {results}"
