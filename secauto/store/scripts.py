"""Loads the Lua scripts in ``lua/`` (each prefixed with ``lib.lua``) and registers them on a client.

redis-py's ``Script`` objects run with EVALSHA and fall back to loading the script on NOSCRIPT, so a
Redis restart or failover needs no special handling here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

SCRIPT_NAMES = ("submit", "claim", "finish", "renew", "reap", "handback", "cancel", "requeue", "forget", "leader",
                "release", "audit", "settle")


@cache
def _lua_file(name: str) -> str:
    return (resources.files("secauto.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def script_source(name: str, prelude: str = "") -> str:
    """The full source of script ``name``: ``lib.lua``, then ``prelude`` (settings compiled into the
    scripts of one queue, see :func:`lua_constants`), then (for the schedule scripts ``schedule_*.lua``)
    ``schedule_lib.lua``, then ``<name>.lua``."""
    parts = [_lua_file("lib"), prelude]
    if name.startswith("schedule_"):
        parts.append(_lua_file("schedule_lib"))
    parts.append(_lua_file(name))
    return "\n".join(parts)


def lua_literal(value: str | int) -> str:
    """``value`` as a Lua literal: an integer, or a double-quoted string in which every byte but letters,
    digits and ``:_.-`` is a decimal escape (nothing can end or bend it)."""
    if isinstance(value, int):
        return str(value)
    safe = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.-")
    return '"' + "".join(chr(byte) if byte in safe else f"\\{byte:03d}" for byte in value.encode()) + '"'


def lua_constants(function: str, values: Mapping[str, str | int]) -> str:
    """Lua source defining ``function()``, which returns a fresh table of ``values`` (a fresh one per call:
    scripts may change it, e.g. spend a budget)."""
    fields = ", ".join(f"{name} = {lua_literal(value)}" for name, value in values.items())
    return f"local function {function}() return {{{fields}}} end"


class Scripts:
    """The registered scripts of one Redis client, one attribute per script. ``prelude`` is Lua source
    put between ``lib.lua`` and each script (settings of the queue that runs them)."""

    def __init__(self, redis: Redis, prelude: str = "") -> None:
        self._prelude = prelude
        self.submit = self._load(redis, "submit")
        self.claim = self._load(redis, "claim")
        self.finish = self._load(redis, "finish")
        self.renew = self._load(redis, "renew")
        self.reap = self._load(redis, "reap")
        self.handback = self._load(redis, "handback")
        self.cancel = self._load(redis, "cancel")
        self.requeue = self._load(redis, "requeue")
        self.forget = self._load(redis, "forget")
        self.leader = self._load(redis, "leader")
        self.release = self._load(redis, "release")
        self.settle = self._load(redis, "settle")

    def _load(self, redis: Redis, name: str) -> AsyncScript:
        return redis.register_script(script_source(name, self._prelude))


async def run_script(redis: Redis, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """``script(keys=keys, args=args)`` for the hot calls (submit, claim): one EVALSHA packed in one go
    and sent on a pooled connection, with the client's retry policy and the same disconnect on a
    connection error, but without redis-py's per-command layers (argument encoding one at a time,
    response callbacks, its observability hooks), which cost more node CPU than the rest of a
    coalesced submit call. Raises what ``script(...)`` raises; a NOSCRIPT (Redis restarted, or its
    script cache flushed) goes through ``script(...)``, which loads the script and runs it."""
    packed = pack_command((b"EVALSHA", script.sha, len(keys), *keys, *args))
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call, unused-ignore]

    async def send() -> Any:
        await conn.send_packed_command(packed)
        return await conn.read_response()

    async def failed(error: BaseException) -> None:
        await conn.disconnect()

    try:
        return await conn.retry.call_with_retry(send, failed)
    except NoScriptError:
        pass
    finally:
        await pool.release(conn)
    return await script(keys=keys, args=args)


async def run_pipelined(redis: Redis, calls: Sequence[tuple[AsyncScript, Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Run several script calls in one round-trip (pipeline, not a transaction: each script is atomic
    on its own). Results come back in order; a script's error is returned in its place, not raised.

    redis-py's pipelines check every script with SCRIPT EXISTS before each execution (an extra
    round-trip); here EVALSHA goes out directly and the scripts are loaded only after a NOSCRIPT
    (Redis restarted or flushed its script cache); then only the calls that got NOSCRIPT are sent
    again (a NOSCRIPT call ran nothing; the others ran and must not run twice).
    """
    results = await _send(redis, calls)
    retry = [index for index, result in enumerate(results) if isinstance(result, NoScriptError)]
    if retry:
        for script in {calls[index][0] for index in retry}:
            script.sha = await redis.script_load(script.script)
        for index, result in zip(retry, await _send(redis, [calls[index] for index in retry]), strict=True):
            results[index] = result
    return results


async def _send(redis: Redis, calls: Sequence[tuple[AsyncScript, Sequence[Any], Sequence[Any]]]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            _evalsha(pipe, script, keys, args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    return results


def _evalsha(pipe: Pipeline, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> None:
    pipe.evalsha(script.sha, len(keys), *keys, *args)
