"""felix.probeview: the probe endpoints with the capture, the sending and the local pods faked:
parameters, the one-probe-at-a-time gate (429), errors naming the pod, and the answers' shape."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from ipaddress import IPv4Address
from typing import Callable

import pytest
from prometheus_client import CollectorRegistry

from calyx import model
from calyx.naming import cali_interface_name
from calyx.observability import HealthServer
from felix.probepackets import ProbePacket, Sighting
from felix.probesend import ProbeSendError
from felix.probeview import ProbeEndpoints, local_pod_addresses

PROBE = "0123456789abcdef"
POD_IP = IPv4Address("10.244.1.2")
DST = IPv4Address("10.244.2.3")
SIGHTING = Sighting("cali1", "in", ProbePacket(bytes.fromhex(PROBE), "echo-request", POD_IP, DST), 0.01)


class FakeCapture:
    """Arms at once, then waits until released (or ``seconds``) and answers SIGHTING."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[bytes, float]] = []

    def __call__(self, probe_id: bytes, seconds: float, on_armed: Callable[[], None]) -> list[Sighting]:
        self.calls.append((probe_id, seconds))
        on_armed()
        self.release.wait(seconds)
        return [SIGHTING]


class FakeSender:
    def __init__(self, error: ProbeSendError | None = None) -> None:
        self.sent: list[tuple[str, IPv4Address, IPv4Address, bytes]] = []
        self.error = error

    def __call__(self, veth: str, src: IPv4Address, dst: IPv4Address, probe_id: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((veth, src, dst, probe_id))


def endpoints(capture: FakeCapture | None = None, sender: FakeSender | None = None) -> ProbeEndpoints:
    return ProbeEndpoints("node-a", lambda: {"default/client": POD_IP}, capture or FakeCapture(),
                          sender or FakeSender(), arm_wait=1.0)


def q(**params: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in params.items()}


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


def test_watch_answers_the_sightings() -> None:
    capture = FakeCapture()
    capture.release.set()
    status, body = endpoints(capture).watch(q(id=PROBE, seconds="2"))
    assert status == 200
    assert body == {"node": "node-a", "id": PROBE, "seconds": 2.0, "sightings": [SIGHTING.to_json()]}
    assert capture.calls == [(bytes.fromhex(PROBE), 2.0)]


def test_watch_defaults_to_3_seconds() -> None:
    capture = FakeCapture()
    capture.release.set()
    endpoints(capture).watch(q(id=PROBE))
    assert capture.calls[0][1] == 3.0


@pytest.mark.parametrize("params,fragment", [
    (q(id="xyz"), "16 hex digits"), (q(), "16 hex digits"), (q(id=PROBE, seconds="6"), "at most 5"),
    (q(id=PROBE, seconds="0"), "more than 0"), (q(id=PROBE, seconds="soon"), "soon"),
])
def test_watch_refuses_bad_parameters(params: dict[str, list[str]], fragment: str) -> None:
    status, body = endpoints().watch(params)
    assert status == 400 and fragment in body["error"]


def test_a_second_probe_meanwhile_gets_429_and_the_gate_reopens_after() -> None:
    capture = FakeCapture()
    view = endpoints(capture)
    thread, out = in_thread(lambda: view.watch(q(id=PROBE, seconds="5")))
    try:
        assert _wait(lambda: view.armed(q(id=PROBE))[1]["armed"])
        status, body = view.watch(q(id="ffffffffffffffff"))
        assert status == 429 and PROBE in body["error"]
        status, body = view.send(q(pod="default/client", dst=str(DST), id="ffffffffffffffff"))
        assert status == 429
        assert view.armed(q(id="ffffffffffffffff"))[1]["armed"] is False
    finally:
        capture.release.set()
        thread.join()
    assert out[0][0] == 200
    assert view.armed(q(id=PROBE))[1]["armed"] is False
    assert view.watch(q(id="ffffffffffffffff"))[0] == 200


def test_send_joins_this_nodes_watch_of_the_same_probe_once() -> None:
    capture, sender = FakeCapture(), FakeSender()
    view = endpoints(capture, sender)
    thread, out = in_thread(lambda: view.watch(q(id=PROBE, seconds="5")))
    try:
        status, body = view.send(q(pod="default/client", dst=str(DST), id=PROBE))
        assert status == 200
        assert body == {"sent": True, "node": "node-a", "pod": "default/client", "src": str(POD_IP),
                        "dst": str(DST), "id": PROBE}
        status, body = view.send(q(pod="default/client", dst=str(DST), id=PROBE))
        assert status == 429 and "sent already" in body["error"]
    finally:
        capture.release.set()
        thread.join()
    assert sender.sent == [(cali_interface_name("default", "client"), POD_IP, DST, bytes.fromhex(PROBE))]


def test_send_without_a_watch_holds_the_gate_only_while_sending() -> None:
    sender = FakeSender()
    view = endpoints(sender=sender)
    assert view.send(q(pod="default/client", dst=str(DST), id=PROBE))[0] == 200
    assert view.send(q(pod="default/client", dst=str(DST), id="ffffffffffffffff"))[0] == 200
    assert len(sender.sent) == 2


@pytest.mark.parametrize("params,status,fragment", [
    (q(pod="default/elsewhere", dst=str(DST), id=PROBE), 404, "pod default/elsewhere is not a pod with an address "
                                                             "on node node-a"),
    (q(pod="client", dst=str(DST), id=PROBE), 400, "NAMESPACE/NAME"),
    (q(pod="default/client", dst="10.1", id=PROBE), 400, "10.1"),
    (q(pod="default/client", dst=str(DST), id="12"), 400, "16 hex digits"),
])
def test_send_refuses(params: dict[str, list[str]], status: int, fragment: str) -> None:
    sender = FakeSender()
    answer = endpoints(sender=sender).send(params)
    assert answer[0] == status and fragment in answer[1]["error"]
    assert sender.sent == []


def test_send_errors_name_the_pod_and_keep_their_status() -> None:
    view = endpoints(sender=FakeSender(ProbeSendError("no device cali123 on this node", 404)))
    status, body = view.send(q(pod="default/client", dst=str(DST), id=PROBE))
    assert (status, body) == (404, {"error": "pod default/client: no device cali123 on this node"})
    assert view.send(q(pod="default/client", dst=str(DST), id=PROBE))[0] == 404   # the gate was released


def test_a_capture_without_the_capability_is_503() -> None:
    def refuse(probe_id: bytes, seconds: float, on_armed: Callable[[], None]) -> list[Sighting]:
        raise PermissionError(1, "Operation not permitted")
    view = ProbeEndpoints("node-a", dict, refuse, FakeSender())
    status, body = view.watch(q(id=PROBE))
    assert status == 503 and "CAP_NET_RAW" in body["error"]
    assert view.watch(q(id=PROBE))[0] == 503        # released: not 429


def test_local_pods_are_this_nodes_pods_with_an_address() -> None:
    pods = [model.PodInfo("default", "a", "node-a", (POD_IP,)),
            model.PodInfo("default", "b", "node-b", (DST,)),
            model.PodInfo("default", "pending", "node-a"),
            model.PodInfo("kube-system", "hostnet", "node-a", (IPv4Address("10.0.1.11"),), host_network=True)]
    snapshot = model.Snapshot(pods={p.key: p for p in pods})
    assert local_pod_addresses(snapshot, "node-a") == {"default/a": POD_IP}


def test_served_on_the_health_port_with_429_for_a_concurrent_probe() -> None:
    capture = FakeCapture()
    view = endpoints(capture)
    with HealthServer("127.0.0.1", 0, CollectorRegistry(), handlers=view.handlers()) as server:
        thread, out = in_thread(lambda: _get(f"{server.url}/v1/probe/watch?id={PROBE}&seconds=5"))
        try:
            assert _wait(lambda: _get(f"{server.url}/v1/probe/armed?id={PROBE}")[1]["armed"])
            status, body = _get(f"{server.url}/v1/probe/watch?id=ffffffffffffffff")
            assert status == 429 and "another probe" in body["error"]
        finally:
            capture.release.set()
            thread.join()
    assert out[0] == (200, {"node": "node-a", "id": PROBE, "seconds": 5.0, "sightings": [SIGHTING.to_json()]})


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    done = threading.Event()
    deadline = 0.0
    while deadline < timeout:
        if predicate():
            return True
        done.wait(0.02)
        deadline += 0.02
    return False


def test_probes_off_every_endpoint_refuses_naming_the_chart_value() -> None:
    capture, sender = FakeCapture(), FakeSender()
    view = ProbeEndpoints("node-a", lambda: {"default/client": POD_IP}, capture, sender, enabled=False)
    for path, handler in view.handlers().items():
        status, body = handler(q(id="00" * 8, pod="default/client", dst="10.244.2.7"))
        assert status == 403 and "felix.packetProbe: true" in body["error"] and "node-a" in body["error"], path
    assert not capture.calls and not sender.sent
