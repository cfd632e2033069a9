"""Per-key rate limits: one token bucket per key name, in this node's memory.

Per node, not cluster-wide: a cluster-wide bucket needs a Redis round-trip on every request (the
normal path would pay for the rare abusive client), while a bucket in memory costs a dict lookup and
some arithmetic. The price is that behind a load balancer spreading requests over N nodes a key gets
up to N times its rate; size ``security.rate_limit`` per node accordingly. ``max_pending`` quotas
(the store's submit script) are the cluster-wide bound on what a key can queue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from secauto.config import ApiKey, RateLimit

Clock = Callable[[], float]
# Above this many buckets, full (idle) ones are dropped: a dropped bucket is the same as a full one.
_PRUNE_ABOVE = 1000


class _Bucket:
    __slots__ = ("limit", "tokens", "updated")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.limit.burst), self.tokens + elapsed * self.limit.per_second)
        self.updated = now


class RateLimiter:
    """Token buckets by key name: ``burst`` requests at once, ``per_second`` on average."""

    def __init__(self, default: RateLimit | None, *, clock: Clock = time.monotonic) -> None:
        self.default = default
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def limit_for(self, key: ApiKey) -> RateLimit | None:
        return key.rate_limit if key.rate_limit is not None else self.default

    def acquire(self, key: ApiKey) -> int | None:
        """Take a token for a request by ``key``. None if it may go on; otherwise the whole seconds
        (>= 1) after which a token will be there (the ``Retry-After`` value); nothing is taken then."""
        limit = self.limit_for(key)
        if limit is None:
            return None
        now = self.clock()
        bucket = self._buckets.get(key.name)
        if bucket is None or bucket.limit != limit:  # a new key, or its limit changed
            if len(self._buckets) >= _PRUNE_ABOVE:
                self._prune(now)
            bucket = self._buckets[key.name] = _Bucket(limit, now)
        else:
            bucket.refill(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / limit.per_second))

    def _prune(self, now: float) -> None:
        for name, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.limit.burst:
                del self._buckets[name]
