"""bgpd's log level follows BGPConfiguration logSeverityScreen while it runs (bgpd.loglevel),
through calyx.logs.set_level, which changes the level of a configured process in place."""
from __future__ import annotations

import io
import logging

import pytest

from calyx import logs
from calyx.model import BGPConfiguration

from bgpd.loglevel import SEVERITY_LEVELS, LogLevelFollower, wanted_level


@pytest.mark.parametrize("severity,level", [("Debug", "debug"), ("Info", "info"), ("Warning", "warning"),
                                            ("Error", "error"), ("Fatal", "critical")])
def test_each_severity_is_a_level(severity: str, level: str) -> None:
    assert wanted_level(BGPConfiguration(log_severity_screen=severity), "debug") == level


def test_every_value_of_the_crd_enum_has_a_level() -> None:
    from calyx.crds import spec_schemas
    enum = spec_schemas().spec_schema("BGPConfiguration")["properties"]["logSeverityScreen"]["enum"]
    assert sorted(enum) == sorted(SEVERITY_LEVELS)


def test_without_a_default_object_bgpds_own_setting_holds() -> None:
    assert wanted_level(BGPConfiguration(), "WARNING") == "warning"


@pytest.fixture
def captured():
    """The process's logging configured into a buffer, restored afterwards."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    stream = io.StringIO()
    logs.configure_logging("info", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[1]:
        root.addHandler(handler)
    root.setLevel(saved[0])


def test_follower_changes_the_running_level_and_says_so(captured: io.StringIO) -> None:
    probe = logs.get_logger("bgpd.probe")
    follower = LogLevelFollower("info", logs.set_level)
    probe.debug("before")
    assert not follower.follow(BGPConfiguration(log_severity_screen="Info"))   # no change, no line
    assert follower.follow(BGPConfiguration(log_severity_screen="Debug"))
    assert logs.current_level() == "debug"
    probe.debug("after")
    assert follower.follow(BGPConfiguration(log_severity_screen="Error"))
    probe.warning("hidden")
    probe.error("shown")
    assert follower.follow(BGPConfiguration())                                  # object gone
    assert logs.current_level() == "info"
    lines = captured.getvalue().splitlines()
    events = [line.split("event=")[1].split(" ")[0] for line in lines]
    assert events == ["log_level_changed", "after", "log_level_changed", "shown", "log_level_changed"]
    assert "previous=info now=debug" in lines[0] and "logSeverityScreen=Debug" in lines[0]
    assert 'why="no BGPConfiguration default' in lines[4]


def test_fatal_writes_nothing_below_critical(captured: io.StringIO) -> None:
    LogLevelFollower("info", logs.set_level).follow(BGPConfiguration(log_severity_screen="Fatal"))
    logs.get_logger("bgpd.probe").error("hidden")
    assert "hidden" not in captured.getvalue() and logs.current_level() == "critical"


def test_set_level_refuses_an_unknown_level() -> None:
    with pytest.raises(ValueError, match="log level 'verbose'"):
        logs.set_level("verbose")
