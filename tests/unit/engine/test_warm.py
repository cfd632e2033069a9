"""The warm script runner: what only warm mode has to prove (the shared contract is in test_scripts.py).

A runner exec'd clean (not a fork of the node), interpreter semantics for the script (``__main__``,
``sys.argv``, ``sys.path``, exit codes, ``SystemExit``, tracebacks, atexit, threads), no state leaking
between runs, supervision (a SIGKILLed runner fails the steps in flight, kills their processes, is
replaced, and retries apply), recycling after N forks, the spawn fallbacks, and the audit line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from loguru import logger

from secauto.engine import EngineSettings, StepError, warm_runner
from secauto.engine.process import supervise
from secauto.engine.results import StepNotes
from secauto.engine.scripts import run_script
from secauto.engine.warm import WarmChild, WarmRunner
from secauto.engine.warm_runner import _REHEARSAL_PATTERN
from tests.unit.engine.conftest import alive, run, wait_dead, wait_for_file, warm_settings, write_script

SCRIPTS: dict[str, str] = {
    "whoami": """
        # Reports how it was run.
        import json, os, sys
        json.load(sys.stdin)
        print(json.dumps({
            "name": __name__, "file": __file__, "argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0],
            "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
            "modules": sorted(sys.modules), "stdout_name": sys.stdout.name,
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        }))
    """,
    "mutate": """
        # Changes preloaded modules and the environment of its process; a later run must not see it.
        import json, os, sys
        data = json.load(sys.stdin)
        seen = {"json_marker": hasattr(json, "secauto_marker"), "env_marker": "SECAUTO_MARKER" in os.environ,
                "helper_loaded": "helper_mod" in sys.modules}
        json.secauto_marker = True
        os.environ["SECAUTO_MARKER"] = "1"
        sys.modules["helper_mod"] = sys
        print(json.dumps(seen))
    """,
    "uses_helper": """
        # Imports a module from the scripts folder (sys.path[0] is the script's folder).
        import json, sys
        import helper_lib
        json.load(sys.stdin)
        print(json.dumps({"helper": helper_lib.VALUE}))
    """,
    "helper_lib": """
        VALUE = 42
    """,
    "exit_message": """
        import sys
        sys.exit("fatal: no target given")
    """,
    "exit_7_via_raise": """
        raise SystemExit(7)
    """,
    "raises": """
        def inner():
            raise ValueError("bad input 123")
        inner()
    """,
    "syntax_error": """
        def broken(:
            pass
    """,
    "at_exit": """
        # atexit handlers run and non-daemon threads are joined before the child exits.
        import atexit, json, sys, threading, time
        json.load(sys.stdin)
        result = {}
        def late():
            time.sleep(0.2)
            result["thread"] = True
        threading.Thread(target=late).start()
        atexit.register(lambda: print(json.dumps(result)))
    """,
    "opted_out": """
        #!/usr/bin/env python3
        # secauto: runner=spawn
        import json, os, sys
        json.load(sys.stdin)
        print(json.dumps({"ppid": os.getppid()}))
    """,
    "hard_exit": """
        # Leaves without the interpreter's exit steps.
        import os
        os._exit(3)
    """,
    "self_terminate": """
        import os, signal
        os.kill(os.getpid(), signal.SIGTERM)
    """,
    "runner_traces": """
        # What a spare's rehearsal (warm_runner._rehearse) could have left behind.
        import json, re, sys
        data = json.load(sys.stdin)
        cached = [key for cache in ("_cache", "_cache2") for key in getattr(re, cache, {})]
        print(json.dumps({"pattern_cached": any(data["pattern"] in key for key in cached),
                          "stdio_fds": [sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno()],
                          "stdin_rest": sys.stdin.read()}))
    """,
    "slow": """
        # Records its pid and a grandchild's, then sleeps.
        import json, os, subprocess, sys, time
        data = json.load(sys.stdin)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(data["pidfile"], "w") as handle:
            handle.write(f"{os.getpid()} {child.pid}")
        time.sleep(float(data.get("seconds", 60)))
        print(json.dumps({"slept": True}))
    """,
}


@pytest.fixture
def warm_dir(scripts_dir: Path) -> Path:
    for name, body in SCRIPTS.items():
        write_script(scripts_dir, name, body)
    return scripts_dir


@pytest.fixture
async def warm(settings: EngineSettings, warm_dir: Path) -> AsyncIterator[EngineSettings]:
    async with warm_settings(settings) as chosen:
        yield chosen


def host_of(settings: EngineSettings) -> WarmRunner:
    assert settings.script_host is not None
    return settings.script_host


async def run_warm(name: str, settings: EngineSettings, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    notes = StepNotes()
    out = await run_script(name, payload or {}, settings, notes=notes)
    assert notes.runner == "warm"
    return out


# ---------------------------------------------------------------- the runner process


async def test_the_runner_is_execd_with_the_scripts_environment_only(
        settings: EngineSettings, warm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECAUTO_API_KEY", "super-secret-key")
    monkeypatch.setenv("SECAUTO_REDIS_PASSWORD", "hunter2")
    async with warm_settings(settings) as chosen:
        pid = host_of(chosen).stats().pid
        assert pid is not None
        environ = Path(f"/proc/{pid}/environ").read_bytes()  # noqa: ASYNC240 - procfs, instant
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")  # noqa: ASYNC240
        out = await run_warm("whoami", chosen)
    assert b"super-secret-key" not in environ and b"hunter2" not in environ
    assert {item.partition(b"=")[0].decode() for item in environ.split(b"\0") if item} <= {
        "PATH", "LANG", "HOME", "TMPDIR"}
    assert cmdline[1] == b"-P" and cmdline[2].endswith(b"warm_runner.py")  # exec'd, not a fork of the node
    # Nothing of the node is in the runner's memory: the script (a fork of it) has none of its modules.
    assert not [name for name in out["modules"] if name.split(".")[0] in ("secauto", "actors", "redis", "aiohttp",
                                                                         "loguru")]
    assert out["ppid"] == pid


async def test_a_step_is_a_fresh_fork_in_its_own_session(warm: EngineSettings) -> None:
    first = await run_warm("whoami", warm)
    second = await run_warm("whoami", warm)
    runner_pid = host_of(warm).stats().pid
    for out in (first, second):
        assert out["ppid"] == runner_pid
        assert out["pid"] == out["pgid"] == out["sid"]  # its own session and process group
        assert out["fds"] == [0, 1, 2, 3]  # stdio only (3: the listdir itself)
    assert first["pid"] != second["pid"]


async def test_the_script_runs_as_main_like_python_would(warm: EngineSettings, warm_dir: Path) -> None:
    out = await run_warm("whoami", warm)
    folder = str(warm.scripts_dir)  # tmp_path: already resolved
    path = f"{folder}/whoami.py"
    assert out["name"] == "__main__"
    assert out["file"] == path
    assert out["argv"] == [path]
    assert out["cwd"] == folder
    assert out["path0"] == folder
    assert out["stdout_name"] == "<stdout>"
    assert await run_warm("uses_helper", warm) == {"helper": 42}


async def test_nothing_leaks_between_runs(warm: EngineSettings) -> None:
    first = await run_warm("mutate", warm)
    second = await run_warm("mutate", warm)
    assert first == second == {"json_marker": False, "env_marker": False, "helper_loaded": False}


@pytest.mark.parametrize(("script", "expected"), [
    ("exit_message", r"exited with status 1; stderr: fatal: no target given"),
    ("exit_7_via_raise", r"exited with status 7"),
    ("raises", r"(?s)exited with status 1; stderr: Traceback \(most recent call last\):.*in inner.*"
               r"ValueError: bad input 123"),
    ("syntax_error", r"(?s)exited with status 1; stderr: .*syntax_error.py.*line 1.*SyntaxError"),
])  # fmt: skip
async def test_exit_status_and_tracebacks_as_in_the_interpreter(warm: EngineSettings, script: str,
                                                                expected: str) -> None:
    with pytest.raises(StepError, match=expected) as caught:
        await run_warm(script, warm)
    # The same failure, word for word, as a fresh interpreter reports it.
    spawn = msgspec.structs.replace(warm, runner="spawn")
    with pytest.raises(StepError) as spawned:
        await run_script(script, {}, spawn)
    assert caught.value.message == spawned.value.message


async def test_threads_are_joined_and_atexit_runs(warm: EngineSettings) -> None:
    assert await run_warm("at_exit", warm) == {"thread": True}


async def test_an_edited_script_is_recompiled(warm: EngineSettings, warm_dir: Path) -> None:
    write_script(warm_dir, "edited", 'print(\'{"version": 1}\')\n')
    assert await run_warm("edited", warm) == {"version": 1}
    write_script(warm_dir, "edited", 'print(\'{"version": 2, "longer": true}\')\n')
    assert await run_warm("edited", warm) == {"version": 2, "longer": True}


async def test_each_warm_start_is_logged_with_path_and_sha256(warm: EngineSettings, warm_dir: Path) -> None:
    import hashlib

    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    try:
        await run_warm("echo", warm)
    finally:
        logger.remove(sink)
    path = (warm_dir / "echo.py").resolve()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert any(str(path) in line and digest in line for line in lines), lines


# ---------------------------------------------------------------- when a script is spawned instead


async def test_a_script_can_opt_out(warm: EngineSettings) -> None:
    notes = StepNotes()
    out = await run_script("opted_out", {}, warm, notes=notes)
    assert notes.runner == "spawn"
    assert out["ppid"] == os.getpid()  # spawned by this process, not forked by the runner


async def test_another_interpreter_spawns(warm: EngineSettings, tmp_path: Path) -> None:
    other = tmp_path / "python3"
    other.symlink_to(sys.executable)  # another path: possibly another environment, so never warm
    result = await run([{"run": "whoami"}], msgspec.structs.replace(warm, python=str(other)))
    assert result.success, result.error
    assert result.results[0].runner == "spawn"


async def test_spawn_mode_and_no_runner_spawn(warm: EngineSettings) -> None:
    result = await run([{"run": "echo"}], msgspec.structs.replace(warm, runner="spawn"))
    assert result.results[0].runner == "spawn"
    result = await run([{"run": "echo"}], msgspec.structs.replace(warm, script_host=None))
    assert result.results[0].runner == "spawn"
    result = await run([{"action": "log", "message": "x"}], warm)
    assert result.results[0].runner is None  # not a script step


async def test_a_stopped_runner_means_spawn(warm: EngineSettings) -> None:
    await host_of(warm).stop()
    result = await run([{"run": "echo"}], warm)
    assert result.success, result.error
    assert result.results[0].runner == "spawn"


# ---------------------------------------------------------------- supervision


async def wait_until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not true within {within}s"
        await asyncio.sleep(0.02)


async def wait_ready(host: WarmRunner, other_than: int | None, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stats = host.stats()
        if stats.state == "ready" and stats.pid is not None and stats.pid != other_than:
            return stats.pid
        await asyncio.sleep(0.02)
    raise AssertionError(f"no new runner within {within}s: {host.stats()}")


async def test_killing_the_runner_fails_the_step_kills_its_processes_and_restarts(
        warm: EngineSettings, tmp_path: Path) -> None:
    host = host_of(warm)
    runner_pid = host.stats().pid
    assert runner_pid is not None
    pidfile = tmp_path / "pids"
    step = asyncio.create_task(run_script("slow", {"pidfile": str(pidfile)}, warm))
    pids = [int(p) for p in (await wait_for_file(pidfile)).split()]
    assert all(alive(p) for p in pids)
    os.kill(runner_pid, signal.SIGKILL)
    with pytest.raises(StepError, match=r"the warm script runner \(pid \d+\) died \(killed by SIGKILL"):
        await asyncio.wait_for(step, 10)
    assert wait_dead(pids) == []  # the script and its grandchild
    new_pid = await wait_ready(host, runner_pid)
    assert new_pid != runner_pid and host.stats().restarts == 1
    out = await run_warm("whoami", warm)  # warm again
    assert out["ppid"] == new_pid


async def test_a_step_retry_covers_a_runner_death(warm: EngineSettings, tmp_path: Path) -> None:
    host = host_of(warm)
    runner_pid = host.stats().pid
    assert runner_pid is not None
    pidfile = tmp_path / "pids"
    step = {"action": "run_script", "script": "slow", "parameters": {"pidfile": str(pidfile), "seconds": 0.3},
            "retry": {"attempts": 2, "delay": 0.5}}
    job = asyncio.create_task(run([step], warm))
    first = [int(p) for p in (await wait_for_file(pidfile)).split()]
    pidfile.unlink()
    os.kill(runner_pid, signal.SIGKILL)
    result = await asyncio.wait_for(job, 20)
    assert result.success, result.error  # the second attempt ran (warm or spawned, whichever was ready)
    assert result.results[0].output == {"slept": True}
    second = [int(p) for p in pidfile.read_text().split()]  # written again: by a second attempt
    assert second[0] != first[0]
    assert wait_dead(first) == []


async def test_steps_in_flight_on_many_children_all_fail_cleanly(warm: EngineSettings, tmp_path: Path) -> None:
    host = host_of(warm)
    runner_pid = host.stats().pid
    assert runner_pid is not None
    files = [tmp_path / f"pids{i}" for i in range(5)]
    steps = [asyncio.create_task(run_script("slow", {"pidfile": str(f)}, warm)) for f in files]
    pids = [int(p) for f in files for p in (await wait_for_file(f)).split()]
    os.kill(runner_pid, signal.SIGKILL)
    outcomes = await asyncio.wait_for(asyncio.gather(*steps, return_exceptions=True), 10)
    assert all(isinstance(o, StepError) and "died" in o.message for o in outcomes), outcomes
    assert wait_dead(pids) == []
    await wait_ready(host, runner_pid)


async def test_the_runner_is_recycled_after_n_forks(settings: EngineSettings, warm_dir: Path) -> None:
    async with warm_settings(settings, recycle_after=3) as chosen:
        host = host_of(chosen)
        first = host.stats().pid
        parents = []
        for index in range(1, 10):
            parents.append((await run_warm("whoami", chosen))["ppid"])
            if index % 3 == 0:  # the replacement takes a moment to start; the old runner serves meanwhile
                await wait_until(lambda n=index // 3: host.stats().recycles == n)
        stats = host.stats()
        assert stats.recycles >= 2 and stats.restarts == 0
        assert len(set(parents)) >= 3 and parents[0] == first
        # Retired runners exit once their last step ended.
        assert wait_dead([pid for pid in set(parents) if pid != stats.pid]) == []


async def test_stop_kills_running_scripts_and_the_runner(settings: EngineSettings, warm_dir: Path,
                                                         tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    async with warm_settings(settings) as chosen:
        host = host_of(chosen)
        runner_pid = host.stats().pid
        assert runner_pid is not None
        step = asyncio.create_task(run_script("slow", {"pidfile": str(pidfile)}, chosen))
        pids = [int(p) for p in (await wait_for_file(pidfile)).split()]
        await host.stop()
        with pytest.raises(StepError, match="died"):
            await asyncio.wait_for(step, 5)
    assert wait_dead([runner_pid, *pids]) == []


# ---------------------------------------------------------------- exit reports and the spare


async def start_and_finish(settings: EngineSettings, name: str, stdin: bytes = b"{}") -> WarmChild:
    """Run script ``name`` through WarmRunner.start_step and supervise, as run_script does."""
    path = (settings.scripts_dir / f"{name}.py").resolve()
    child = await host_of(settings).start_step(path, argv=[str(path)], cwd=path.parent, stdin=stdin)
    try:
        await supervise(child, stdin=child.unsent_stdin, time_limit=10, max_output_bytes=65536)
    finally:
        child.close()
    return child


@pytest.mark.parametrize(("script", "returncode", "reported"), [
    ("whoami", 0, True),
    ("exit_7_via_raise", 7, True),
    ("raises", 1, True),
    ("hard_exit", 3, False),  # os._exit in the script: no exit steps, no report; reaped
    ("self_terminate", -signal.SIGTERM, False),  # a signal: reaped
])  # fmt: skip
async def test_a_child_reports_a_normal_exit_itself(warm: EngineSettings, script: str, returncode: int,
                                                    reported: bool) -> None:
    # The step ends on the child's own report instead of after the kernel tore its memory down.
    child = await start_and_finish(warm, script)
    assert (child.returncode, child.reported) == (returncode, reported)


async def test_the_input_is_written_before_the_step_is_sent(warm: EngineSettings) -> None:
    # What the pipe holds goes in at once and stdin is closed (nothing left for supervise to feed); a
    # larger input leaves the rest to it.
    path = (warm.scripts_dir / "echo.py").resolve()
    for payload, whole in ((b'{"n": 1}', True), (b'{"blob": "' + b"z" * 300_000 + b'"}', False)):
        child = await host_of(warm).start_step(path, argv=[str(path)], cwd=path.parent, stdin=payload)
        try:
            if whole:
                assert child.unsent_stdin == b"" and child.stdin is None
            else:
                assert 0 < len(child.unsent_stdin) < len(payload) and child.stdin is not None
                assert payload.endswith(child.unsent_stdin)
            outcome = await supervise(child, stdin=child.unsent_stdin, time_limit=10, max_output_bytes=1_000_000)
        finally:
            child.close()
        assert outcome.returncode == 0 and msgspec.json.decode(outcome.stdout) == {
            "echo": msgspec.json.decode(payload)}


def report_address(runner_pid: int) -> bytes:
    """The runner's exit-report socket name, found through its fds' inodes in /proc/net/unix."""
    inodes = set()
    for fd in os.listdir(f"/proc/{runner_pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            link = os.readlink(f"/proc/{runner_pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes and fields[7].startswith("@secauto-warm-runner-"):
            return b"\0" + fields[7][1:].encode()
    raise AssertionError(f"runner {runner_pid} has no report socket")


async def test_exit_reports_count_only_from_the_steps_own_child(warm: EngineSettings, tmp_path: Path) -> None:
    # Anyone on the host can send to the runner's report socket; a report from another process (this
    # test, which is not the step's child) neither ends the step nor harms the runner.
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(run_warm("slow", warm, {"pidfile": str(pidfile), "seconds": 60}))
    pids = [int(p) for p in (await wait_for_file(pidfile)).split()]
    runner_pid = host_of(warm).stats().pid
    assert runner_pid is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for forged in (b"0", b"1", b"garbage", str(pids[0]).encode()):
            sock.sendto(forged, report_address(runner_pid))
    await asyncio.sleep(0.3)
    assert not task.done() and all(alive(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_dead(pids) == []
    assert host_of(warm).stats().pid == runner_pid
    assert (await run_warm("whoami", warm))["ppid"] == runner_pid


def test_without_a_report_socket_children_are_only_reaped(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # A sandbox that refuses the abstract socket costs the reports, never the runner.
    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    assert warm_runner._report_socket() is None
    assert "no exit reports" in capsys.readouterr().err


async def test_the_spares_rehearsal_leaves_nothing_behind(warm: EngineSettings) -> None:
    # The spare builds stdio objects on placeholder pipes, does a JSON round trip and compiles a pattern
    # before its step arrives; the script sees its own pipes on 0-2, its whole input, and re's cache as
    # the runner left it.
    payload = {"pattern": _REHEARSAL_PATTERN, "blob": "x" * 100_000}  # more than the pipe takes ahead
    for _ in range(3):  # the first step may run in a fork made on demand; the next ones in spares
        out = await run_warm("runner_traces", warm, payload)
        assert out == {"pattern_cached": False, "stdio_fds": [0, 1, 2], "stdin_rest": ""}


async def test_fork_latency_is_recorded(warm: EngineSettings) -> None:
    for _ in range(5):
        await run_warm("echo", warm)
    stats = host_of(warm).stats()
    assert stats.forks == 5
    assert stats.fork_ms_p50 is not None and 0 < stats.fork_ms_p50 < 1000
    assert stats.start_ms_p50 is not None and stats.start_ms_p99 is not None
    assert 0 < stats.start_ms_p50 <= stats.start_ms_p99 < 10_000


async def test_a_folder_module_named_like_a_preloaded_one_makes_the_script_spawn(
        warm: EngineSettings, tmp_path: Path) -> None:
    """Spawned, a script imports a `json.py` beside it (its folder is sys.path[0]); a fork of the runner
    already holds the standard json. Such a script spawns, so it behaves as it would under python."""
    folder = tmp_path / "shadowing"
    folder.mkdir()
    (folder / "json.py").write_text("def load(stream):\n    return {'local': True}\n"
                                    "def dumps(value):\n    return repr(sorted(value.items()))\n")
    write_script(folder, "uses_json", """
        import json, sys
        print('{"local_json": "%s"}' % json.dumps(json.load(sys.stdin)).replace('"', "'"))
    """)
    settings = msgspec.structs.replace(warm, scripts_dir=folder)
    result = await run([{"run": "uses_json"}], settings)
    assert result.success, result.error
    assert result.results[0].runner == "spawn"
    assert result.results[0].output == {"local_json": "[('local', True)]"}
    # Without the clash, the same folder runs warm again (the listing is re-read when the folder changes).
    (folder / "json.py").unlink()
    write_script(folder, "plain", """
        import json, sys
        print(json.dumps({"ok": json.load(sys.stdin) == {}}))
    """)
    result = await run([{"run": "plain"}], settings)
    assert result.success, result.error
    assert result.results[0].runner == "warm" and result.results[0].output == {"ok": True}
