"""The pure parts of BFD: bfdd's control protocol, the desired-vs-actual session diff, when a
BFD state change tears a BGP session down, and which peers get BFD."""
from __future__ import annotations

import json
import struct
from ipaddress import IPv4Address, IPv4Interface

import pytest

from calyx.model import FAILURE_DETECTION_BFD, BGPConfiguration, BGPPeer, NodeInfo, Snapshot, ValidationError
from calyx import model

from bgpd.bfd import protocol
from bgpd.bfd.protocol import BfdPeer, BfdState, ConfigNotice, MessageType, StatusNotice
from bgpd.bfd.tracker import BfdTracker, desired_sessions, diff
from bgpd.peers import BfdSettings, peer_set

A, B, C = IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3"), IPv4Address("10.0.0.4")
ME = IPv4Address("10.0.0.1")


def spec(peer: IPv4Address, rx: int = 300) -> BfdPeer:
    return BfdPeer(peer=peer, local=ME, min_rx_ms=rx, min_tx_ms=300, multiplier=3)


def notify(payload: dict) -> bytes:
    return protocol.encode(MessageType.NOTIFY, 0, json.dumps(payload).encode())


def test_add_request_frames_json_behind_the_header():
    data = protocol.add_request(7, spec(A))
    length, id_, type_, version = struct.unpack("!IHBB", data[:8])
    assert (length, id_, type_, version) == (len(data) - 8, 7, MessageType.REQUEST_ADD, 1)
    assert json.loads(data[8:]) == {"ipv4": [{"peer-address": "10.0.0.2", "local-address": "10.0.0.1",
                                              "multihop": False, "receive-interval": 300,
                                              "transmit-interval": 300, "detect-multiplier": 3}]}


def test_shutdown_request_puts_the_session_admin_down():
    data = protocol.shutdown_request(9, spec(A))
    assert data[6] == MessageType.REQUEST_ADD
    assert json.loads(data[8:])["ipv4"][0]["shutdown"] is True


def test_subscribe_asks_for_state_and_configuration():
    data = protocol.subscribe(1)
    assert data[6] == MessageType.NOTIFY and struct.unpack("=Q", data[8:]) == (3,)


def test_decoder_reassembles_split_and_joined_messages():
    stream = (protocol.encode(MessageType.RESPONSE, 5, b'{"status":"ok"}')
              + notify({"op": "status", "peer-address": "10.0.0.2", "local-address": "10.0.0.1",
                        "state": "down", "diagnostics": 1, "remote-diagnostics": 0}))
    decoder = protocol.Decoder()
    messages = decoder.feed(stream[:5]) + decoder.feed(stream[5:30]) + decoder.feed(stream[30:])
    said = [protocol.interpret(m) for m in messages]
    assert said == [protocol.Response(id=5, ok=True, error=""),
                    StatusNotice(peer=A, local=ME, state=BfdState.DOWN, diagnostics=1, remote_diagnostics=0)]


def test_interpret_reads_configuration_notices_and_skips_ipv6():
    add = notify({"op": "add", "ipv6": False, "multihop": False, "peer-address": "10.0.0.3"})
    assert protocol.interpret(protocol.Decoder().feed(add)[0]) == ConfigNotice(op="add", peer=B, local=None)
    v6 = notify({"op": "status", "ipv6": True, "peer-address": "fe80::1", "state": "up"})
    assert protocol.interpret(protocol.Decoder().feed(v6)[0]) is None


@pytest.mark.parametrize("payload, problem", [
    (b"not json", "not JSON"),
    (json.dumps({"op": "status", "peer-address": "10.0.0.2", "state": "sideways"}).encode(), "sideways"),
    (json.dumps({"op": "status", "state": "up"}).encode(), "without peer-address"),
])
def test_interpret_names_what_it_cannot_read(payload, problem):
    message = protocol.Decoder().feed(protocol.encode(MessageType.NOTIFY, 0, payload))[0]
    with pytest.raises(protocol.ProtocolError, match=problem):
        protocol.interpret(message)


