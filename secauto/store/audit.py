"""The audit trail: one Redis stream per cluster, bounded in length and in age.

Entries are appended in batches (one script call per batch, ``lua/audit.lua``, see
``actors/audit.py``), and each batch then trims the stream to ``max_entries`` (``XTRIM MAXLEN``) and
drops the entries older than the retention (``XTRIM MINID``). The trims are exact, not ``~``:
approximate trimming only drops whole radix-tree nodes (100 entries each), so a quiet cluster would
keep entries past their retention; once per batch, the exact trim costs about one entry removed per
entry added. Stream ids (``<ms>-<seq>``, from the Redis clock) order the entries and serve as the
cursor of ``GET /audit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec
from loguru import logger
from redis.asyncio import Redis

from secauto.store.keys import Keys
from secauto.store.scripts import script_source

Outcome = Literal["success", "failure"]
_FIELD = b"entry"


class AuditEntry(msgspec.Struct, kw_only=True):
    """Who did what, from where, and how it ended."""

    timestamp: str  # RFC 3339 UTC, when the node answered
    actor: str | None  # the API key's name; null when no valid key was presented
    role: str | None  # that key's role
    action: str  # e.g. job.submit, key.delete, or "<METHOD> <route>" for routes without a declared name
    target: str | None  # what it acted on: job id, key name, ... (null when nothing in particular)
    source_ip: str | None  # the client's address (see server.trusted_proxies)
    outcome: Outcome  # success (2xx/3xx) or failure
    status: int  # the HTTP status answered
    node_id: str  # the node that answered


class AuditRecord(msgspec.Struct, kw_only=True):
    """A stored entry and its stream id."""

    id: str
    entry: AuditEntry


class AuditPage(msgspec.Struct, kw_only=True):
    records: list[AuditRecord]
    last_id: str | None  # the oldest stream id read (decoded or not): where the next page starts
    more: bool  # the read was full, so older entries may remain


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AuditEntry)


class AuditStore:
    def __init__(self, redis: Redis, keys: Keys, *, retention_s: float, max_entries: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_ms = int(retention_s * 1000)
        self.max_entries = max_entries
        self._append = redis.register_script(script_source("audit"))

    async def append(self, entries: Sequence[AuditEntry], now_ms: int) -> None:
        """Append ``entries`` in one script call and trim by length and age (relative to ``now_ms``).

        Atomic: a batch is stored whole or not at all. After a connection error the caller cannot know
        which, and retries: an audit trail may then repeat a batch; it must not lose one."""
        if not entries:
            return
        await self._append(keys=[self.keys.audit], args=[self.max_entries, f"{self.oldest_kept_ms(now_ms)}-0",
                                                           *(_encoder.encode(entry) for entry in entries)])

    def oldest_kept_ms(self, now_ms: int) -> int:
        """The time (ms) before which entries are past the retention."""
        return max(0, now_ms - self.retention_ms)

    async def page(self, *, before: str | None, since_ms: int | None, count: int) -> AuditPage:
        """Up to ``count`` entries, newest first, older than stream id ``before`` (exclusive) and not
        older than ``since_ms``. An entry that does not decode is skipped with a warning."""
        upper = f"({before}" if before is not None else "+"
        lower = f"{since_ms}-0" if since_ms is not None else "-"
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrevrange(  # type: ignore[assignment]
            self.keys.audit, upper, lower, count=count)
        found = []
        for stream_id, fields in rows:
            try:
                found.append(AuditRecord(id=stream_id.decode(), entry=_decoder.decode(fields.get(_FIELD, b""))))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                logger.bind(component="audit").warning("skipping malformed audit entry {}: {}", stream_id, exc)
        last = rows[-1][0].decode() if rows else None
        return AuditPage(records=found, last_id=last, more=len(rows) == count)

    async def length(self) -> int:
        return int(await self.redis.xlen(self.keys.audit))
