"""Loads the Lua scripts in ``lua/`` (each prefixed with ``lib.lua``) and registers them on a client.

redis-py's ``Script`` objects run with EVALSHA and fall back to loading the script on NOSCRIPT, so a
Redis restart or failover needs no special handling here.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

SCRIPT_NAMES = ("submit", "claim", "complete", "renew", "reap", "leader", "release")


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
        self.submit: AsyncScript = redis.register_script(script_source("submit"))
        self.claim: AsyncScript = redis.register_script(script_source("claim"))
        self.complete: AsyncScript = redis.register_script(script_source("complete"))
        self.renew: AsyncScript = redis.register_script(script_source("renew"))
        self.reap: AsyncScript = redis.register_script(script_source("reap"))
        self.leader: AsyncScript = redis.register_script(script_source("leader"))
        self.release: AsyncScript = redis.register_script(script_source("release"))