def test_decoder_refuses_another_version():
    with pytest.raises(protocol.ProtocolError, match="version 2"):
        protocol.Decoder().feed(struct.pack("!IHBB", 2, 0, 4, 2) + b"{}")


def test_diff_adds_missing_and_changed_deletes_unwanted_and_stale_local():
    desired = {A: spec(A), B: spec(B, rx=100)}
    requested = {B: spec(B)}
    known = {B: ME, C: ME, A: IPv4Address("10.9.9.9")}
    wanted = diff(desired, requested, known)
    assert wanted.adds == (spec(A), spec(B, rx=100))
    assert wanted.deletes == ((A, IPv4Address("10.9.9.9")), (C, ME))
    assert not diff(desired, desired, {A: ME, B: ME})


def _status(peer, state, diag=0, remote=0):
    return StatusNotice(peer=peer, local=ME, state=state, diagnostics=diag, remote_diagnostics=remote)


def test_tracker_tears_down_only_after_up_then_down():
    t = BfdTracker()
    t.desired = {A: spec(A)}
    t.channel_up()
    assert t.requests().adds == (spec(A),)
    assert not t.requests(), "nothing asked twice"
    assert t.notice(_status(A, BfdState.DOWN)) is None, "a fresh session starts down"
    assert t.notice(_status(A, BfdState.INIT)) is None
    assert t.notice(_status(A, BfdState.UP)) is None and t.state(A) == "up"
    down = t.notice(_status(A, BfdState.DOWN, diag=1))
    assert down is not None and down.peer == A and "control detection time expired" in down.reason
    assert t.info(A) == "BFD down (control detection time expired)"
    assert t.notice(_status(A, BfdState.DOWN, diag=1)) is None, "once per fall"


@pytest.mark.parametrize("diag, remote", [(3, 0), (3, protocol.DIAG_ADMIN_DOWN), (1, protocol.DIAG_ADMIN_DOWN)])
def test_tracker_keeps_the_session_when_the_peer_signals_down_itself(diag, remote):
    """bfdd reports a peer's AdminDown as Down with diagnostic 3 (neighbor signaled down)."""
    t = BfdTracker()
    t.desired = {A: spec(A)}
    t.channel_up()
    t.notice(_status(A, BfdState.UP))
    assert t.notice(_status(A, BfdState.DOWN, diag=diag, remote=remote)) is None


def test_tracker_forgets_up_when_the_channel_drops_and_adopts_what_bfdd_reports():
    t = BfdTracker()
    t.desired = {A: spec(A)}
    t.channel_up()
    t.notice(_status(A, BfdState.UP))
    t.channel_down()
    assert t.state(A) == "unknown" and not t.requests()
    t.channel_up()      # a restarted bfdd (or bgpd) reports what it has
    t.notice(ConfigNotice(op="add", peer=C, local=ME))
    t.notice(_status(A, BfdState.DOWN))
    assert t.notice(_status(A, BfdState.DOWN)) is None
    wanted = t.requests()
    assert wanted.adds == (spec(A),) and wanted.deletes == ((C, ME),)
    t.notice(ConfigNotice(op="delete", peer=A, local=ME))
    assert t.requests().adds == (spec(A),), "deleted behind our back: added again"


def _snapshot(mode_mesh: str = "None", peers: dict | None = None, prefix: int = 24) -> Snapshot:
    nodes = {n: NodeInfo(name=n, bgp_address=IPv4Interface(f"10.0.0.{i}/{prefix}")) for i, n in ((1, "a"), (2, "b"))}
    return Snapshot(nodes=nodes, bgp_peers=peers or {},
                    bgp_configuration=BGPConfiguration(node_mesh_failure_detection_mode=mode_mesh,
                                                       bfd_minimum_recv_interval=0.1, bfd_multiplier=5))


def test_mesh_peers_in_the_subnet_get_bfd_with_the_configured_timers():
    peers = peer_set(_snapshot(FAILURE_DETECTION_BFD), "a")
    assert peers[A].bfd == BfdSettings(local_address=ME, min_rx_ms=100, min_tx_ms=300, multiplier=5)
    assert desired_sessions(peers) == {A: BfdPeer(peer=A, local=ME, min_rx_ms=100, min_tx_ms=300, multiplier=5)}
    assert peer_set(_snapshot(), "a")[A].bfd is None


