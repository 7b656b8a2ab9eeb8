"""Pods for the fault cases' traffic outside a lab's own pods: :func:`wire_pod` wires a pod's
namespace to its node as the CNI plugin does, and :class:`NetnsPingMatrix` pings between pods
given by their namespaces, every ordered pair every 50 ms, counting packets sent and lost as
:class:`calyxlab.traffic.PingMatrix` does for a lab's pods. Pings run by PID and are stopped by
PID (SIGINT: ping prints its summary)."""
from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from calyx.cni import netsetup
from calyxlab.traffic import count_lost
from felix.netnsthread import call_in_netns


@dataclass(frozen=True)
class PodEnd:
    """A pod as the pings see it: its network namespace (a name under /run/netns) and address."""

    netns: str
    ip: str


def wire_pod(node_netns: str, pod_netns: str, host_ifname: str, address: str, mtu: int) -> PodEnd:
    """The pod in ``pod_netns`` (a name under /run/netns) wired to the node in ``node_netns`` by
    the CNI plugin's own code (:func:`calyx.cni.netsetup.setup`: the cali veth, the pod's /32 and
    gateway, the node's route to it), the node forwarding between its pods."""
    subprocess.run(["ip", "netns", "exec", node_netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    link = netsetup.PodLink(host_ifname=host_ifname, pod_ifname="eth0", netns=f"/run/netns/{pod_netns}",
                            address=IPv4Address(address), mtu=mtu)
    call_in_netns(node_netns, lambda: netsetup.setup(link))
    return PodEnd(pod_netns, address)


class NetnsPingMatrix:
    def __init__(self, pods: dict[str, PodEnd], workdir: Path, interval: float = 0.05) -> None:
        self.pods, self.workdir, self.interval = pods, workdir, interval
        self._pings: list[tuple[str, subprocess.Popen, Path]] = []
        self.sent = self.lost = 0

    def __enter__(self) -> "NetnsPingMatrix":
        try:
            for src, a in self.pods.items():
                for dst, b in self.pods.items():
                    if src != dst:
                        out = self.workdir / f"ping-{src}-{dst}.out"
                        with open(out, "w") as sink:
                            proc = subprocess.Popen(["ip", "netns", "exec", a.netns, "ping", "-n", "-i",
                                                     str(self.interval), "-W", "1", b.ip],
                                                    stdout=sink, stderr=subprocess.STDOUT)
                        self._pings.append((f"{src} -> {dst}", proc, out))
            deadline = time.monotonic() + 30
            while not all("bytes from" in out.read_text() for _, _, out in self._pings):
                if time.monotonic() > deadline:
                    silent = [what for what, _, out in self._pings if "bytes from" not in out.read_text()]
                    raise AssertionError(f"no reply within 30 s: {', '.join(silent)}")
                time.sleep(0.2)
        except BaseException:
            self._stop(count=False)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for what, sent, lost in self._stop():
            self.sent, self.lost = self.sent + sent, self.lost + lost
            print(f"continuous ping {what} every {self.interval * 1000:.0f} ms: {sent} sent, {lost} lost")

    def record(self, case) -> None:
        """Lost of sent into a fault case's row (:mod:`faultreport`); none may be lost."""
        case.packets(self.lost, self.sent)
        assert self.lost == 0, f"the running pods lost {self.lost} of {self.sent} pings"

    def _stop(self, count: bool = True) -> list[tuple[str, int, int]]:
        for _, proc, _ in self._pings:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)     # ping prints its summary and exits
        counts = []
        for what, proc, out in self._pings:
            proc.wait(timeout=30)
            if count:
                counts.append((what, *count_lost(out.read_text())))
        self._pings.clear()
        return counts
