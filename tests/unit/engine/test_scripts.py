"""The script contract: resolution, sandboxed environment, output rules, timeouts, cancellation, no orphans.

Every test that runs a script runs twice: with ``engine.runner: spawn`` (a fresh interpreter) and with
``warm`` (a fork of a warm runner started for the test); the step results say which ran.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from secauto.engine import EngineSettings, StepError
from secauto.engine.results import StepNotes
from secauto.engine.scripts import resolve_script, run_script, script_environment
from tests.unit.engine.conftest import alive, in_mode, run, wait_dead, wait_for_file


@pytest.fixture(params=["spawn", "warm"])
async def settings(settings: EngineSettings, request: pytest.FixtureRequest) -> AsyncIterator[EngineSettings]:
    """The engine settings in each runner mode (warm: with a runner started for the test)."""
    async with in_mode(settings, request.param) as chosen:
        yield chosen


async def run_checked(name: str, payload: dict[str, object], settings: EngineSettings) -> dict[str, object]:
    """run_script, checking that the script ran in the mode under test."""
    notes = StepNotes()
    try:
        return await run_script(name, payload, settings, notes=notes)
    finally:
        assert notes.runner == settings.runner

# ---------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    "name",
    ["../echo", "../../etc/passwd", "/etc/passwd", "/usr/bin/python3", "sub/echo", "echo.sh", "echo.py.py",
     ".echo", "", " echo", "echo\n", "echo;rm", "$(id)", "ec ho", "..", "echo/"],
)  # fmt: skip
def test_odd_names_are_refused(scripts_dir: Path, name: str) -> None:
    with pytest.raises(StepError, match="bad script name"):
        resolve_script(name, scripts_dir)


def test_name_with_and_without_py(scripts_dir: Path) -> None:
    assert resolve_script("echo", scripts_dir) == (scripts_dir / "echo.py").resolve()
    assert resolve_script("echo.py", scripts_dir) == (scripts_dir / "echo.py").resolve()


def test_missing_script(scripts_dir: Path) -> None:
    with pytest.raises(StepError, match="not found"):
        resolve_script("nope", scripts_dir)


def test_symlink_out_of_the_folder_is_refused(scripts_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("print('{}')\n")
    (scripts_dir / "escape.py").symlink_to(outside)
    with pytest.raises(StepError, match="outside the scripts folder"):
        resolve_script("escape", scripts_dir)


def test_symlink_inside_the_folder_is_fine(scripts_dir: Path) -> None:
    (scripts_dir / "alias.py").symlink_to(scripts_dir / "echo.py")
    assert resolve_script("alias", scripts_dir) == (scripts_dir / "echo.py").resolve()


def test_directory_named_like_a_script_is_refused(scripts_dir: Path) -> None:
    (scripts_dir / "folder.py").mkdir()
    with pytest.raises(StepError, match="not a regular file"):
        resolve_script("folder", scripts_dir)


async def test_traversal_in_a_playbook_spawns_nothing(settings: EngineSettings, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    # The literal name is refused by validation; a templated one is refused when the step runs.
    result = await run([{"action": "run_script", "script": "{{name}}"}], settings, {"name": "../evil"})
    assert not result.success
    assert "bad script name" in (result.error or "")
    assert not marker.exists()


# ---------------------------------------------------------------- environment


async def test_warm_and_spawned_scripts_see_the_same_environment(settings: EngineSettings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Without LANG, Python coerces the C locale and adds LC_CTYPE to its own os.environ: a spawned
    script has it, and so must a fork of the runner (whose interpreter did the same at its start)."""
    monkeypatch.delenv("LANG", raising=False)
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_CTYPE", raising=False)
    base = msgspec.structs.replace(settings, script_env={"VT_API_URL": "http://127.0.0.1:1"})
    seen = {}
    for mode in ("warm", "spawn"):
        async with in_mode(base, mode) as chosen:
            result = await run([{"run": "env_dump"}], chosen)
        assert result.success, result.error
        assert result.results[0].runner == mode
        seen[mode] = result.context["env"]
    assert seen["warm"] == seen["spawn"]


async def test_environment_is_an_allowlist(settings: EngineSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECAUTO_API_KEY", "super-secret-key")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@redis:6379")
    monkeypatch.setenv("SECAUTO_REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec")
    monkeypatch.setenv("LANG", "C.UTF-8")
    base = EngineSettings(
        scripts_dir=settings.scripts_dir,
        playbooks_dir=settings.playbooks_dir,
        python=sys.executable,
        script_env={"VT_API_URL": "http://127.0.0.1:1"},
    )
    async with in_mode(base, settings.runner) as chosen:  # a warm runner exec'd with this environment
        result = await run([{"run": "env_dump"}], chosen)
    assert result.success, result.error
    assert result.results[0].runner == settings.runner
    # What the script sees in os.environ and what the kernel shows in /proc/self/environ.
    for env in (result.context["env"], result.context["proc_env"]):
        assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "VT_API_URL", "LC_CTYPE"}  # python may add LC_CTYPE
        assert env["VT_API_URL"] == "http://127.0.0.1:1"
        assert env["LANG"] == "C.UTF-8"
        dumped = repr(env)
        for secret in ("super-secret-key", "hunter2", "whsec"):
            assert secret not in dumped