def test_a_peer_outside_the_subnet_gets_no_bfd_and_says_why():
    far = BGPPeer(name="far", peer_ip=IPv4Address("192.0.2.1"), as_number=65001,
                  failure_detection_mode=FAILURE_DETECTION_BFD)
    peers = peer_set(_snapshot(peers={"far": far}), "a")
    assert peers[IPv4Address("192.0.2.1")].bfd is None
    assert "not directly connected" in peers[IPv4Address("192.0.2.1")].bfd_info
    assert peer_set(_snapshot(FAILURE_DETECTION_BFD, prefix=32), "a")[A].bfd is None, "subnet unknown"


def _schemas():
    from pathlib import Path
    from calyx import crds
    return crds.spec_schemas(Path(__file__).resolve().parents[2] / "charts" / "calyx" / "crds")


@pytest.mark.parametrize("field, value, problem", [
    ("bfdMinimumRecvInterval", "5ms", "between 10ms and 60s"),
    ("bfdMinimumSendInterval", "1500us", "whole number of milliseconds"),
    ("bfdMinimumRecvInterval", "fast", "pattern"),
    ("bfdMultiplier", 0, "between 1 and 255"),
    ("nodeMeshFailureDetectionMode", "Always", "must be one of"),
])
def test_bad_bfd_settings_name_object_field_and_value(field, value, problem):
    obj = {"metadata": {"name": "default"}, "spec": {field: value}}
    with pytest.raises(ValidationError) as err:
        model.parse_bgp_configuration(obj, _schemas())
    assert err.value.field_path == f"spec.{field}" and err.value.value == value
    assert problem in str(err.value)


def test_bfd_settings_parse():
    config = model.parse_bgp_configuration({"metadata": {"name": "default"}, "spec": {
        "bfdMinimumRecvInterval": "100ms", "bfdMultiplier": 4,
        "nodeMeshFailureDetectionMode": "BFDIfDirectlyConnected"}}, _schemas())
    assert (config.bfd_minimum_recv_interval, config.bfd_minimum_send_interval, config.bfd_multiplier,
            config.node_mesh_failure_detection_mode) == (0.1, 0.3, 4, FAILURE_DETECTION_BFD)
    peer = model.parse_bgp_peer({"metadata": {"name": "tor"}, "spec": {
        "peerIP": "10.0.0.9", "asNumber": 65001, "failureDetectionMode": "BFDIfDirectlyConnected"}}, _schemas())
    assert peer.failure_detection_mode == FAILURE_DETECTION_BFD
    with pytest.raises(ValidationError, match="failureDetectionMode"):
        model.parse_bgp_peer({"metadata": {"name": "tor"}, "spec": {
            "peerIP": "10.0.0.9", "asNumber": 65001, "failureDetectionMode": "BFD"}}, _schemas())


def test_status_rows_and_metrics_show_bfd():
    from bgpd.metrics import SpeakerMetrics
    from bgpd.rib import Rib
    from bgpd.session import Session
    from bgpd.status import session_rows
    peers = peer_set(_snapshot(FAILURE_DETECTION_BFD), "a")
    t = BfdTracker()
    t.set_peers(peers)
    t.channel_up()
    t.notice(_status(A, BfdState.UP))
    t.notice(_status(A, BfdState.DOWN, diag=1))
    rows = session_rows({A: Session(peer=peers[A], state="Active", info="BFD down (control detection time expired)")},
                        Rib(), t.state, t.info)
    assert rows[0]["bfd"] == "down"
    assert rows[0]["info"] == "BFD down (control detection time expired)", "said once"
    metrics = SpeakerMetrics()
    metrics.observe(rows)
    assert metrics.registry.get_sample_value("bgpd_bfd_state", {"peer": str(A)}) == 1
    metrics.observe([{**rows[0], "bfd": ""}])
    assert metrics.registry.get_sample_value("bgpd_bfd_state", {"peer": str(A)}) is None, "no BFD, no series"
