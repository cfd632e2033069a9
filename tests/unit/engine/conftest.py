"""Fixtures for the engine tests: a private scripts folder with small test scripts, settings, helpers."""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from secauto.engine import EngineSettings, PlaybookResult, run_playbook
from secauto.engine.scripts import script_environment
from secauto.engine.warm import WarmRunner
from tests.support.procs import pid_exists

REPO = Path(__file__).resolve().parents[3]

SCRIPTS: dict[str, str] = {
    "echo": """
        import json, sys
        data = json.load(sys.stdin)
        print(json.dumps({"echo": data}))
    """,
    "env_dump": """
        import json, os, sys
        json.load(sys.stdin)
        with open("/proc/self/environ", "rb") as handle:
            raw = [item.decode() for item in handle.read().split(b"\\0") if item]
        proc_env = dict(item.partition("=")[::2] for item in raw)
        print(json.dumps({"env": dict(os.environ), "proc_env": proc_env}))
    """,
    "exit_3": """
        import sys
        sys.stdin.read()
        print("partial output")
        print("something went wrong: boom", file=sys.stderr)
        sys.exit(3)
    """,
    "not_json": """
        print("hello, this is not JSON")
    """,
    "json_list": """
        print("[1, 2, 3]")
    """,
    "flood_stdout": """
        import sys
        chunk = "x" * 65536
        while True:
            sys.stdout.write(chunk)
    """,
    "flood_stderr": """
        import sys
        chunk = "e" * 65536
        while True:
            sys.stderr.write(chunk)
    """,
    "sleeper": """
        # Spawns a child that sleeps, records both pids in the file named by `pidfile`, then sleeps.
        import json, os, subprocess, sys, time
        data = json.load(sys.stdin)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(data["pidfile"], "w") as handle:
            handle.write(f"{os.getpid()} {child.pid}")
        print("sleeping", file=sys.stderr, flush=True)
        time.sleep(60)
    """,
    "leave_child": """
        # Starts a sleeping child that keeps stdout open, then exits at once with a valid answer.
        import json, subprocess, sys
        json.load(sys.stdin)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(json.dumps({"child_pid": child.pid}), flush=True)
    """,
    "incident": """
        import json, sys
        json.load(sys.stdin)
        print(json.dumps({"incident_updates": {"severity": "high", "owner": "soc"}, "checked": True}))
    """,
    "ignore_stdin": """
        print('{"ok": true}')
    """,
    "counter": """
        # Fails until it has been called `succeed_on` times (state in the file named by `state`).
        import json, sys
        data = json.load(sys.stdin)
        path = data["state"]
        try:
            count = int(open(path).read())
        except FileNotFoundError:
            count = 0
        count += 1
        open(path, "w").write(str(count))
        if count < data["succeed_on"]:
            print(f"attempt {count} fails", file=sys.stderr)
            sys.exit(1)
        print(json.dumps({"attempts": count}))
    """,
}


def write_script(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture
def scripts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "scripts"
    folder.mkdir()
    for name, body in SCRIPTS.items():
        write_script(folder, name, body)
    return folder


@pytest.fixture
def playbooks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(scripts_dir: Path, playbooks_dir: Path) -> EngineSettings:
    return EngineSettings(
        scripts_dir=scripts_dir,
        playbooks_dir=playbooks_dir,
        python=sys.executable,
        script_timeout=10.0,
        max_output_bytes=64 * 1024,
    )


@pytest.fixture
def repo_settings() -> EngineSettings:
    """Settings pointing at the repository's own automations/ and playbooks/."""
    return EngineSettings(
        scripts_dir=REPO / "automations", playbooks_dir=REPO / "playbooks", python=sys.executable, script_timeout=20.0
    )


@asynccontextmanager
async def warm_settings(settings: EngineSettings, **options: Any) -> AsyncIterator[EngineSettings]:
    """``settings`` with a started warm runner attached (exec'd with the scripts' environment as it is
    now); the runner is stopped on exit."""
    host = WarmRunner(env=script_environment(settings), preload=settings.preload, **options)
    await host.start()
    try:
        assert host.stats().state == "ready"
        yield msgspec.structs.replace(settings, runner="warm", script_host=host)
    finally:
        await host.stop()


@asynccontextmanager
async def in_mode(settings: EngineSettings, mode: str) -> AsyncIterator[EngineSettings]:
    """``settings`` for runner mode ``mode`` ("warm": with a runner started now, "spawn": without)."""
    if mode == "warm":
        async with warm_settings(settings) as warm:
            yield warm
    else:
        yield msgspec.structs.replace(settings, runner="spawn")


async def run(playbook: Any, settings: EngineSettings, context: dict[str, Any] | None = None) -> PlaybookResult:
    return await run_playbook(playbook, context or {}, settings, job_id="test-job")


def alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting for its reaper counts as dead)."""
    return pid_exists(pid)


def wait_dead(pids: list[int], within: float = 3.0) -> list[int]:
    """The pids still alive after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


async def wait_for_file(path: Path, within: float = 5.0) -> str:
    import asyncio

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""  # noqa: ASYNC240 - a tiny local file
        if text.strip():
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was not written within {within}s")
