"""engine.script_limits with real scripts: each limit stops its script with an error naming it, while the
node and the other steps carry on. Run once per script runner mode (``script_runner_mode``).

When the tests run as root (CI, containers, this project's sandbox), scripts run as an unprivileged uid
of the test session's own (engine.script_user), the mechanism that makes ``processes`` bind for a root
node; otherwise they run as the current user. No Redis: the node test uses the embedded store.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from secauto.engine import EngineSettings, StepError
from secauto.engine.results import StepNotes
from secauto.engine.script_limits import ScriptLimits
from secauto.engine.scripts import run_script as run_script_in_some_mode
from tests.integration.conftest import ScriptRunner
from tests.support.nodes import auth, node_settings, running_node
from tests.support.script_users import processes_of

CHILDREN_GONE_WITHIN = 5.0

HOLD = """
import json, sys, time
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
total = sum(range(100_000))
print(json.dumps({"total": total}))
"""


async def run_script(name: str, payload: dict[str, Any], settings: EngineSettings) -> dict[str, Any]:
    """run_script, checking that the step ran in the mode under test (a warm runner that is not usable
    would silently spawn, and the warm runs would test spawn again)."""
    notes = StepNotes()
    try:
        return await run_script_in_some_mode(name, payload, settings, notes=notes)
    finally:
        assert notes.runner == settings.runner, f"ran with {notes.runner}, not {settings.runner}"


def processes_running(path: Path) -> list[int]:
    """Live processes whose command line names the script ``path`` (a fork bomb's children do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()  # empty for a zombie
        except OSError:  # gone meanwhile
            continue
        if str(path).encode() in cmdline:
            found.append(int(entry.name))
    return found


def wait_gone(runner: ScriptRunner, path: Path, within: float = CHILDREN_GONE_WITHIN) -> list[int]:
    """What is left of script ``path`` after up to ``within`` seconds: as the script user, every process of
    that user, zombies included (they count against RLIMIT_NPROC until reaped); otherwise the live
    processes running the script."""
    deadline = time.monotonic() + within
    while True:
        left = processes_of(runner.user.uid) if runner.user is not None else processes_running(path)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def node_can_fork() -> bool:
    return subprocess.run(["true"], timeout=10).returncode == 0


# ---------------------------------------------------------------- cpu_seconds


async def test_cpu_limit_kills_a_busy_script(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    runner.script("spin", "while True:\n    pass\n")
    settings = runner.settings(ScriptLimits(cpu_seconds=1), script_timeout=30)
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        await run_script("spin", {}, settings)
    elapsed = time.monotonic() - started
    expected = "script 'spin' exceeded engine.script_limits.cpu_seconds (1s of CPU time) and was killed"
    assert expected in str(caught.value)
    assert elapsed < 15, f"stopped by the CPU limit, long before the 30 s timeout (took {elapsed:.1f}s)"


async def test_cpu_hard_limit_kills_a_script_that_ignores_sigxcpu(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    runner.script("stubborn", """
        import signal
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        while True:
            pass
    """)
    settings = runner.settings(ScriptLimits(cpu_seconds=1), script_timeout=30)
    started = time.monotonic()
    with pytest.raises(StepError, match=r"killed by SIGKILL.*engine\.script_limits\.cpu_seconds by 1s \(2s of CPU"):
        await run_script("stubborn", {}, settings)
    assert time.monotonic() - started < 20


async def test_cpu_limit_leaves_a_quick_script_alone(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    runner.script("hold", HOLD)
    assert await run_script("hold", {}, runner.settings(ScriptLimits(cpu_seconds=5))) == {"total": 4999950000}


# ---------------------------------------------------------------- memory_mb


async def test_memory_limit_fails_a_greedy_script(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    runner.script("greedy", "import json\nblock = bytearray(1024 * 1024 * 1024)\nprint(json.dumps({}))\n")
    runner.script("modest", "import json\nblock = bytearray(50 * 1024 * 1024)\nprint(json.dumps({'ok': True}))\n")
    settings = runner.settings(ScriptLimits(memory_mb=300))
    with pytest.raises(StepError) as caught:
        await run_script("greedy", {}, settings)
    message = str(caught.value)
    assert "script 'greedy' exceeded engine.script_limits.memory_mb (300 MiB of address space)" in message
    assert message.rstrip().endswith("MemoryError")  # the stderr tail is still quoted
    # Under the limit, memory is there as usual.
    assert await run_script("modest", {}, settings) == {"ok": True}


# ---------------------------------------------------------------- open_files


async def test_open_files_limit_fails_a_script_that_opens_too_many(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    runner.script("hoarder", """
        import json, sys
        files = [open(__file__) for _ in range(json.load(sys.stdin)["count"])]
        print(json.dumps({"opened": len(files)}))
    """)
    settings = runner.settings(ScriptLimits(open_files=32))
    with pytest.raises(StepError, match=r"script 'hoarder' hit engine\.script_limits\.open_files \(32 open files\)"):
        await run_script("hoarder", {"count": 200}, settings)
    assert await run_script("hoarder", {"count": 10}, settings) == {"opened": 10}


# ---------------------------------------------------------------- processes


def processes_limit(runner: ScriptRunner, allowed: int) -> int:
    """``allowed`` more processes for the script's user: RLIMIT_NPROC counts all of that user's
    processes, which is just the scripts for the session's script user, but includes this test run otherwise."""
    if runner.user is not None:
        assert wait_gone(runner, Path("/nonexistent")) == [], "processes of the script user are left over"
    uid = runner.user.uid if runner.user is not None else os.getuid()
    return len(processes_of(uid)) + allowed


BOMB = """
import os
while True:
    os.fork()
"""


async def test_fork_bomb_stops_at_the_processes_limit(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    bomb = runner.script("bomb", BOMB)
    runner.script("hold", HOLD)
    limit = processes_limit(runner, 20)
    settings = runner.settings(ScriptLimits(processes=limit, cpu_seconds=10), script_timeout=30)
    # A step of the same user that is already running when the bomb goes off.
    other = asyncio.create_task(run_script("hold", {}, settings))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        await run_script("bomb", {}, settings)
    assert f"script 'bomb' hit engine.script_limits.processes ({limit} processes and threads" in str(caught.value)
    assert time.monotonic() - started < 10, "the bomb failed at the limit, not at the step timeout"
    assert wait_gone(runner, bomb) == [], "the bomb's process group was killed"
    async with asyncio.timeout(30):
        assert await other == {"total": 4999950000}
    # The node (this process) still forks, and the next step of the same user starts as usual.
    assert node_can_fork()
    assert await run_script("hold", {}, settings) == {"total": 4999950000}


async def test_a_noisy_fork_bomb_over_the_output_cap_still_names_the_limit(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    noisy = runner.script("noisy", """
        import os, sys, time
        try:
            while True:
                os.fork()
        except BlockingIOError as exc:
            sys.stderr.write("x" * 50_000 + f"\\n{exc}\\n")
            sys.stderr.flush()
            time.sleep(20)
    """)
    settings = runner.settings(ScriptLimits(processes=processes_limit(runner, 20)), script_timeout=30)
    with pytest.raises(StepError, match=r"script 'noisy' stderr exceeded \d+ bytes; the process was killed; it hit "
                                        r"engine\.script_limits\.processes"):
        await run_script("noisy", {}, settings)
    assert wait_gone(runner, noisy) == []


async def test_the_processes_cap_is_shared_by_the_users_scripts(script_runner_mode: ScriptRunner) -> None:
    """The documented caveat of RLIMIT_NPROC: while one script holds all the processes its user may have,
    another script of that user cannot fork (or, past the limit, even start); the error says why. Once
    the holder ends, that script runs again."""
    runner = script_runner_mode
    holder = runner.script("holder", """
        import os, sys, time
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
        except BlockingIOError:
            print("full", file=sys.stderr, flush=True)
            time.sleep(60)
    """)
    runner.script("forker", """
        import json, os
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"forked": True}))
    """)
    if runner.user is None:
        pytest.skip("as a non-root user the count includes this test run's own processes")
    settings = runner.settings(ScriptLimits(processes=processes_limit(runner, 10)), script_timeout=30)
    task = asyncio.create_task(run_script("holder", {}, settings))
    try:
        async with asyncio.timeout(10):
            # The user's processes (a warm child's command line is its runner's, not the script's path).
            while len(processes_of(runner.user.uid)) < 10:
                await asyncio.sleep(0.05)
        with pytest.raises(StepError, match=r"script 'forker' (could not start: its user already has|hit) "
                                            r"engine\.script_limits\.processes"):
            await run_script("forker", {}, settings)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert wait_gone(runner, holder) == []
    assert await run_script("forker", {}, settings) == {"forked": True}


# ---------------------------------------------------------------- script_user


async def test_scripts_run_as_the_script_user(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    runner.script("whoami", "import json, os\nprint(json.dumps({'ids': [os.getuid(), os.geteuid(), os.getgid()]}))\n")
    result = await run_script("whoami", {}, runner.settings(ScriptLimits()))
    expected = [os.getuid(), os.geteuid(), os.getgid()] if runner.user is None else [
        runner.user.uid, runner.user.uid, runner.user.gid]
    assert result == {"ids": expected}


async def test_an_interpreter_the_script_user_cannot_reach_is_explained(script_runner_mode: ScriptRunner,
                                                                         tmp_path: Path) -> None:
    runner = script_runner_mode
    if runner.user is None:
        pytest.skip("only a root test run switches scripts to another user")
    if runner.mode == "warm":
        pytest.skip("another engine.python always spawns (tests/unit/engine/test_warm.py); the spawn run covers it")
    hidden = tmp_path / "private"  # under pytest's 0700 folder: the script user cannot get in
    hidden.mkdir(mode=0o700)
    (hidden / "python").symlink_to(runner.python)
    runner.script("hold", HOLD)
    settings = runner.settings(ScriptLimits())
    settings = msgspec.structs.replace(settings, python=str(hidden / "python"))
    with pytest.raises(StepError, match=r"could not be started with .*Permission denied.*engine\.script_user "
                                        r"'\d+' must be able to execute the interpreter"):
        await run_script("hold", {}, settings)


# ---------------------------------------------------------------- the node


async def wait_job(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(45):
        while True:
            async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
                job: dict[str, Any] = (await response.json())["job"]
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.05)


async def submit(http: aiohttp.ClientSession, steps: list[dict[str, Any]]) -> str:
    body = {"playbook": steps, "max_retries": 0, "timeout": 60}
    async with http.post("/cluster/jobs", headers=auth(), json=body) as response:
        assert response.status == 201 or response.status == 200, await response.text()
        job_id: str = (await response.json())["job_id"]
        return job_id


async def test_node_fails_only_the_step_over_a_limit(script_runner_mode: ScriptRunner) -> None:
    runner = script_runner_mode
    bomb = runner.script("bomb", BOMB)
    runner.script("spin", "while True:\n    pass\n")
    runner.script("hold", HOLD)
    limits = ScriptLimits(processes=processes_limit(runner, 20), cpu_seconds=2)
    settings = node_settings("limits", engine=runner.engine_config(limits))
    assert settings.script_user == runner.user
    async with running_node(settings) as node, aiohttp.ClientSession(base_url=node.url) as http:
        steady = await submit(http, [{"action": "run_script", "script": "hold", "parameters": {}},
                                     {"action": "log", "message": "still here"}])
        bombed = await submit(http, [{"action": "run_script", "script": "bomb"}])
        spun = await submit(http, [{"action": "run_script", "script": "spin"}])
        jobs = {job_id: await wait_job(http, job_id) for job_id in (steady, bombed, spun)}
        assert jobs[steady]["status"] == "completed", jobs[steady]
        assert {job["results"][0]["runner"] for job in jobs.values()} == {runner.mode}  # no silent fallback
        assert jobs[bombed]["status"] == "failed"
        assert "engine.script_limits.processes" in jobs[bombed]["error"], jobs[bombed]["error"]
        assert jobs[spun]["status"] == "failed"
        assert "exceeded engine.script_limits.cpu_seconds (2s of CPU time) and was killed" in jobs[spun]["error"]
        async with http.get("/health") as response:
            assert response.status == 200
        after = await wait_job(http, await submit(http, [{"action": "run_script", "script": "hold"}]))
        assert after["status"] == "completed"
    assert wait_gone(runner, bomb) == []
