"""Daemon configuration: one frozen dataclass per daemon, filled from flags, environment, an
optional YAML file and defaults, in that order of precedence (flags > env > file > defaults).

:class:`DaemonConfig` holds what every Calyx daemon needs (node name, kubeconfig, logging,
health/metrics listener, run directory, namespace). felix and bgpd subclass it and declare their
own fields with :func:`setting`. Every field has one environment variable, one command-line
flag (``--field-name``) and one YAML key (the field name). A bad value is refused with an error
naming the field, where the value came from, and the value.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import yaml

from calyx.logs import LOG_FORMATS, LOG_LEVELS

CONFIG_FILE_ENV = "CALYX_CONFIG_FILE"

C = TypeVar("C", bound="DaemonConfig")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names field, source and value."""


def setting(default: Any = dataclasses.MISSING, *, env: str, help: str,  # noqa: A002
            default_factory: Callable[[], Any] | None = None,
            choices: Sequence[str] | None = None) -> Any:
    """Declare a configuration field: its environment variable, help text and default."""
    metadata = {"env": env, "help": help, "choices": tuple(choices) if choices else None}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    """Settings shared by every Calyx daemon."""

    nodename: str = setting(env="NODENAME", default_factory=socket.gethostname,
                            help="the Kubernetes node this process serves (default: the hostname)")
    kubeconfig: str | None = setting(None, env="KUBECONFIG",
                                     help="kubeconfig file; unset: in-cluster configuration")
    log_level: str = setting("info", env="CALYX_LOG_LEVEL", choices=LOG_LEVELS, help="log level")
    log_format: str = setting("logfmt", env="CALYX_LOG_FORMAT", choices=LOG_FORMATS, help="log line format")
    health_host: str = setting("127.0.0.1", env="CALYX_HEALTH_HOST",
                               help="address serving /livez, /readyz and /metrics")
    health_port: int = setting(9099, env="CALYX_HEALTH_PORT",
                               help="port serving /livez, /readyz and /metrics (0: any free port)")
    run_dir: Path = setting(Path("/var/run/calyx"), env="CALYX_RUN_DIR", help="per-node runtime state directory")
    namespace: str = setting("calyx-system", env="CALYX_NAMESPACE",
                             help="namespace holding Calyx's Secrets (BGP passwords)")

    def __post_init__(self) -> None:
        if not 0 <= self.health_port <= 65535:
            raise ConfigError(f"config field health_port: {self.health_port!r}: not a TCP port (0-65535)")
        if not self.nodename:
            raise ConfigError("config field nodename: '': must not be empty")


def _fields(cls: type[DaemonConfig]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "env" in f.metadata]


def _resolved_types(cls: type[DaemonConfig]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the concrete type, whether None is allowed) for ``T`` or ``T | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return annotation, False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(field: dataclasses.Field, annotation: Any, raw: Any, source: str) -> Any:
    target, optional = _base_type(annotation)

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"config field {field.name} (from {source}): {raw!r}: {problem}")

    if raw is None or (optional and isinstance(raw, str) and raw == ""):
        if optional:
            return None
        raise bad("a value is required")
    if target is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise bad("not a boolean (true/false)")
    if target is int:
        if isinstance(raw, bool):
            raise bad("not an integer")
        try:
            return int(str(raw).strip(), 10)
        except ValueError:
            raise bad("not an integer") from None
    if target is float:
        if isinstance(raw, bool):
            raise bad("not a number")
        try:
            return float(str(raw).strip())
        except ValueError:
            raise bad("not a number") from None
    if target is Path:
        return Path(str(raw))
    value = str(raw) if not isinstance(raw, str) else raw
    choices = field.metadata.get("choices")
    if choices and value.lower() not in choices:
        raise bad(f"must be one of {', '.join(choices)}")
    return value.lower() if choices else value


def _flag(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def build_parser(cls: type[DaemonConfig], prog: str, description: str = "") -> argparse.ArgumentParser:
    """An argparse parser with one flag per field (all optional: unset flags fall through to
    env, file, default) plus ``--config`` for the YAML file."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                        help=f"YAML configuration file (env {CONFIG_FILE_ENV}); keys are the field names")
    for field in _fields(cls):
        help_text = f"{field.metadata['help']} (env {field.metadata['env']})"
        parser.add_argument(_flag(field), dest=field.name, default=None, metavar=field.name.upper(),
                            help=help_text)
    return parser


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: top level must be a mapping, not {type(data).__name__}")
    return data


def load_config(cls: type[C], argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
                prog: str = "calyx", description: str = "") -> C:
    """Build ``cls`` from flags (``argv``), environment (``environ``), the YAML file named by
    ``--config`` or ``CALYX_CONFIG_FILE``, and the field defaults."""
    env = os.environ if environ is None else environ
    args = build_parser(cls, prog, description).parse_args(list(argv or []))
    return resolve_config(cls, {k: v for k, v in vars(args).items() if k != "config_file" and v is not None},
                          env, args.config_file or env.get(CONFIG_FILE_ENV) or None)


def resolve_config(cls: type[C], flags: Mapping[str, Any], environ: Mapping[str, str],
                   config_file: str | os.PathLike[str] | None) -> C:
    """Merge already-parsed flag values, environment and file into ``cls`` (see :func:`load_config`)."""
    fields = _fields(cls)
    hints = _resolved_types(cls)
    file_values = read_config_file(config_file) if config_file else {}
    known = {f.name for f in fields}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"config file {str(config_file)!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for field in fields:
        env_name = field.metadata["env"]
        if field.name in flags:
            values[field.name] = _convert(field, hints[field.name], flags[field.name], f"flag {_flag(field)}")
        elif env_name in environ:
            values[field.name] = _convert(field, hints[field.name], environ[env_name], f"env {env_name}")
        elif field.name in file_values:
            values[field.name] = _convert(field, hints[field.name], file_values[field.name],
                                          f"file {str(config_file)!r} key {field.name}")
    return cls(**values)
