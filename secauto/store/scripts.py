"""Loads the Lua scripts in ``lua/`` (each prefixed with ``lib.lua``) and registers them on a client.

redis-py's ``Script`` objects run with EVALSHA and fall back to loading the script on NOSCRIPT, so a
Redis restart or failover needs no special handling here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

SCRIPT_NAMES = ("submit", "claim", "finish", "renew", "reap", "handback", "cancel", "requeue", "forget", "leader",
                "release", "audit")


@cache
def script_source(name: str) -> str:
    """The full source of script ``name``: ``lib.lua`` followed by ``<name>.lua`` (and, for the schedule
    scripts ``schedule_*.lua``, ``schedule_lib.lua`` between the two)."""
    folder = resources.files("secauto.store") / "lua"
    parts = [(folder / "lib.lua").read_text(encoding="utf-8")]
    if name.startswith("schedule_"):
        parts.append((folder / "schedule_lib.lua").read_text(encoding="utf-8"))
    parts.append((folder / f"{name}.lua").read_text(encoding="utf-8"))
    return "\n".join(parts)


class Scripts:
    """The registered scripts of one Redis client, one attribute per script."""

    def __init__(self, redis: Redis) -> None:
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

    @staticmethod
    def _load(redis: Redis, name: str) -> AsyncScript:
        return redis.register_script(script_source(name))


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
