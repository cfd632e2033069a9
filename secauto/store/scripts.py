"""Loads the Lua scripts in ``lua/`` (each prefixed with ``lib.lua``) and registers them on a client.

redis-py's ``Script`` objects run with EVALSHA and fall back to loading the script on NOSCRIPT, so a
Redis restart or failover needs no special handling here.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

SCRIPT_NAMES = ("submit", "claim", "finish", "renew", "reap", "handback", "cancel", "requeue", "forget", "leader",
                "release")


@cache
def script_source(name: str) -> str:
    """The full source of script ``name``: ``lib.lua`` followed by ``<name>.lua``."""
    folder = resources.files("secauto.store") / "lua"
    library = (folder / "lib.lua").read_text(encoding="utf-8")
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    return f"{library}\n{body}"


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
