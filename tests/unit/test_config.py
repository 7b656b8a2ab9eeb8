"""Daemon configuration: flags > env > file > defaults, per-daemon fields, clear errors."""
from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from calyx.config import ConfigError, DaemonConfig, load_config, setting


@dataclasses.dataclass(frozen=True)
class ExampleDaemonConfig(DaemonConfig):
    refresh_interval: float = setting(90.0, env="EXAMPLE_REFRESH_INTERVAL", help="seconds between full resyncs")
    ipip_enabled: bool = setting(True, env="EXAMPLE_IPIP_ENABLED", help="manage tunl0")
    mtu: int | None = setting(None, env="EXAMPLE_MTU", help="pod MTU; unset: derived")


def test_defaults_without_any_source():
    cfg = load_config(ExampleDaemonConfig, [], {})
    assert cfg.nodename == socket.gethostname()
    assert cfg.kubeconfig is None
    assert (cfg.log_level, cfg.log_format) == ("info", "logfmt")
    assert cfg.run_dir == Path("/var/run/calyx")
    assert cfg.namespace == "calyx-system"
    assert (cfg.refresh_interval, cfg.ipip_enabled, cfg.mtu) == (90.0, True, None)


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path):
    config_file = tmp_path / "calyx.yaml"
    config_file.write_text("nodename: from-file\nhealth_port: 9100\nlog_level: debug\nmtu: 1400\n"
                           "run_dir: /tmp/file-run\n")
    env = {"NODENAME": "from-env", "CALYX_HEALTH_PORT": "9200", "CALYX_CONFIG_FILE": str(config_file)}
    cfg = load_config(ExampleDaemonConfig, ["--nodename", "from-flag"], env)
    assert cfg.nodename == "from-flag"          # flag beats env and file
    assert cfg.health_port == 9200              # env beats file
    assert cfg.log_level == "debug"             # file beats default
    assert cfg.mtu == 1400
    assert cfg.run_dir == Path("/tmp/file-run")
    assert cfg.namespace == "calyx-system"      # default
    assert cfg.ipip_enabled is True


def test_config_flag_names_the_file_and_types_are_converted(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("ipip_enabled: false\nrefresh_interval: 5\n")
    cfg = load_config(ExampleDaemonConfig, ["--config", str(config_file), "--health-port", "0",
                                            "--log-level", "WARNING"], {"EXAMPLE_MTU": "1480"})
    assert cfg.ipip_enabled is False and cfg.refresh_interval == 5.0
    assert cfg.health_port == 0 and cfg.log_level == "warning" and cfg.mtu == 1480


def test_empty_env_for_optional_field_means_unset():
    assert load_config(ExampleDaemonConfig, [], {"KUBECONFIG": ""}).kubeconfig is None
    assert load_config(ExampleDaemonConfig, [], {"KUBECONFIG": "/k"}).kubeconfig == "/k"


@pytest.mark.parametrize("argv, env, message", [
    ([], {"CALYX_HEALTH_PORT": "abc"}, "health_port (from env CALYX_HEALTH_PORT): 'abc': not an integer"),
    (["--health-port", "70000"], {}, "health_port: 70000: not a TCP port"),
    ([], {"EXAMPLE_IPIP_ENABLED": "maybe"}, "ipip_enabled (from env EXAMPLE_IPIP_ENABLED): 'maybe': not a boolean"),
    (["--log-level", "loud"], {}, "log_level (from flag --log-level): 'loud': must be one of"),
    ([], {"EXAMPLE_REFRESH_INTERVAL": "soon"}, "refresh_interval (from env EXAMPLE_REFRESH_INTERVAL): 'soon'"),
])
def test_bad_values_name_field_source_and_value(argv, env, message):
    with pytest.raises(ConfigError) as err:
        load_config(ExampleDaemonConfig, argv, env)
    assert message in str(err.value)


def test_bad_files_are_refused_clearly(tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("nodename: a\nroute_refresh: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'route_refresh'"):
        load_config(ExampleDaemonConfig, ["--config", str(unknown)], {})
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(ExampleDaemonConfig, ["--config", str(listy)], {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(ExampleDaemonConfig, ["--config", str(tmp_path / "missing.yaml")], {})
    bad_value = tmp_path / "bad.yaml"
    bad_value.write_text("health_port: [1]\n")
    with pytest.raises(ConfigError, match=r"health_port \(from file .*bad.yaml' key health_port\): \[1\]"):
        load_config(ExampleDaemonConfig, ["--config", str(bad_value)], {})


def test_base_config_fields_are_shared_and_frozen():
    cfg = load_config(DaemonConfig, ["--namespace", "kube-system"], {"CALYX_RUN_DIR": "/tmp/r"})
    assert cfg.namespace == "kube-system" and cfg.run_dir == Path("/tmp/r")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.namespace = "x"  # type: ignore[misc]
