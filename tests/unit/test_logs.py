"""Log lines are JSON with the document's fields."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from secauto.config import LoggingConfig
from secauto.logs import configure_logging, flush_logs


def test_json_lines_carry_component_job_and_node(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)  # configure_logging binds sys.stdout at call time
    try:
        configure_logging(LoggingConfig(level="info"), node_id="node-1")
        logger.bind(component="cluster_manager", job_id="job-12345").info("Job submitted to distributed queue")
        logger.debug("not at info level")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.bind(component="x").exception("failed")
    finally:
        logger.remove()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first == {"timestamp": first["timestamp"], "level": "info", "component": "cluster_manager",
                     "message": "Job submitted to distributed queue", "job_id": "job-12345", "node_id": "node-1"}
    assert first["timestamp"].endswith("Z") and first["timestamp"][10] == "T"
    assert lines[1]["level"] == "error" and lines[1]["exception"] == "ValueError: boom"
    assert "Traceback" not in stream.getvalue()


def test_file_destination(tmp_path: Path) -> None:
    path = tmp_path / "secauto.log"
    configure_logging(LoggingConfig(level="info", destination=str(path)))
    try:
        logger.bind(component="node").info("hello")
    finally:
        logger.remove()
    [line] = path.read_text().splitlines()
    assert json.loads(line)["message"] == "hello"


class CountingStream(io.StringIO):
    """Counts the writes a sink makes (one per loop iteration is the point of LineSink)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_lines_of_one_loop_iteration_are_written_together_in_the_next_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = CountingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(LoggingConfig(level="info", destination="stderr"), node_id="n1")
    try:
        for n in range(3):
            logger.bind(component="dispatcher", job_id=f"job-{n}").info("Job submitted to distributed queue")
        assert stream.getvalue() == ""  # waiting for the end of this iteration
        await asyncio.sleep(0)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["job_id"] for line in lines] == ["job-0", "job-1", "job-2"] and stream.writes == 1
        assert lines[0]["message"] == "Job submitted to distributed queue" and lines[0]["node_id"] == "n1"
        logger.info("waiting when the handler goes")
    finally:
        logger.remove()  # writes what waits
    assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "waiting when the handler goes"


async def test_a_line_from_another_thread_is_written_at_once_after_the_waiting_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = CountingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(LoggingConfig(level="info", destination="stderr"))
    try:
        logger.info("first, in the loop")
        await asyncio.to_thread(lambda: logger.info("second, from a thread"))
        assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
            "first, in the loop", "second, from a thread"]
    finally:
        logger.remove()


async def test_a_failing_write_reaches_the_loop_exception_handler_and_flush_logs_raises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys, "stderr", Broken())
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    configure_logging(LoggingConfig(level="info", destination="stderr"))
    try:
        logger.info("lost")
        await asyncio.sleep(0)
        assert len(reported) == 1 and isinstance(reported[0]["exception"], OSError)
        logger.info("also lost")
        with pytest.raises(OSError):
            flush_logs()
    finally:
        loop.set_exception_handler(None)
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        logger.remove()


async def test_line_logger_writes_the_same_line_as_loguru_masked_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under serve's setup (JSON to stderr, info) LineLogger builds its lines without loguru: the same
    fields in the same order, the bound node id, secrets masked by the same patcher."""
    from secauto.logs import LineLogger
    from secauto.redaction import REDACTOR

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(LoggingConfig(level="info", destination="stderr"), node_id="node-1")
    seen_by_loguru: list[str] = []  # a second loguru handler: only the logger.bind() line reaches it
    logger.add(lambda message: seen_by_loguru.append(message.record["message"]), level="INFO")
    REDACTOR.add(["hunter2-secret-value"])
    try:
        fields = {"actor": "ops", "status": 200, "target": None, "job_id": "job-1"}
        LineLogger(component="audit").info("audit: {} by {} (hunter2-secret-value)", "job.cancel", "ops", **fields)
        logger.bind(component="audit").info("audit: {} by {} (hunter2-secret-value)", "job.submit", "ops", **fields)
        await asyncio.sleep(0)
    finally:
        REDACTOR.clear()
        logger.remove()
    assert seen_by_loguru == ["audit: job.submit by ops (***)"]  # the LineLogger line bypassed loguru
    direct, through_loguru = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(direct) == list(through_loguru) == ["timestamp", "level", "component", "message", "job_id", "node_id",
                                                   "actor", "status", "target"]
    assert {**direct, "timestamp": None, "message": None} == {**through_loguru, "timestamp": None, "message": None}
    assert direct["message"] == "audit: job.cancel by ops (***)" and direct["node_id"] == "node-1"
    assert through_loguru["message"] == "audit: job.submit by ops (***)"


@pytest.mark.parametrize("config", [LoggingConfig(level="warning", destination="stderr"),
                                    LoggingConfig(level="info", destination="stderr", format="text")])
def test_line_logger_goes_through_loguru_unless_json_lines_at_info(config: LoggingConfig,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from secauto.logs import LineLogger

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(config)
    records: list[Any] = []
    logger.add(lambda message: records.append(message.record), level="INFO")
    try:
        LineLogger(component="dispatcher").info("Job submitted to distributed queue", job_id="job-1")
    finally:
        logger.remove()
    if config.level == "warning":
        assert stream.getvalue() == ""
    else:
        assert "Job submitted to distributed queue" in stream.getvalue()
    assert [(r["extra"]["job_id"], r["message"]) for r in records] == [("job-1", "Job submitted to distributed queue")]
    assert records[0]["function"] == "test_line_logger_goes_through_loguru_unless_json_lines_at_info"  # the caller


def test_line_logger_stops_writing_once_the_handler_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    from secauto.logs import LineLogger

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(LoggingConfig(level="info", destination="stderr"))
    LineLogger(component="audit").info("while configured")
    logger.remove()
    LineLogger(component="audit").info("after logger.remove()")  # no handler left: nowhere
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["while configured"]
