"""Structured logs for every Calyx program: one handler on the process's root logger renders
records as logfmt (``ts=... level=info logger=felix.routes event="route added" dst=...``) or
JSON lines (:func:`configure_logging`); :func:`get_logger` returns a :class:`StructuredLogger`
whose methods take an event string plus keyword fields, saying what changed and why.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Mapping, TextIO

LOG_FORMATS = ("logfmt", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# set_level also takes "critical": nothing below it is written (BGPConfiguration's Fatal)
_SETTABLE_LEVELS = LOG_LEVELS + ("critical",)

_FIELDS_ATTR = "calyx_fields"
_EVENT_ATTR = "calyx_event"
_HANDLER_NAME = "calyx-structured"


# --- Structured logging ---------------------------------------------------------------------

def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _plain(value: Any) -> Any:
    """A JSON-friendly rendering of a field value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def logfmt_value(value: Any) -> str:
    """Render one value for logfmt: bare when safe, else double-quoted with escapes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        text = ",".join(str(_plain(v)) for v in value)
    else:
        text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t\r') and text.isprintable():
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r"))
    return f'"{escaped}"'


def _logfmt_key(key: str) -> str:
    cleaned = "".join(c if (c.isalnum() or c in "_.-/") else "_" for c in str(key))
    return cleaned or "_"


class StructuredFormatter(logging.Formatter):
    """Formats records as logfmt or JSON lines; fields come from :class:`StructuredLogger`."""

    def __init__(self, fmt: str = "logfmt") -> None:
        super().__init__()
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format {fmt!r}: must be one of {', '.join(LOG_FORMATS)}")
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, _EVENT_ATTR, None)
        if event is None:
            event = record.getMessage()
        pairs: list[tuple[str, Any]] = [
            ("ts", _timestamp(record.created)),
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("event", event),
        ]
        reserved = {k for k, _ in pairs}
        for key, value in (getattr(record, _FIELDS_ATTR, None) or {}).items():
            pairs.append((f"field.{key}" if key in reserved else key, value))
        if record.exc_info:
            pairs.append(("traceback", self.formatException(record.exc_info)))
        if self.fmt == "json":
            return json.dumps({k: _plain(v) for k, v in pairs}, separators=(",", ":"))
        return " ".join(f"{_logfmt_key(k)}={logfmt_value(v)}" for k, v in pairs)


def configure_logging(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Send every record of the process to ``stream`` (stderr) as logfmt or JSON at ``level``.

    Calling it again replaces the handler it installed before (it never stacks handlers)."""
    name = level.lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: must be one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(StructuredFormatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(name)


def set_level(level: str) -> None:
    """Change the level of every logger of the process at once, while it runs (the handler
    stays): one of LOG_LEVELS, or "critical"."""
    name = level.lower()
    if name not in _SETTABLE_LEVELS:
        raise ValueError(f"log level {level!r}: must be one of {', '.join(_SETTABLE_LEVELS)}")
    logging.getLogger().setLevel(name.upper())
    # urllib3 logs each connection retry as a warning; Calyx's API callers log every failed
    # request themselves (with the retry delay), so below debug level those lines are noise.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if name == "debug" else logging.ERROR)


def current_level() -> str:
    """The process's level as set_level takes it ("info", ...)."""
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()


class StructuredLogger:
    """``log.info("route added", dst="10.244.1.5/32", dev="cali1234567890a")``."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    @property
    def name(self) -> str:
        return self._logger.name

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def _log(self, level: int, event: str, exc_info: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, exc_info=exc_info, stacklevel=3,
                             extra={_EVENT_ATTR: event, _FIELDS_ATTR: fields})

    def debug(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.DEBUG, event, exc_info, fields)

    def info(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.INFO, event, exc_info, fields)

    def warning(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.WARNING, event, exc_info, fields)

    def error(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, event, exc_info, fields)


def get_logger(name: str) -> StructuredLogger:
    return StructuredLogger(logging.getLogger(name))
