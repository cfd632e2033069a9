"""engine.script_limits and engine.script_user: config validation, apply_in_child, naming the limit hit.

The runs of real scripts that hit each limit are in tests/integration/test_script_limits.py.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from secauto.config import Config, ConfigError, load_settings, settings_from_config
from secauto.engine.process import run_process
from secauto.engine.script_limits import (
    CPU_GRACE_SECONDS,
    ScriptLimits,
    ScriptUser,
    apply_in_child,
    limit_exceeded,
    resolve_script_user,
    start_failure,
)
from secauto.node import engine_settings
from tests.support.script_users import python_for

NOBODY = resolve_script_user("nobody")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def engine_config(**engine: object) -> Config:
    return msgspec.convert({"engine": engine}, Config)


# ---------------------------------------------------------------- config


def test_no_limits_by_default() -> None:
    settings = load_settings(None, env={})
    assert settings.config.engine.script_limits == ScriptLimits()
    assert settings.script_user is None
    engine = engine_settings(settings)
    assert engine.script_limits == ScriptLimits() and engine.script_user is None


def test_limits_load_and_reach_the_engine_settings(tmp_path: Path) -> None:
    path = write(tmp_path, """
engine:
  script_limits:
    cpu_seconds: 30
    memory_mb: 512
    open_files: 256
