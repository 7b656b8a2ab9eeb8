"""Structured logging output and the /livez /readyz /metrics server, over real HTTP."""
from __future__ import annotations

import io
import json
import logging
import re
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from calyx.logs import StructuredFormatter, configure_logging, get_logger, logfmt_value
from calyx.observability import Check, HealthServer, Heartbeat


@pytest.fixture
def captured():
    stream = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    configure_logging("debug", "logfmt", stream=stream)
    yield stream
    for h in [h for h in root.handlers if h.get_name() == "calyx-structured"]:
        root.removeHandler(h)
    root.setLevel(old_level)


def test_logfmt_line_has_timestamp_level_logger_event_and_fields(captured):
    get_logger("felix.routes").info("route added", dst="10.244.1.5/32", dev="cali1234567890a",
                                    reason="pod default/web-1 added")
    line = captured.getvalue().strip()
    assert re.fullmatch(
        r'ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info logger=felix\.routes event="route added" '
        r'dst=10\.244\.1\.5/32 dev=cali1234567890a reason="pod default/web-1 added"', line), line


def test_logfmt_quotes_and_escapes_awkward_values(captured):
    get_logger("t").warning("odd", empty="", quote='say "hi"', nl="a\nb", none=None, flag=True, n=3,
                            items=["a", "b"])
    line = captured.getvalue().strip()
    assert 'empty="" ' in line
    assert r'quote="say \"hi\""' in line
    assert r'nl="a\nb"' in line
    assert "none=null flag=true n=3 items=a,b" in line
    assert "\n" not in line
    assert logfmt_value("a=b") == '"a=b"'


def test_level_filtering_and_reconfigure_does_not_stack_handlers(captured):
    configure_logging("warning", "logfmt", stream=captured)
    log = get_logger("t")
    log.info("hidden")
    log.warning("shown")
    lines = captured.getvalue().strip().splitlines()
    assert len(lines) == 1 and 'event=shown' in lines[0]


def test_json_format_and_reserved_field_names(captured):
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    get_logger("bgpd.peers").error("peer down", peer="10.0.0.2", level="not-the-level")
    record = json.loads(stream.getvalue())
    assert record["level"] == "error" and record["logger"] == "bgpd.peers"
    assert record["event"] == "peer down" and record["peer"] == "10.0.0.2"
    assert record["field.level"] == "not-the-level"
    assert record["ts"].endswith("Z")


def test_exception_traceback_is_one_field(captured):
    try:
        raise KeyError("boom")
    except KeyError:
        get_logger("t").error("failed", exc_info=True)
    line = captured.getvalue().strip()
    assert "\n" not in line and "traceback=" in line and "KeyError" in line


def test_bad_format_and_level_are_refused():
    with pytest.raises(ValueError, match="log format 'xml'"):
        StructuredFormatter("xml")
    with pytest.raises(ValueError, match="log level 'loud'"):
        configure_logging("loud")


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode(), resp.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers["Content-Type"]


def test_health_server_endpoints_over_http():
    registry = CollectorRegistry()
    Counter("calyx_test_things", "things counted", registry=registry).inc(3)
    ready = {"ok": False}
    heartbeat = Heartbeat(max_age=60)
    server = HealthServer("127.0.0.1", 0, registry, liveness=heartbeat,
                          readiness=lambda: Check(ready["ok"], "" if ready["ok"] else "datastore not synced"))
    with server:
        assert server.port > 0
        status, body, _ = _get(server.url + "/livez")
        assert status == 200 and "ticked" in body
        status, body, _ = _get(server.url + "/readyz")
        assert status == 503 and "datastore not synced" in body
        ready["ok"] = True
        status, body, _ = _get(server.url + "/readyz")
        assert (status, body) == (200, "ok\n")
        status, body, ctype = _get(server.url + "/metrics")
        assert status == 200 and "calyx_test_things_total 3.0" in body and ctype.startswith("text/plain")
        status, _, _ = _get(server.url + "/nope")
        assert status == 404


def test_json_views_are_served_and_a_failing_view_answers_500():
    calls = {"n": 0}

    def status() -> dict:
        calls["n"] += 1
        return {"node": "n1", "peers": [{"peer_address": "10.0.0.2"}], "count": calls["n"]}

    def broken() -> dict:
        raise RuntimeError("state file unreadable")

    with HealthServer("127.0.0.1", 0, CollectorRegistry(), json_views={"/status": status, "/broken": broken}) as server:
        code, body, ctype = _get(server.url + "/status")
        assert code == 200 and ctype == "application/json"
        assert json.loads(body) == {"node": "n1", "peers": [{"peer_address": "10.0.0.2"}], "count": 1}
        code, body, _ = _get(server.url + "/status?x=1")
        assert code == 200 and json.loads(body)["count"] == 2          # asked afresh each time
        code, body, ctype = _get(server.url + "/broken")
        assert code == 500 and ctype == "application/json"
        assert json.loads(body) == {"error": "RuntimeError: state file unreadable"}
        code, body, _ = _get(server.url + "/nope")
        assert code == 404 and "/status" in body and "/broken" in body


def test_two_servers_keep_their_own_registries():
    first, second = CollectorRegistry(), CollectorRegistry()
    Counter("calyx_same_name", "a", registry=first).inc()
    Counter("calyx_same_name", "b", registry=second).inc(5)
    with HealthServer("127.0.0.1", 0, first) as a, HealthServer("127.0.0.1", 0, second) as b:
        assert "calyx_same_name_total 1.0" in _get(a.url + "/metrics")[1]
        assert "calyx_same_name_total 5.0" in _get(b.url + "/metrics")[1]


def test_stale_heartbeat_fails_liveness_and_a_raising_check_answers_503():
    now = [100.0]
    heartbeat = Heartbeat(max_age=10, clock=lambda: now[0])
    assert heartbeat().ok
    now[0] = 111.0
    check = heartbeat()
    assert not check.ok and "11.0s" in check.reason
    heartbeat.tick()
    assert heartbeat().ok

    def broken() -> Check:
        raise RuntimeError("no state yet")

    with HealthServer("127.0.0.1", 0, CollectorRegistry(), liveness=broken) as server:
        status, body, _ = _get(server.url + "/livez")
        assert status == 503 and "RuntimeError: no state yet" in body


def test_port_in_use_is_a_clear_error():
    with HealthServer("127.0.0.1", 0, CollectorRegistry()) as taken:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{taken.port}"):
            HealthServer("127.0.0.1", taken.port, CollectorRegistry()).start()


def test_health_server_binds_without_a_hostname_lookup(monkeypatch):
    """Binding must not resolve names: in a node namespace without DNS that stalls for seconds."""
    import socket
    import urllib.request

    from prometheus_client import CollectorRegistry

    from calyx.observability import HealthServer

    def no_lookup(*args, **kwargs):
        raise AssertionError("the health server looked up a hostname")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    server = HealthServer("127.0.0.1", 0, CollectorRegistry())
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/livez", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.stop()
