"""The user-mode Linux kernel: boot an instance for a lab, and the backend that drives it.

The host creates a tap device holding the management gateway address and boots ``linux.uml``
with the host filesystem as its root and a generated init script. Inside, the init script
loads the kernel modules the lab needs (:data:`UML_MODULES`), enslaves ``vec0`` (the tap's
other side) to the UML-side management bridge and starts :mod:`calyxlab.umlagent` on the
subnet's last usable address, serving only the host's tap address and only requests signed with
the lab's key (:mod:`calyxlab.agentauth`). :class:`UmlBackend` then implements the lab's backend
interface by sending signed requests to that agent.
"""
from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Mapping, Sequence

from calyxlab import agentauth
from calyxlab.backend import Result

UML_BINARY = "linux.uml"
UML_MODULE_ROOT = Path("/usr/lib/uml/modules")
# Kernel modules a lab may need inside UML; dependencies are resolved from modules.dep.
UML_MODULES = ("ipip", "veth", "bridge", "vxlan", "tun", "macvlan", "dummy")
# What kube-proxy's iptables mode needs (legacy iptables: this kernel's nf_tables has no IPv4
# family, so neither kube-proxy's nftables mode nor iptables-nft can work in it).
KUBE_PROXY_MODULES = ("ip_tables", "iptable_filter", "iptable_nat", "iptable_mangle", "ipt_REJECT",
                      "xt_comment", "xt_mark", "xt_conntrack", "xt_MASQUERADE", "xt_addrtype",
                      "xt_statistic", "xt_nat", "xt_multiport", "xt_tcpudp")
KUBE_PROXY_MODES = ("iptables",)
AGENT_PORT = 7179
DEFAULT_MEMORY = "2G"
BOOT_TIMEOUT = 90.0


class UmlError(RuntimeError):
    """The UML instance could not be booted or reached."""


def module_load_order(modules_dep: str, wanted: Sequence[str]) -> list[str]:
    """Relative .ko paths to insmod, dependencies first, each once (pure)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[Path(mod).name.removesuffix(".ko").replace("-", "_")] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps.get(mod, [])):
            visit(dep)
        order.append(mod)

    for name in wanted:
        key = name.replace("-", "_")
        if key not in by_name:
            raise UmlError(f"kernel module {name!r} not found in modules.dep")
        visit(by_name[key])
    return order


def uml_module_dir() -> Path:
    dirs = sorted(UML_MODULE_ROOT.glob("*/modules.dep"))
    if not dirs:
        raise UmlError(f"no UML kernel modules under {UML_MODULE_ROOT} "
                       "(install the Debian package user-mode-linux)")
    return dirs[-1].parent


def init_script(*, bridge: str, agent: IPv4Address, subnet: IPv4Network, python: str,
                module_dir: Path, modules: Sequence[str], key_file: Path,
                host: IPv4Address) -> str:
    """The UML init (PID 1) script for one lab (pure)."""
    insmods = "\n".join(f"insmod {shlex.quote(str(module_dir / m))} || "
                        f"echo 'calyx-lab: cannot load {m}'" for m in modules)
    agent_access = f"--key-file {shlex.quote(str(key_file))} --allow {host}"
    return f"""#!/bin/sh
