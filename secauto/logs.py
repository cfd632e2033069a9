"""Logging setup: loguru, one JSON object per line by default.

Every line has ``timestamp`` (RFC 3339 UTC), ``level``, ``component`` and ``message``, plus
``job_id`` / ``node_id`` where they apply (bound with ``logger.bind``), any other bound fields, and
``exception`` when one is logged (type and message only: no traceback, no local variables). API keys
and passwords are never passed to the logger in the first place. Values of stored secrets are masked
(``***``) in every record, whatever the sink, by the patcher of :mod:`secauto.redaction`, which
:func:`configure_logging` installs (and the node, for nodes started without it).

JSON lines to stdout or stderr go through a :class:`LineSink`: a line logged while an event loop runs
in the thread is written, with the other lines of the same loop iteration, in one write and flush at
the start of the next iteration (a busy node logs a few lines per job, and one write per line cost
a system call each). Lines logged without a running loop are written at once, after any still
waiting. What is waiting is also written when the handler is removed (``logger.remove``), by
:func:`flush_logs` (the CLI calls it when the node has stopped) and at interpreter exit (``atexit``,
so also after a crash that ends the process with a traceback). Only a process killed outright
(SIGKILL) loses the lines of its last loop iteration. A write that fails is not swallowed: in the
loop's callback it reaches the loop's exception handler (an error on stderr), elsewhere it raises
into loguru, which reports it on stderr.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import threading
import time
from typing import Any, TextIO

import msgspec
from loguru import logger

from secauto.config import LoggingConfig
from secauto.models import format_timestamp
from secauto.redaction import install_log_redaction, patch_record

_encoder = msgspec.json.Encoder()
_FIRST = ("timestamp", "level", "component", "message", "job_id", "node_id")
_INTERNAL = "_line"


def format_record(record: Any) -> str:
    """The JSON line (without newline) for a loguru record."""
    return _json_line(record["time"].timestamp(), record["level"].name.lower(), record["message"], record["extra"],
                      record["exception"])


def _json_line(epoch: float, level: str, message: str, extra: dict[str, Any], exception: Any) -> str:
    entry: dict[str, Any] = {
        # The same RFC 3339 UTC form as the API's timestamps (its date part is cached per second: a
        # busy node writes a few lines per job).
        "timestamp": format_timestamp(epoch),
        "level": level,
        "component": extra.get("component", "secauto"),
        "message": message,
    }
    for key in ("job_id", "node_id"):
        if extra.get(key) is not None:
            entry[key] = extra[key]
    for key, value in extra.items():
        if key not in _FIRST and key != _INTERNAL:
            entry[key] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
    if exception is not None:
        exc_type, exc_value, _ = exception
        entry["exception"] = f"{exc_type.__name__ if exc_type else 'Exception'}: {exc_value}"
    return _encoder.encode(entry).decode()


class LineSink:
    """A loguru sink writing JSON lines to ``stream``, one write and flush per event-loop iteration
    (see the module docstring). Thread-safe: lines logged from other threads (no running loop there)
    are written at once, after the lines still waiting."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._planned: asyncio.AbstractEventLoop | None = None  # the loop that will write the lines

    def write(self, message: Any) -> None:
        """Loguru's entry point: one formatted record (``message.record``)."""
        self.add_line(format_record(message.record))

    def add_line(self, line: str) -> None:
        """Queue ``line`` (JSON, no newline) for the end of this loop iteration, or write it now when no
        loop runs in this thread."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: write now, after what waits
            with self._lock:
                self._lines.append(line)
            self.flush_lines()
            return
        with self._lock:
            self._lines.append(line)
            if self._planned is loop:
                return
            self._planned = loop
        loop.call_soon(self.flush_lines)

    def flush_lines(self) -> None:
        """Write and flush the waiting lines (nothing when none wait). Raises the stream's error."""
        with self._lock:
            lines, self._lines = self._lines, []
            self._planned = None
            if lines:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()

    def stop(self) -> None:
        """Called by loguru when the handler is removed: write what waits; LineLogger stops using it."""
        global _direct
        if _direct is not None and _direct.sink is self:
            _direct = None
        self.flush_lines()


