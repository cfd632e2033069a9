"""Shared fixtures.

- Unit tests (tests/unit) never start Redis: the Redis fixtures are lazy and refuse unit tests.
- Integration tests (tests/integration) and e2e tests (tests/e2e) get a private redis-server started
  once per session on a free port (never the Redis on 6379 that may run on this machine), flushed
  before each test that asks for it.
- e2e tests start real `secauto serve` processes through `process_factory`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
import redis.asyncio

from tests.support.procs import SCRUBBED_ENV_NAMES, SCRUBBED_ENV_PREFIXES, SecautoProcess, pid_exists
from tests.support.redis_proc import RedisProcess

TESTS_DIR = Path(__file__).resolve().parent
REDIS_FIXTURES = frozenset({"redis_server", "redis_url", "redis_client", "redis_process_factory"})


# ---------------------------------------------------------------------------------------------------
# markers by directory
# ---------------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: fast test, no external processes (tests/unit)")
    config.addinivalue_line("markers", "integration: uses a real redis-server (tests/integration)")
    config.addinivalue_line("markers", "e2e: starts real secauto processes")


def _kind(item: pytest.Item) -> str | None:
    try:
        rel = Path(str(item.path)).resolve().relative_to(TESTS_DIR)
    except ValueError:
        return None
    top = rel.parts[0] if len(rel.parts) > 1 else None
    return top if top in ("unit", "integration", "e2e") else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        kind = _kind(item)
        if kind is not None:
            item.add_marker(getattr(pytest.mark, kind))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _kind(item) == "unit":
        used = REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used:
            pytest.fail(
                f"unit tests must not use a real redis-server (fixtures {sorted(used)}); "
                "use fakeredis or move the test to tests/integration",
                pytrace=False,
            )


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop REDIS_URL / SECAUTO_* from the environment so no test reaches a Redis it did not choose."""
    for name in list(os.environ):
        if name in SCRUBBED_ENV_NAMES or name.startswith(SCRUBBED_ENV_PREFIXES):
            monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisServer:
    """The session's private redis-server. Do not stop or reconfigure it in tests: use
    `redis_process_factory` for servers a test may kill, restart or configure."""

    host: str
    port: int
    url: str
    pid: int
    process: RedisProcess = field(repr=False, compare=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found on PATH (scripts/test installs it)", pytrace=False)
    proc = RedisProcess(dir=tmp_path_factory.mktemp("redis-session"))
    proc.start()
    try:
        yield RedisServer(host=proc.host, port=proc.port, url=proc.url, pid=proc.pid, process=proc)
    finally:
        proc.close()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, with every database and the script cache flushed first."""
    client = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port)
    try:
        await client.flushall()
        await client.script_flush()
    finally:
        await client.aclose()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A redis.asyncio client (bytes replies) to the freshly flushed session server."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()


class RedisProcessFactory(Protocol):
    def __call__(
        self,
        *,
        port: int | None = ...,
        appendonly: bool = ...,
        appendfsync: str | None = ...,
        password: str | None = ...,
        unixsocket: bool = ...,
        extra_args: Sequence[str] = ...,
        start: bool = ...,
    ) -> RedisProcess: ...


@pytest.fixture
def redis_process_factory(tmp_path: Path) -> Iterator[RedisProcessFactory]:
    """Start extra redis-servers a test owns (to kill, restart with AOF, pause, password-protect...).

    `factory(appendonly=True, appendfsync="always")` returns a started RedisProcess; every one is
    stopped at teardown and its pids checked gone.
    """
    started: list[RedisProcess] = []

    def factory(
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str | None = None,
        password: str | None = None,
        unixsocket: bool = False,
        extra_args: Sequence[str] = (),
        start: bool = True,
    ) -> RedisProcess:
        proc = RedisProcess(
            port,
            dir=tmp_path / f"redis-{len(started)}",
            appendonly=appendonly,
            appendfsync=appendfsync,
            password=password,
            unixsocket=unixsocket,
            extra_args=extra_args,
        )
        started.append(proc)
        return proc.start() if start else proc

    yield factory

    for proc in started:
        proc.resume()
        proc.stop()
    alive = [pid for proc in started for pid in proc.pids if pid_exists(pid)]
    assert not alive, f"redis-server pids still alive after teardown: {alive}"


# ---------------------------------------------------------------------------------------------------
# secauto processes
# ---------------------------------------------------------------------------------------------------


def _url_from_config(config_path: Path) -> str | None:
    try:
        import yaml

        data = yaml.safe_load(config_path.read_text()) or {}
        server = data.get("server") or {}
        port = server.get("port")
        host = server.get("host") or "127.0.0.1"
    except (OSError, ValueError, AttributeError, ImportError):
        return None
    if not port:
        return None
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{int(port)}"


class ProcessFactory(Protocol):
    def __call__(
        self,
        config_path: str | os.PathLike[str],
        *,
        name: str | None = ...,
        url: str | None = ...,
        env: Mapping[str, str] | None = ...,
        args: Sequence[str] = ...,
        start: bool = ...,
    ) -> SecautoProcess: ...


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator[ProcessFactory]:
    """Start `python -m secauto serve --config FILE` nodes; all are stopped at teardown.

    `factory(config_path, name="node-a", env={...})` returns a started SecautoProcess whose `url` is
    taken from the config's server.host/port unless given. Logs go to tmp_path/procs/<name>.*.log
    and the tails are printed at teardown (shown by pytest when the test failed).
    """
    started: list[SecautoProcess] = []
    log_dir = tmp_path / "procs"

    def factory(
        config_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        start: bool = True,
    ) -> SecautoProcess:
        path = Path(config_path)
        proc = SecautoProcess(
            path,
            log_dir=log_dir,
            name=name or f"node{len(started)}",
            url=url or _url_from_config(path),
            env=env,
            args=args,
        )
        started.append(proc)
        return proc.start() if start else proc

    yield factory

    for proc in started:
        proc.cleanup()
    for proc in started:
        if proc.pids:
            print(proc.log_tail(200))
    alive = {proc.name: proc.alive_pids() for proc in started if proc.alive_pids()}
    assert not alive, f"secauto processes still alive after teardown: {alive}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"redis-server: {shutil.which('redis-server') or 'NOT FOUND'}"]
