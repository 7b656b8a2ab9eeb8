"""Sending the probe of ``calyxctl trace --probe``: one ICMP echo request from inside a local
pod's network namespace, with the pod's address as source, so it leaves the pod as the pod's own
traffic would (through its routes, its veth, NetworkPolicy, the node's forwarding).

The pod's namespace is found from its host-side veth (``cali...``, in felix's namespace): the
veth's peer lives in a namespace this namespace knows by a netns id (``IFLA_LINK_NETNSID``).
Candidate namespace files are asked for their id (RTM_GETNSID by file descriptor) until one
matches: the files under ``/run/netns`` and ``/var/run/netns`` (where containerd, CRI-O and
``ip netns`` pin pod namespaces), then ``/proc/*/ns/net`` (a pod's pause process, when felix
sees the host's processes). Entering it needs CAP_SYS_ADMIN, the raw socket CAP_NET_RAW.
"""
from __future__ import annotations

import errno
import glob
import os
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Callable, Iterable, Iterator

from pyroute2 import IPRoute

from felix.netnsthread import call_in_netns
from felix.probepackets import echo_request

NETNS_DIRS = ("/run/netns", "/var/run/netns")
PROC = "/proc"
NSID_NOT_ASSIGNED = -1


class ProbeSendError(Exception):
    """The probe could not be sent; ``status`` is the HTTP status that says why (404: nothing
    to send from, 409: the pod's namespace does not match felix's view, 503: felix lacks a
    capability or the kernel refused)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class NamespaceSearch:
    """Where pod network namespaces are looked for (a seam for tests and unusual nodes)."""

    dirs: tuple[str, ...] = NETNS_DIRS
    proc: str | None = PROC

    def candidates(self) -> Iterator[str]:
        """Namespace files, each namespace once (same device and inode: same namespace)."""
        seen: set[tuple[int, int]] = set()
        paths: list[Iterable[str]] = [sorted(glob.glob(os.path.join(d, "*"))) for d in self.dirs]
        if self.proc is not None:
            paths.append(glob.iglob(os.path.join(self.proc, "[0-9]*", "ns", "net")))
        for group in paths:
            for path in group:
                try:
                    st = os.stat(path)
                except OSError:
                    continue        # a process that ended, a file being removed
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    yield path


def peer_netnsid(ipr: IPRoute, host_ifname: str) -> int:
    """The netns id (as this namespace knows it) of the namespace holding ``host_ifname``'s peer."""
    indices = ipr.link_lookup(ifname=host_ifname)
    if not indices:
        raise ProbeSendError(f"no device {host_ifname} on this node", 404)
    (link,) = ipr.get_links(indices[0])
    nsid = link.get_attr("IFLA_LINK_NETNSID")
    if nsid is None:
        raise ProbeSendError(f"{host_ifname} has no peer in another network namespace", 409)
    return int(nsid)


def find_pod_netns(host_ifname: str, search: NamespaceSearch = NamespaceSearch()) -> str:
    """The path of a file naming the network namespace at the far end of ``host_ifname``."""
    with IPRoute() as ipr:
        nsid = peer_netnsid(ipr, host_ifname)
        for path in search.candidates():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                answer = ipr.get_netnsid(fd=fd)
            except Exception:   # noqa: BLE001 - not a namespace file, or one gone meanwhile
                continue
            finally:
                os.close(fd)
            if answer and answer.get("nsid") == nsid:
                return path
    where = ", ".join(search.dirs + ((f"{search.proc}/*/ns/net",) if search.proc else ()))
    raise ProbeSendError(f"the network namespace of {host_ifname}'s peer (netns id {nsid}) is not among {where}; "
                         f"felix needs the host's /run/netns (or the host's processes) to find it", 404)


def send_echo(netns: str, src: IPv4Address, dst: IPv4Address, probe_id: bytes) -> None:
    """One ICMP echo request ``src`` -> ``dst`` carrying ``probe_id``, sent from a raw ICMP socket
    created in ``netns`` (a path or a name under /run/netns) and bound to ``src``."""
    def make() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        sock = call_in_netns(netns, make)
    except FileNotFoundError:
        raise ProbeSendError(f"network namespace {netns} is gone", 404) from None
    except PermissionError as exc:
        raise ProbeSendError(f"cannot open a raw ICMP socket in {netns}: {exc.strerror or exc} "
                             f"(felix needs CAP_SYS_ADMIN and CAP_NET_RAW)", 503) from None
    with sock:
        try:
            sock.bind((str(src), 0))
        except OSError as exc:
            status = 409 if exc.errno == errno.EADDRNOTAVAIL else 503
            raise ProbeSendError(f"{src} is not an address of the pod's namespace {netns}: {exc.strerror}",
                                 status) from None
        try:
            sock.sendto(echo_request(probe_id, ident=int.from_bytes(probe_id[:2], "big")), (str(dst), 0))
        except OSError as exc:
            raise ProbeSendError(f"the pod's namespace refused to send to {dst}: {exc.strerror}", 503) from None


Sender = Callable[[str, IPv4Address, IPv4Address, bytes], None]
"""Sends the probe from the pod behind a host-side veth: (veth, source, destination, probe id)."""


def send_from_pod(host_ifname: str, src: IPv4Address, dst: IPv4Address, probe_id: bytes,
                  search: NamespaceSearch = NamespaceSearch()) -> None:
    """The probe sent from the namespace at the far end of ``host_ifname`` (a :data:`Sender`)."""
    send_echo(find_pod_netns(host_ifname, search), src, dst, probe_id)
