"""Fixtures of the integration tests (the Redis server fixtures are in tests/conftest.py): a
redis-or-embedded store client for the Lua protocol tests, and the script runner modes."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio

from secauto.engine import EngineSettings
from secauto.engine.script_limits import ScriptLimits, ScriptUser
from secauto.engine.scripts import script_environment
from secauto.engine.warm import WarmRunner
from secauto.engine.warm_runner import DEFAULT_PRELOAD
from secauto.store.connection import open_embedded
from tests.support.script_users import python_for, shared_dir, test_user

# What each script runner mode adds to the engine settings (EngineSettings fields) and to the node's
# `engine:` config section. In warm mode the fixture also starts a warm runner for the settings, and the
# interpreter is the node's own (a warm child runs code the runner compiled: it never execs Python, so
# the script user need not be able to start the venv's interpreter).
RUNNER_MODES: dict[str, dict[str, Any]] = {
    "spawn": {"runner": "spawn"},
    "warm": {"runner": "warm"},
}


@dataclass
class ScriptRunner:
    """Scripts written into a folder the script user can read, and settings that run them in one mode,
    as ``user`` (a uid of the session's own when the tests run as root, else the current user) with ``python``."""

    mode: str
    scripts_dir: Path
    user: ScriptUser | None
    python: str
    extra: dict[str, Any] = field(default_factory=dict)
    host: WarmRunner | None = None  # warm mode: the runner the settings use

    def script(self, name: str, body: str) -> Path:
        path = self.scripts_dir / f"{name}.py"
        path.write_text(textwrap.dedent(body).lstrip())
        path.chmod(0o644)
        return path

    def settings(self, limits: ScriptLimits, *, script_timeout: float = 30.0) -> EngineSettings:
        return EngineSettings(scripts_dir=self.scripts_dir, playbooks_dir=self.scripts_dir, python=self.python,
                              script_timeout=script_timeout, max_output_bytes=256 * 1024, script_limits=limits,
                              script_user=self.user, script_host=self.host, **self.extra)

    def engine_config(self, limits: ScriptLimits) -> dict[str, Any]:
        """The node's `engine:` section for the same folder, user, interpreter, limits and mode."""
        section: dict[str, Any] = {"scripts_dir": str(self.scripts_dir), "playbooks_dir": str(self.scripts_dir),
                                   "python": self.python, "script_limits": msgspec.to_builtins(limits)}
        if self.user is not None:
            section["script_user"] = self.user.uid
        return {**section, **self.extra}


@pytest.fixture(params=sorted(RUNNER_MODES))
async def script_runner_mode(request: pytest.FixtureRequest) -> AsyncIterator[ScriptRunner]:
    """A :class:`ScriptRunner` per runner mode (the limit tests run once per mode)."""
    user = test_user()
    warm = request.param == "warm"
    python = sys.executable if warm else python_for(None if user is None else user.uid)
    if python is None:
        pytest.fail(f"no Python interpreter that user {user} can start (tried the venv's and python3)")
    with shared_dir() as folder:
        runner = ScriptRunner(mode=request.param, scripts_dir=folder, user=user, python=python,
                              extra=RUNNER_MODES[request.param])
        if not warm:
            yield runner
            return
        env = script_environment(runner.settings(ScriptLimits()))
        runner.host = WarmRunner(env=env, preload=DEFAULT_PRELOAD)
        await runner.host.start()
        try:
            yield runner
        finally:
            await runner.host.stop()


@pytest.fixture(params=["redis", "embedded"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the session's real redis-server (flushed) and, as a second run, of a fresh embedded
    store: the protocol tests run on both, since the embedded mode executes the same Lua scripts."""
    if request.param == "redis":
        conn = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_server").url)
        await conn.flushall()
    else:
        conn = open_embedded()
    try:
        yield conn
    finally:
        await conn.aclose()
