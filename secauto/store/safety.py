"""Storage safety: would Redis drop SecAuto's keys on its own?

With ``maxmemory`` reached, Redis evicts keys according to ``maxmemory-policy``. SecAuto's keys are its
state: an evicted pending job is lost, an evicted node record makes a healthy node look dead (its
running jobs are run a second time elsewhere), an evicted lease or schedule state breaks the fencing.

- ``allkeys-*`` evicts any key: unsafe.
- ``volatile-*`` evicts only keys with a TTL. SecAuto always has such keys mixed in with the others:
  node records and the leader lease live by their TTL, finished jobs expire after ``job_retention``.
  Evicting them early is exactly the node-looks-dead failure above: unsafe as well.
- ``noeviction`` (Redis' default) refuses writes at ``maxmemory`` instead: SecAuto reports the errors
  (503 on submissions) and loses nothing. The only safe policy.

The policy is checked whatever ``maxmemory`` is (0 means "no limit" on 64-bit builds, but anyone can
set a limit later with CONFIG SET). Managed Redis services often refuse ``CONFIG GET``: then the
policy is unknown, which is logged as a warning and otherwise accepted.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

SAFE_POLICY = "noeviction"


class EvictionCheck(msgspec.Struct, frozen=True):
    """The policy found (None if Redis would not say), and the problem with it (None if safe or unknown)."""

    policy: str | None
    problem: str | None = None
    refused: str | None = None  # why CONFIG GET was refused


def eviction_problem(policy: str) -> str | None:
    """Why ``policy`` can lose SecAuto's keys, in one line (None for noeviction)."""
    if policy == SAFE_POLICY:
        return None
    if policy.startswith("volatile-"):
        what = ("it evicts keys that have a TTL, and SecAuto's node records, leader lease and finished jobs "
                "have one (a healthy node would look dead and its jobs would run twice)")
    else:
        what = "it may evict any key (pending jobs, node records, leases, schedules)"
    return (f"Redis maxmemory-policy is {policy}: once maxmemory is reached {what}; "
            f"set maxmemory-policy {SAFE_POLICY}")


async def check_eviction(redis: Redis) -> EvictionCheck:
    """Ask Redis for its ``maxmemory-policy``. Raises redis-py's connection errors when Redis is down."""
    try:
        answer = await redis.config_get("maxmemory-policy")
    except ResponseError as exc:  # a managed Redis without CONFIG, or an ACL without it
        return EvictionCheck(policy=None, refused=str(exc))
    raw = answer.get("maxmemory-policy", answer.get(b"maxmemory-policy"))  # type: ignore[call-overload]
    if raw is None:
        return EvictionCheck(policy=None, refused="CONFIG GET maxmemory-policy answered nothing")
    policy = raw.decode() if isinstance(raw, bytes) else str(raw)
    return EvictionCheck(policy=policy, problem=eviction_problem(policy.lower()))