# PID 1 inside the lab's user-mode Linux kernel.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/netns /run/lock
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
{insmods}
ip link set lo up
ip link add {bridge} type bridge
ip link set {bridge} up
ip addr add {agent}/{subnet.prefixlen} dev {bridge}
ip link set vec0 master {bridge}
ip link set vec0 up
echo calyx-lab: network up
exec {shlex.quote(python)} -m calyxlab.umlagent --listen {agent}:{AGENT_PORT} {agent_access}
"""


def uml_command(*, memory: str, init: str, tap: str) -> list[str]:
    return [UML_BINARY, f"mem={memory}", "rootfstype=hostfs", "rootflags=/", "rw",
            f"init={init}", "con=null", "con0=fd:0,fd:1",
            f"vec0:transport=tap,ifname={tap}"]


@dataclass(frozen=True)
class UmlBackend:
    """Backend that runs everything inside a booted UML instance, through its agent; every
    request is signed with the lab's key."""

    agent: IPv4Address
    key: bytes = field(repr=False)
    port: int = AGENT_PORT
    kernel: str = "uml"

    def _call(self, request: Mapping, timeout: float | None) -> dict:
        text = json.dumps(request)
        try:
            with socket.create_connection((str(self.agent), self.port), timeout=10) as sock:
                lines = sock.makefile("rb")
                hello = lines.readline()
                if not hello:
                    raise UmlError(f"UML agent at {self.agent}:{self.port} closed the connection "
                                   "(it serves only the lab's host address)")
                try:
                    challenge = bytes.fromhex(json.loads(hello)["challenge"])
                except (ValueError, KeyError, TypeError):
                    raise UmlError(f"UML agent at {self.agent}:{self.port}: unexpected greeting "
                                   f"{hello[:80]!r}") from None
                sock.settimeout(None if timeout is None else timeout + 30)
                envelope = {"mac": agentauth.sign(self.key, challenge, text), "request": text}
                sock.sendall(json.dumps(envelope).encode() + b"\n")
                data = lines.readline()
        except OSError as exc:
            raise UmlError(f"UML agent at {self.agent}:{self.port} unreachable: {exc}") from None
        if not data:
            raise UmlError(f"UML agent at {self.agent}:{self.port} closed the connection")
        reply = json.loads(data)
        if not reply.get("ok"):
            raise UmlError(f"UML agent refused {request.get('op')}: {reply.get('error')}")
        return reply

    def ping(self) -> bool:
        try:
            self._call({"op": "ping"}, 5)
            return True
        except UmlError:
            return False

    def run(self, argv: Sequence[str], *, input: str | None = None,
            timeout: float | None = None, env: Mapping[str, str] | None = None) -> Result:
        reply = self._call({"op": "run", "argv": list(argv), "timeout": timeout,
                            "env": dict(env) if env else None,
                            "input": base64.b64encode(input.encode()).decode()
                            if input is not None else None}, timeout)
        return Result(tuple(argv), reply["returncode"],
                      base64.b64decode(reply["stdout"]).decode("utf-8", errors="replace"),
                      base64.b64decode(reply["stderr"]).decode("utf-8", errors="replace"))

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log: str | None = None) -> tuple[int, int]:
        reply = self._call({"op": "spawn", "argv": list(argv),
                            "env": dict(env) if env else None, "log": log}, 30)
        return reply["pid"], reply["start_time"]

    def alive(self, pid: int, start_time: int) -> bool:
        return self._call({"op": "alive", "pid": pid, "start_time": start_time}, 5)["alive"]

    def terminate(self, pid: int, start_time: int, *, grace: float = 5.0) -> bool:
        return self._call({"op": "terminate", "pid": pid, "start_time": start_time,
                           "grace": grace}, grace + 10)["was_running"]

    def http_get(self, netns: str, host: str, port: int, path: str,
                 timeout: float) -> tuple[int | None, str]:
        reply = self._call({"op": "http_get", "netns": netns, "host": host, "port": port,
                            "path": path, "timeout": timeout}, timeout + 5)
        return reply["status"], reply["error"]


def wait_for_agent(backend: UmlBackend, *, uml_alive, console_log: Path,
                   timeout: float = BOOT_TIMEOUT) -> None:
    """Block until the agent answers; raise with the console's tail if UML died or hung."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if backend.ping():
            return
        if not uml_alive():
            break
        time.sleep(0.2)
    tail = ""
    try:
        tail = "\n".join(console_log.read_text(errors="replace").splitlines()[-25:])
    except OSError:
        pass
    state = "exited" if not uml_alive() else f"did not answer within {timeout:.0f} s"
    raise UmlError(f"UML kernel {state}; last console lines ({console_log}):\n{tail}")


def uml_available() -> str | None:
    """None if UML can be booted here, else the reason."""
    if shutil.which(UML_BINARY) is None:
        return f"{UML_BINARY} not found (install the Debian package user-mode-linux)"
    try:
        uml_module_dir()
    except UmlError as exc:
        return str(exc)
    return None


def python_for_uml() -> str:
    """The interpreter (this venv's) the agent and lab processes use inside UML."""
    return os.path.abspath(sys.executable)
