"""Log lines are JSON with the document's fields."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from loguru import logger

from secauto.config import LoggingConfig
from secauto.logs import configure_logging


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