""")
    engine = engine_settings(load_settings(path, env={}))
    assert engine.script_limits == ScriptLimits(cpu_seconds=30, memory_mb=512, open_files=256)


def test_null_means_no_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "engine:\n  script_limits:\n    memory_mb: null\n    cpu_seconds: 5\n")
    assert load_settings(path, env={}).config.engine.script_limits == ScriptLimits(cpu_seconds=5)


@pytest.mark.parametrize(("body", "message"), [
    ("cpu_seconds: fast", r"^engine\.script_limits\.cpu_seconds: Expected `int \| null`, got `str`"),
    ("cpu_seconds: 1.5", r"^engine\.script_limits\.cpu_seconds: Expected `int \| null`, got `float`"),
    ("memory_mb: true", r"^engine\.script_limits\.memory_mb: Expected `int \| null`, got `bool`"),
    ("memory_mb: '512'", r"^engine\.script_limits\.memory_mb: Expected `int \| null`, got `str`"),
    ("open_files: 0", r"^engine\.script_limits\.open_files: Expected `int` >= 1"),
    ("processes: -5", r"^engine\.script_limits\.processes: Expected `int` >= 1"),
    ("cpu_seconds: -1", r"^engine\.script_limits\.cpu_seconds: Expected `int` >= 1"),
    ("memory_mb: 99999999999", r"^engine\.script_limits\.memory_mb: Expected `int` <= 16777216"),
    ("memory: 512", r"^engine\.script_limits\.memory: unknown key$"),
    ("nproc: 10", r"^engine\.script_limits\.nproc: unknown key$"),
])  # fmt: skip
def test_bad_limits_are_errors_naming_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, f"engine:\n  script_limits:\n    {body}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})


def test_script_limits_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "engine:\n  script_limits: 512\n")
    with pytest.raises(ConfigError, match=r"^engine\.script_limits: Expected `object`, got `int`"):
        load_settings(path, env={})


def test_script_user_by_name_and_by_uid() -> None:
    by_name = resolve_script_user("nobody")
    assert by_name.uid > 0 and by_name.name == "nobody"
    assert resolve_script_user(by_name.uid) == by_name
    assert resolve_script_user(str(by_name.uid)) == by_name
    # A uid without a passwd entry runs with the gid of the same number.
    assert resolve_script_user(4_000_123) == ScriptUser(uid=4_000_123, gid=4_000_123, name="4000123")


@pytest.mark.parametrize(("value", "message"), [
    ("no-such-user-here", r"^engine\.script_user: no user named 'no-such-user-here'"),
    ("root", r"^engine\.script_user: 'root' is root"),
    (0, r"^engine\.script_user: 'root' is root"),
    (-3, r"^engine\.script_user: -3 is not a uid"),
])  # fmt: skip
def test_bad_script_user_is_an_error_naming_the_key(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_config(engine_config(script_user=value), base_dir=Path.cwd(), euid=0)


@pytest.mark.parametrize(("text", "got"), [("[nobody]", "array"), ("1.5", "float"), ("true", "bool")])
def test_bad_script_user_type_from_a_file(tmp_path: Path, text: str, got: str) -> None:
    path = write(tmp_path, f"engine:\n  script_user: {text}\n")
    with pytest.raises(ConfigError, match=rf"^engine\.script_user: Expected `int \| str \| null`, got `{got}`"):
        load_settings(path, env={})


def test_root_node_with_processes_needs_a_script_user() -> None:
    config = engine_config(script_limits={"processes": 50})
    refusal = r"^engine\.script_limits\.processes: the node runs as root.*engine\.script_user"
    with pytest.raises(ConfigError, match=refusal):
        settings_from_config(config, base_dir=Path.cwd(), euid=0)
    settings = settings_from_config(engine_config(script_limits={"processes": 50}, script_user="nobody"),
                                    base_dir=Path.cwd(), euid=0)
    assert settings.script_user == resolve_script_user("nobody")
    assert engine_settings(settings).script_user == settings.script_user


def test_node_that_is_not_root_may_limit_processes_without_a_script_user() -> None:
    settings = settings_from_config(engine_config(script_limits={"processes": 50}), base_dir=Path.cwd(), euid=1000)
    assert settings.script_user is None
    assert settings.config.engine.script_limits.processes == 50


def test_node_that_is_not_root_cannot_switch_to_another_user() -> None:
    with pytest.raises(ConfigError, match=r"^engine\.script_user: switching scripts to user 'nobody' needs root"):
        settings_from_config(engine_config(script_user="nobody"), base_dir=Path.cwd(), euid=1000)
    nobody = resolve_script_user("nobody")
    # Naming itself is allowed (nothing to switch).
    same = settings_from_config(engine_config(script_user=nobody.uid), base_dir=Path.cwd(), euid=nobody.uid)
    assert same.script_user == nobody


@pytest.mark.skipif(os.geteuid() != 0, reason="the load-time refusal applies to a root node")
def test_load_settings_refuses_processes_on_this_root_machine(tmp_path: Path) -> None:
    path = write(tmp_path, "engine:\n  script_limits:\n    processes: 20\n")
    with pytest.raises(ConfigError, match=r"^engine\.script_limits\.processes: "):
        load_settings(path, env={})
    path = write(tmp_path, "engine:\n  script_user: nobody\n  script_limits:\n    processes: 20\n")
    assert load_settings(path, env={}).script_user == resolve_script_user("nobody")


# ---------------------------------------------------------------- apply_in_child

REPORT = """
import json, os, resource
names = ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_NPROC")
print(json.dumps({"limits": {n: resource.getrlimit(getattr(resource, n)) for n in names},
                  "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()], "groups": os.getgroups()}))
"""


def child_report(setup: Callable[[], object], python: str = sys.executable) -> dict[str, object]:
    done = subprocess.run([python, "-c", REPORT], preexec_fn=setup, capture_output=True, timeout=30, check=True,
                          cwd="/")
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_apply_in_child_sets_each_limit() -> None:
    limits = ScriptLimits(cpu_seconds=7, memory_mb=300, open_files=40, processes=500)
    report = child_report(functools.partial(apply_in_child, limits, None))
    assert report["limits"] == {
        "RLIMIT_CPU": [7, 7 + CPU_GRACE_SECONDS],
        "RLIMIT_AS": [300 << 20, 300 << 20],
        "RLIMIT_NOFILE": [40, 40],
        "RLIMIT_NPROC": [500, 500],
    }
    assert report["ids"] == [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]  # no user: no switch


def test_apply_in_child_leaves_unset_limits_alone() -> None:
    before = {name: list(resource.getrlimit(getattr(resource, name))) for name in ("RLIMIT_CPU", "RLIMIT_AS")}
    report = child_report(functools.partial(apply_in_child, ScriptLimits(open_files=50), None))
    limits = report["limits"]
    assert isinstance(limits, dict)
    assert limits["RLIMIT_NOFILE"] == [50, 50]
    assert {name: limits[name] for name in before} == before


def test_apply_in_child_never_raises_a_lower_hard_limit() -> None:
    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (30, 30))  # already stricter than the configured 1000
        apply_in_child(ScriptLimits(open_files=1000, cpu_seconds=100), None)

    report = child_report(setup)
    limits = report["limits"]
    assert isinstance(limits, dict) and limits["RLIMIT_NOFILE"] == [30, 30]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_apply_in_child_switches_to_the_script_user() -> None:
    python = python_for(NOBODY.uid)
    assert python is not None, "no interpreter that nobody can start"
    report = child_report(functools.partial(apply_in_child, ScriptLimits(processes=64), NOBODY), python=python)
    assert report["ids"] == [NOBODY.uid, NOBODY.uid, NOBODY.gid, NOBODY.gid]
    assert report["groups"] == []  # root's supplementary groups are gone
    limits = report["limits"]
    assert isinstance(limits, dict) and limits["RLIMIT_NPROC"] == [64, 64]


@pytest.mark.skipif(os.geteuid() == 0, reason="needs a node that is not root")
def test_apply_in_child_refuses_a_switch_without_root() -> None:
    with pytest.raises(subprocess.SubprocessError):
        child_report(functools.partial(apply_in_child, ScriptLimits(), NOBODY))


async def test_a_failing_child_setup_is_a_start_failure(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    def refuse() -> None:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(OSError, match=r"setting up the child process failed"):
        await run_process([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], stdin=b"", env={}, cwd=None,
                          time_limit=10, max_output_bytes=1024, child_setup=refuse)
    assert not marker.exists()  # nothing ran


# ---------------------------------------------------------------- which limit was hit

ALL = ScriptLimits(cpu_seconds=2, memory_mb=100, open_files=30, processes=10)
MEMORY_TB = b"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nMemoryError\n"
FORK_TB = b"Traceback (most recent call last):\nBlockingIOError: [Errno 11] Resource temporarily unavailable\n"
FILES_TB = b"Traceback (most recent call last):\nOSError: [Errno 24] Too many open files: 'x'\n"


@pytest.mark.parametrize(("limits", "returncode", "stderr", "expected"), [
    (ALL, -signal.SIGXCPU, b"", "exceeded engine.script_limits.cpu_seconds (2s of CPU time) and was killed"),
    (ALL, -signal.SIGKILL, b"", "engine.script_limits.cpu_seconds by 1s (3s of CPU time"),
    (ALL, 1, MEMORY_TB, "exceeded engine.script_limits.memory_mb (100 MiB of address space)"),
    (ALL, 1, b"OSError: [Errno 12] Cannot allocate memory\n", "engine.script_limits.memory_mb"),
    (ALL, -signal.SIGABRT, b"terminate called after throwing an instance of 'std::bad_alloc'\n",
     "engine.script_limits.memory_mb"),
    (ALL, 127, b"python3: error while loading shared libraries: libm.so.6: failed to map segment from shared "
               b"object\n", "engine.script_limits.memory_mb"),
    (ALL, 1, FORK_TB, "hit engine.script_limits.processes (10 processes and threads of its user)"),
    (ALL, 1, b"RuntimeError: can't start new thread\n", "engine.script_limits.processes"),
    (ALL, 1, FILES_TB, "hit engine.script_limits.open_files (30 open files)"),
    # The last tell-tale wins: a fork failure reported after an (handled) memory error.
    (ALL, 1, MEMORY_TB + FORK_TB, "engine.script_limits.processes"),
    (ALL, 1, FORK_TB + MEMORY_TB, "engine.script_limits.memory_mb"),
])  # fmt: skip
def test_the_limit_hit_is_named(limits: ScriptLimits, returncode: int, stderr: bytes, expected: str) -> None:
    message = limit_exceeded(limits, returncode=returncode, stderr=stderr)
    assert message is not None and expected in message


@pytest.mark.parametrize(("limits", "returncode", "stderr"), [
    (ALL, 0, MEMORY_TB),  # success is never a limit
    (ALL, 1, b"ValueError: bad input\n"),
    (ALL, -signal.SIGTERM, b""),
    (ScriptLimits(), -signal.SIGXCPU, b""),  # no CPU limit configured: not ours to name
    (ScriptLimits(), -signal.SIGKILL, b""),
    (ScriptLimits(cpu_seconds=2), 1, MEMORY_TB),  # memory_mb not set: a MemoryError is the script's own
    (ScriptLimits(memory_mb=100), 1, FORK_TB + FILES_TB),
])  # fmt: skip
def test_other_failures_name_no_limit(limits: ScriptLimits, returncode: int, stderr: bytes) -> None:
    assert limit_exceeded(limits, returncode=returncode, stderr=stderr) is None


def test_a_start_refused_for_processes_is_named() -> None:
    refused = BlockingIOError(11, "Resource temporarily unavailable")
    message = start_failure(ScriptLimits(processes=10), refused)
    assert message is not None and "engine.script_limits.processes (10)" in message
    assert start_failure(ScriptLimits(), refused) is None
    assert start_failure(ScriptLimits(processes=10), PermissionError(13, "Permission denied")) is None
