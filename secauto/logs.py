"""Logging setup: loguru, one JSON object per line by default.

Every line has ``timestamp`` (RFC 3339 UTC), ``level``, ``component`` and ``message``, plus
``job_id`` / ``node_id`` where they apply (bound with ``logger.bind``), any other bound fields, and
``exception`` when one is logged (type and message only: no traceback, no local variables). API keys
and passwords are never passed to the logger in the first place. Values of stored secrets are masked
(``***``) in every record, whatever the sink, by the patcher of :mod:`secauto.redaction`, which
:func:`configure_logging` installs (and the node, for nodes started without it).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import msgspec
from loguru import logger

from secauto.config import LoggingConfig
from secauto.models import format_timestamp
from secauto.redaction import install_log_redaction

_encoder = msgspec.json.Encoder()
_FIRST = ("timestamp", "level", "component", "message", "job_id", "node_id")
_INTERNAL = "_line"


def format_record(record: Any) -> str:
    """The JSON line (without newline) for a loguru record."""
    extra = record["extra"]
    entry: dict[str, Any] = {
        # The same RFC 3339 UTC form as the API's timestamps (its date part is cached per second: a
        # busy node writes a few lines per job).
        "timestamp": format_timestamp(record["time"].timestamp()),
        "level": record["level"].name.lower(),
        "component": extra.get("component", "secauto"),
        "message": record["message"],
    }
    for key in ("job_id", "node_id"):
        if extra.get(key) is not None:
            entry[key] = extra[key]
    for key, value in extra.items():
        if key not in _FIRST and key != _INTERNAL:
            entry[key] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
    if record["exception"] is not None:
        exc_type, exc_value, _ = record["exception"]
        entry["exception"] = f"{exc_type.__name__ if exc_type else 'Exception'}: {exc_value}"
    return _encoder.encode(entry).decode()


def _stream_sink(stream: TextIO) -> Any:
    def write(message: Any) -> None:
        stream.write(format_record(message.record) + "\n")
        stream.flush()

    return write


def _attach_line(record: Any) -> bool:
    record["extra"][_INTERNAL] = format_record(record)
    return True


def configure_logging(config: LoggingConfig, **defaults: Any) -> None:
    """Replace loguru's handlers with one that follows ``config``; ``defaults`` are bound to every line.

    A file destination that cannot be opened raises OSError (the CLI reports it and exits 2).
    """
    logger.remove()
    logger.configure(extra={"component": "secauto", **defaults})
    install_log_redaction()
    level = config.level.upper()
    stream = {"stdout": sys.stdout, "stderr": sys.stderr}.get(config.destination)
    common: dict[str, Any] = {"level": level, "backtrace": False, "diagnose": False}
    if config.format == "text":
        fmt = "{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z {level: <7} [{extra[component]}] {message}"
        logger.add(stream if stream is not None else config.destination, format=fmt, **common)
    elif stream is not None:
        logger.add(_stream_sink(stream), format="{message}", **common)
    else:
        logger.add(config.destination, format="{extra[" + _INTERNAL + "]}", filter=_attach_line, **common)
