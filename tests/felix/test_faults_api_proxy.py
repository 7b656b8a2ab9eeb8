"""felix behind a misbehaving API: a proxy in front of the real kube-apiserver answers every
request with 500 for a while, then accepts requests and never answers them. felix keeps every
route it programmed, writes nothing, stays live, and follows the API once it answers again."""
from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import pytest
import yaml

from calyxlab.controlplane.kubeconfig import SERVER_NAME
from calyxlab.faultproxy import FaultProxy, Mode, Serving, Upstream
from felixtest_support import ROUTED_PODS, RUNNING_PODS, Bed, routes_once_web1_is_gone, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.fault]

FAULT_S = 10.0


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def proxied(bed: Bed, directory: Path) -> tuple[FaultProxy, Path]:
    """A fault proxy on the bed's API address, and a copy of felix's kubeconfig dialing it; the
    proxy speaks to the API with felix's own identity."""
    config = yaml.safe_load(bed.kubeconfig.read_text())
    user = config["users"][0]["user"]
    for name, key in (("client.crt", "client-certificate-data"), ("client.key", "client-key-data")):
        (directory / name).write_bytes(base64.b64decode(user[key]))
        (directory / name).chmod(0o600)
    pki = bed.kube.control_plane.pki
    port = free_port(bed.host_ip)
    proxy = FaultProxy(Serving(bed.host_ip, port, pki.dir / "apiserver.crt", pki.dir / "apiserver.key"),
                       Upstream(f"https://127.0.0.1:{bed.kube.port}", pki.ca.cert, directory / "client.crt",
                                directory / "client.key", SERVER_NAME))
    config["clusters"][0]["cluster"]["server"] = f"https://{bed.host_ip}:{port}"
    kubeconfig = directory / "via-proxy.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    kubeconfig.chmod(0o600)
    return proxy, kubeconfig


def test_api_errors_and_timeouts_leave_every_route(bed: Bed, tmp_path: Path, fault_record) -> None:
    bed.create_node()
    bed.put_pool()
    for pod, pod_ip in ROUTED_PODS.items():
        bed.add_pod_link(pod)
        bed.create_pod(pod, pod_ip)
    residents = {pod: bed.add_running_pod(pod, pod_ip) for pod, pod_ip in RUNNING_PODS.items()}
    proxy, kubeconfig = proxied(bed, tmp_path)
    with proxy:
        felix = bed.start_felix(KUBECONFIG=str(kubeconfig))
        bed.wait_ready(felix)
        wait_for("routes", lambda: len(bed.felix_routes()) == 3 + len(RUNNING_PODS))
        programmed = sorted(bed.felix_routes())
        writes = bed.metric("felix_netlink_writes_total")
        with fault_record.case(f"the API answers 500 for {FAULT_S:.0f} s, then never answers for {FAULT_S:.0f} s",
                               "every route kept, 0 writes, live, 0 lost; follows the API after") as case:
            with bed.pings(residents) as pings:
                for mode in (Mode.ERROR, Mode.HANG):
                    proxy.set_mode(mode)
                    if mode is Mode.ERROR:
                        bed.delete_pod("web-1")            # felix cannot learn this through the proxy
                    until = time.monotonic() + FAULT_S
                    while time.monotonic() < until:
                        assert sorted(bed.felix_routes()) == programmed, f"routes changed under {mode.value}"
                        assert bed.http("/livez")[0] == 200, f"felix not live under {mode.value}"
                        time.sleep(2)
                    assert proxy.requests[mode] > 0, f"felix never met the {mode.value} fault"
                case.route_writes = int(bed.metric("felix_netlink_writes_total") - writes)
                assert case.route_writes == 0
                proxy.set_mode(Mode.PASS)
                healed = time.monotonic()
                wait_for("web-1's route removed once the API answers",
                         lambda: set(bed.felix_routes()) == routes_once_web1_is_gone(),
                         timeout=90)
                case.recovery_s = time.monotonic() - healed
            pings.record(case)
            case.detail = f"{proxy.requests[Mode.ERROR]} requests answered 500, {proxy.requests[Mode.HANG]} left hanging"