_sinks: list[LineSink] = []  # the sinks configure_logging added (flush_logs, atexit)


class _Direct(msgspec.Struct):
    """Where :class:`LineLogger` writes info lines without loguru: set by :func:`configure_logging`."""

    sink: LineSink
    defaults: dict[str, Any]  # the fields configure_logging binds to every line


_direct: _Direct | None = None


class LineLogger:
    """The info lines of the request path (a job submitted, an audit entry): a few per request.

    Under :func:`configure_logging` with JSON lines to stdout or stderr at info level or below (``secauto
    serve``'s usual setup, where its :class:`LineSink` is the process's only loguru handler), ``info``
    builds the line itself, exactly as loguru and :func:`format_record` would (same fields and order,
    secrets masked by the same patcher) and queues it on that sink: loguru's own cost per call (a record
    of a dozen objects, its clock, frame and process lookups) was half of what a submit spent logging.
    Everywhere else (a node embedded without configure_logging, as in the tests, the text format, a file,
    warning level) it is ``logger.bind(**bound).info(...)``. So a handler added with ``logger.add`` next
    to the configured one does not see these lines: configure them through ``logging`` instead.
    """

    __slots__ = ("_loguru", "bound")

    def __init__(self, **bound: Any) -> None:
        self.bound = bound
        self._loguru = logger.bind(**bound).opt(depth=1)  # the caller's module and line in the record

    def info(self, message: str, *args: Any, **fields: Any) -> None:
        """Log ``message`` (``str.format``-ed with ``args`` and ``fields`` when given, as loguru does) at
        info, with ``fields`` as the line's extra fields."""
        direct = _direct
        if direct is None:
            self._loguru.info(message, *args, **fields)
            return
        if args or fields:
            message = message.format(*args, **fields)
        extra = {**direct.defaults, **self.bound, **fields}
        record: dict[str, Any] = {"message": message, "extra": extra, "exception": None}
        patch_record(record)
        direct.sink.add_line(_json_line(time.time(), "info", record["message"], record["extra"], None))


def flush_logs() -> None:
    """Write the log lines still waiting in this process's line sinks. Raises the stream's error."""
    for sink in list(_sinks):
        sink.flush_lines()


atexit.register(flush_logs)


def _attach_line(record: Any) -> bool:
    record["extra"][_INTERNAL] = format_record(record)
    return True


def configure_logging(config: LoggingConfig, **defaults: Any) -> None:
    """Replace loguru's handlers with one that follows ``config``; ``defaults`` are bound to every line.

    A file destination that cannot be opened raises OSError (the CLI reports it and exits 2).
    """
    global _direct
    _direct = None
    logger.remove()  # stops (and flushes) the line sinks of an earlier configuration
    _sinks.clear()
    logger.configure(extra={"component": "secauto", **defaults})
    install_log_redaction()
    level = config.level.upper()
    stream = {"stdout": sys.stdout, "stderr": sys.stderr}.get(config.destination)
    common: dict[str, Any] = {"level": level, "backtrace": False, "diagnose": False}
    if config.format == "text":
        fmt = "{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z {level: <7} [{extra[component]}] {message}"
        logger.add(stream if stream is not None else config.destination, format=fmt, **common)
    elif stream is not None:
        sink = LineSink(stream)
        _sinks.append(sink)
        logger.add(sink, format="{message}", **common)
        if logger.level(level).no <= logger.level("INFO").no:
            _direct = _Direct(sink, {"component": "secauto", **defaults})
    else:
        logger.add(config.destination, format="{extra[" + _INTERNAL + "]}", filter=_attach_line, **common)
