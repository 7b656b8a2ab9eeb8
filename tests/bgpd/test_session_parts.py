"""Small parts of a session's story: NOTIFICATIONs in words, MD5 hints from kernel counters,
graceful-restart staleness."""
from __future__ import annotations

from ipaddress import IPv4Address as A, IPv4Network as N

from bgpd.md5 import MISMATCH_HINT, UNEXPECTED_HINT, Md5Diagnosis
from bgpd.peers import Peer, PeerType
from bgpd.session import Session, describe_down_reason, describe_notification


def test_notifications_read_as_words() -> None:
    assert describe_notification(6, 1) == "cease (maximum number of prefixes reached)"
    assert describe_notification(4, 0) == "hold timer expired subcode 0"
    assert describe_notification(9, 2) == "code 9 subcode 2"


def test_md5_hints_follow_the_growth_of_the_counters_not_their_level() -> None:
    md5 = Md5Diagnosis()
    md5.observe({"TCPMD5Failure": 7, "TCPMD5NotFound": 0, "TCPMD5Unexpected": 3})
    assert md5.hint(True) is None and md5.hint(False) is None        # first reading: no growth yet
    md5.observe({"TCPMD5Failure": 9, "TCPMD5NotFound": 0, "TCPMD5Unexpected": 3})
    assert md5.hint(True) == MISMATCH_HINT and md5.hint(False) is None
    md5.observe({"TCPMD5Failure": 9, "TCPMD5NotFound": 0, "TCPMD5Unexpected": 4})
    assert md5.hint(False) == UNEXPECTED_HINT and md5.hint(True) is None
    md5.observe({})                                                    # no namespace to read
    assert md5.hint(True) is None


def test_stale_prefixes_are_those_not_sent_again() -> None:
    peer = Peer(address=A("10.0.0.2"), peer_as=64512, local_address=A("10.0.0.1"), local_as=64512,
                peer_type=PeerType.MESH, source="node-to-node mesh")
    s = Session(peer=peer, received={N("10.1.0.0/26"): None, N("10.1.0.64/26"): None},
                refreshed={N("10.1.0.64/26")})
    assert s.stale_prefixes() == [N("10.1.0.0/26")]
    assert not s.established


def test_a_notification_exabgp_sent_reads_in_words() -> None:
    assert describe_down_reason("notification sent (3,1)") == "NOTIFICATION sent: UPDATE message error subcode 1"
    assert describe_down_reason("notification sent (6,4)") == "NOTIFICATION sent: cease (administrative reset)"
    assert describe_down_reason("hold timer expired") == "hold timer expired"