def test_script_environment_helper(settings: EngineSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECAUTO_API_KEY", "k")
    monkeypatch.setenv("PATH", "/usr/bin")
    env = script_environment(settings)
    assert "SECAUTO_API_KEY" not in env
    assert env["PATH"] == "/usr/bin"


# ---------------------------------------------------------------- input and output


async def test_input_is_context_overlaid_with_parameters(settings: EngineSettings) -> None:
    out = await run_checked("echo", {"a": 1, "target": "ctx", "target2": "param"}, settings)
    assert out == {"echo": {"a": 1, "target": "ctx", "target2": "param"}}
    step = {"action": "run_script", "script": "echo", "parameters": {"target": "param"}}
    result = await run([step], settings, {"target": "ctx", "a": 1})
    assert result.results[0].runner == settings.runner
    assert result.results[0].output == {"echo": {"target": "param", "a": 1}}
    assert result.context["echo"] == {"target": "param", "a": 1}
    assert result.context["target"] == "ctx"  # parameters do not leak into the context


async def test_incident_updates_merge_into_the_incident(settings: EngineSettings) -> None:
    result = await run([{"run": "incident"}], settings, {"incident": {"id": 7, "severity": "low"}})
    assert result.context["incident"] == {"id": 7, "severity": "high", "owner": "soc"}
    assert result.context["checked"] is True
    assert "incident_updates" not in result.context
    assert result.results[0].output["incident_updates"] == {"severity": "high", "owner": "soc"}


async def test_nonzero_exit_fails_with_the_stderr_tail(settings: EngineSettings) -> None:
    with pytest.raises(StepError, match=r"exited with status 3; stderr: something went wrong: boom"):
        await run_checked("exit_3", {}, settings)
    result = await run([{"run": "exit_3"}, {"action": "log", "message": "never"}], settings)
    assert not result.success
    assert [r.status for r in result.results] == ["failed"]
    assert result.results[0].runner == settings.runner  # recorded for failed steps too
    assert "boom" in (result.error or "")


async def test_non_json_output_is_quoted(settings: EngineSettings) -> None:
    with pytest.raises(StepError, match="did not print a JSON object; stdout starts with 'hello, this is not JSON"):
        await run_checked("not_json", {}, settings)


async def test_non_object_json_is_refused(settings: EngineSettings) -> None:
    with pytest.raises(StepError, match=r"not an object: '\[1, 2, 3\]"):
        await run_checked("json_list", {}, settings)


async def test_script_that_ignores_stdin(settings: EngineSettings) -> None:
    big = {"blob": "x" * 200_000}  # larger than a pipe buffer
    assert await run_checked("ignore_stdin", big, settings) == {"ok": True}


async def test_an_input_larger_than_a_pipe_buffer_arrives_whole(settings: EngineSettings) -> None:
    # warm: start_step writes what the pipe takes before the step starts and supervise feeds the rest.
    big = {"blob": "y" * 300_000, "n": 7}
    roomy = msgspec.structs.replace(settings, max_output_bytes=1_000_000)
    assert await run_checked("echo", big, roomy) == {"echo": big}


@pytest.mark.parametrize("script", ["flood_stdout", "flood_stderr"])
async def test_flooding_output_is_capped_and_killed(settings: EngineSettings, script: str) -> None:
    with pytest.raises(StepError, match="exceeded 65536 bytes; the process was killed"):
        await asyncio.wait_for(run_checked(script, {}, settings), 10)


async def test_bad_interpreter(settings: EngineSettings) -> None:
    # Another interpreter than the node's never runs warm: it is spawned, and this one does not exist.
    broken = msgspec.structs.replace(settings, python="/nonexistent/python")
    notes = StepNotes()
    with pytest.raises(StepError, match="could not be started"):
        await run_script("echo", {}, broken, notes=notes)
    assert notes.runner == "spawn"


# ---------------------------------------------------------------- timeouts, cancellation, orphans


async def test_timeout_kills_the_whole_process_group(settings: EngineSettings, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    result = await run(
        [{"action": "run_script", "script": "sleeper", "parameters": {"pidfile": str(pidfile)}, "timeout": 0.6}],
        settings,
    )
    assert not result.success
    assert result.results[0].runner == settings.runner
    assert "timed out after 0.6s" in (result.error or "")
    assert "sleeping" in (result.error or "")  # the stderr tail is quoted
    pids = [int(p) for p in pidfile.read_text().split()]
    assert wait_dead(pids) == []


async def test_settings_script_timeout_applies(settings: EngineSettings, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    quick = msgspec.structs.replace(settings, script_timeout=0.5)
    with pytest.raises(StepError, match=r"timed out after 0.5s"):
        await run_checked("sleeper", {"pidfile": str(pidfile)}, quick)
    assert wait_dead([int(p) for p in pidfile.read_text().split()]) == []


async def test_cancellation_kills_the_process_group_and_propagates(settings: EngineSettings, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(run([{"run": "sleeper", "pidfile": str(pidfile)}], settings))
    pids = [int(p) for p in (await wait_for_file(pidfile)).split()]
    assert all(alive(p) for p in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_dead(pids, within=1.0) == []


async def test_job_timeout_around_run_playbook(settings: EngineSettings, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.6):
            await run([{"run": "sleeper", "pidfile": str(pidfile)}], settings)
    assert wait_dead([int(p) for p in pidfile.read_text().split()], within=1.0) == []


async def test_children_left_behind_are_killed(settings: EngineSettings) -> None:
    out = await asyncio.wait_for(run_checked("leave_child", {}, settings), 5)
    assert wait_dead([out["child_pid"]], within=1.0) == []


def test_no_process_left_from_this_module() -> None:
    # Belt and braces: nothing started by these tests is still a child of the test process.
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    if children.exists():
        leftover = [int(p) for p in children.read_text().split() if alive(int(p)) and not _session_service(int(p))]
        assert leftover == []


def _session_service(pid: int) -> bool:
    """The test session's own redis-server (started by tests/conftest.py when an earlier test needed it)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("redis-server")
    except OSError:
        return False
