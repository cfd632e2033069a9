"""Small measurement helpers: percentiles, timestamps, Redis INFO snapshots and their deltas."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio

# Commands the bench itself sends (or that only describe the server); never counted as work.
EXCLUDED_COMMANDS = frozenset({"info", "config|resetstat", "config|get", "config|set", "command|docs", "client|setinfo",
                               "hello", "function|flush", "script|flush", "flushall"})


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile of already sorted values (NaN for none)."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low))


def summary_ms(values: Iterable[float]) -> dict[str, float | int]:
    """p50/p95/p99/max/mean (ms, 1 decimal) and n of ``values`` given in ms."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {"n": len(ordered), "p50": round(percentile(ordered, 50), 1), "p95": round(percentile(ordered, 95), 1),
            "p99": round(percentile(ordered, 99), 1), "max": round(ordered[-1], 1),
            "mean": round(sum(ordered) / len(ordered), 1)}


def epoch(timestamp: str | None) -> float | None:
    """RFC 3339 (``2024-01-15T10:35:00.123Z``) to epoch seconds; None stays None."""
    if not timestamp:
        return None
    return datetime.fromisoformat(timestamp).timestamp()


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else math.inf


@dataclass
class RedisSnapshot:
    """INFO commandstats calls per command, plus total_reads_processed and used_memory."""

    calls: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    used_memory: int = 0

    @classmethod
    async def take(cls, client: redis.asyncio.Redis) -> RedisSnapshot:
        stats = await client.info("commandstats")
        other = await client.info("stats")
        memory = await client.info("memory")
        calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
                 if isinstance(value, Mapping) and name.startswith("cmdstat_")}
        return cls(calls=calls, reads=int(other.get("total_reads_processed", 0)),
                   used_memory=int(memory.get("used_memory", 0)))


@dataclass
class CommandDelta:
    """Commands and socket reads between two snapshots, net of the bench's own traffic."""

    calls: dict[str, float]
    reads: float
    seconds: float

    @classmethod
    def between(cls, before: RedisSnapshot, after: RedisSnapshot, seconds: float, *,
                own_calls: Mapping[str, int] | None = None, own_reads: int = 0) -> CommandDelta:
        calls: dict[str, float] = {}
        for name, count in after.calls.items():
            if name in EXCLUDED_COMMANDS:
                continue
            delta = count - before.calls.get(name, 0) - (own_calls or {}).get(name, 0)
            if delta > 0:
                calls[name] = float(delta)
        return cls(calls=calls, reads=float(max(0, after.reads - before.reads - own_reads)), seconds=seconds)

    def minus_background(self, background: CommandDelta | None) -> CommandDelta:
        """Subtract an idle window's rates (heartbeats, lease/poll timers) scaled to this window."""
        if background is None or background.seconds <= 0:
            return self
        scale = self.seconds / background.seconds
        calls = {name: max(0.0, count - background.calls.get(name, 0.0) * scale) for name, count in self.calls.items()}
        return CommandDelta(calls={k: v for k, v in calls.items() if v > 0},
                            reads=max(0.0, self.reads - background.reads * scale), seconds=self.seconds)

    def per_job(self, jobs: int) -> dict[str, Any]:
        total = sum(self.calls.values())
        scripts = sum(v for k, v in self.calls.items() if k in ("evalsha", "eval", "fcall", "evalsha_ro", "fcall_ro"))
        by_command = {name: round(count / jobs, 3)
                      for name, count in sorted(self.calls.items(), key=lambda item: -item[1])}
        return {
            "commands_per_job": round(total / jobs, 2),
            "script_calls_per_job": round(scripts / jobs, 3),
            # One socket read per request or pipeline: the closest server-side count of round-trips.
            "roundtrips_per_job_est": round(self.reads / jobs, 2),
            "by_command_per_job": by_command,
            "note": "INFO commandstats deltas, net of the bench's own commands and of the idle-window rate "
                    "(heartbeats, timers); commands run inside Lua scripts are counted too; round-trips are "
                    "INFO stats total_reads_processed deltas (one read per request or pipeline)",
        }

    def per_second(self) -> dict[str, Any]:
        if self.seconds <= 0:
            return {}
        return {"seconds": round(self.seconds, 2), "commands_per_s": round(sum(self.calls.values()) / self.seconds, 2),
                "reads_per_s": round(self.reads / self.seconds, 2),
                "by_command_per_s": {k: round(v / self.seconds, 2) for k, v in sorted(self.calls.items())}}
