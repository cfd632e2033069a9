"""``GET /audit`` (admin): the cluster's audit trail, newest first, filtered, in cursor pages.

The entries are written by the audit middleware (``secauto/api/middlewares.py``) through each node's
audit actor; a node's entries reach the stream within ~100 ms (this node's own at once: the listing
flushes them first).
"""

from __future__ import annotations

import datetime
import time
from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from actors.audit import FlushAudit
from secauto.api.errors import ApiError, ErrorDetail
from secauto.api.inputs import parse_query
from secauto.api.roles import requires
from secauto.api.spec import operation, respond, whole
from secauto.api.state import AUDIT_STORE, SYSTEM
from secauto.models import utc_now
from secauto.store.audit import AuditEntry, AuditRecord

MAX_SCAN = 5000  # stream entries one request may read while filtering
RFC3339 = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
_moment = msgspec.json.Decoder(Annotated[datetime.datetime, msgspec.Meta(tz=True)])


class AuditQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    actor: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    # An exact action (job.submit), or a family ending with a dot (job.).
    action: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | UnsetType = UNSET
    # RFC 3339 with a time zone. A string here (parsed below): converting query strings leniently would
    # also take "0.5" as a Unix time, which the document does not promise.
    since: Annotated[str, msgspec.Meta(pattern=whole(RFC3339), description="RFC 3339, e.g. 2024-01-15T10:00:00Z")
                     ] | UnsetType = UNSET
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    cursor: Annotated[str, msgspec.Meta(pattern=whole(r"[0-9]{1,20}-[0-9]{1,20}"))] | UnsetType = UNSET


class AuditView(msgspec.Struct, kw_only=True):
    """An entry: ``{timestamp, actor, role, action, target, source_ip, outcome}`` plus the HTTP status,
    the node that answered and the entry's id in the stream."""

    id: str
    timestamp: str
    actor: str | None
    role: str | None
    action: str
    target: str | None
    source_ip: str | None
    outcome: Literal["success", "failure"]
    status: int
    node_id: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditView:
        entry = record.entry
        return cls(id=record.id, timestamp=entry.timestamp, actor=entry.actor, role=entry.role, action=entry.action,
                   target=entry.target, source_ip=entry.source_ip, outcome=entry.outcome, status=entry.status,
                   node_id=entry.node_id)


class AuditResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    entries: list[AuditView]  # newest first
    next_cursor: str | None  # pass as ``cursor`` for the next page; null when nothing older remains
    timestamp: str = msgspec.field(default_factory=utc_now)


def _matches(entry: AuditEntry, query: AuditQuery) -> bool:
    if query.actor is not UNSET and entry.actor != query.actor:
        return False
    if query.action is not UNSET:
        family = query.action.endswith(".")
        if not (entry.action.startswith(query.action) if family else entry.action == query.action):
            return False
    return True


def _since_ms(query: AuditQuery) -> int | None:
    """``since`` in ms; 400 naming it for a date that does not exist (2024-02-30)."""
    if query.since is UNSET:
        return None
    try:
        moment = _moment.decode(msgspec.json.encode(query.since))
    except msgspec.ValidationError as exc:
        raise ApiError(400, "validation_error", "invalid query parameters",
                       [ErrorDetail(field="since", message=str(exc), path="$.since")]) from None
    try:
        return max(0, int(moment.timestamp() * 1000))
    except (OverflowError, ValueError):
        return 0


@requires("admin")
@operation("The audit trail: state changes and refused requests, newest first", query=AuditQuery,
           ok=AuditResponse,
           description="Filters: `actor` (a key name), `action` (exact, or a family ending with a dot: `job.`), "
                       "`since` (RFC 3339). `next_cursor` continues the listing; it is null once nothing older "
                       "remains. A request reads at most 5,000 entries while filtering, so a sparse filter may "
                       "answer fewer than `limit` entries together with a cursor to go on from.")
async def list_audit(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, AuditQuery)
    since_ms = _since_ms(query)
    await request.app[SYSTEM].get("audit").ask(FlushAudit(), timeout=5.0)
    store = request.app[AUDIT_STORE]
    before = query.cursor if query.cursor is not UNSET else None
    # Entries past the retention may wait for the next write to be trimmed: never list them.
    since = max(since_ms or 0, store.oldest_kept_ms(int(time.time() * 1000))) or None
    found: list[AuditView] = []
    scanned, more = 0, True
    while more and len(found) < query.limit and scanned < MAX_SCAN:
        batch = min(MAX_SCAN - scanned, max(100, 4 * query.limit))
        page = await store.page(before=before, since_ms=since, count=batch)
        scanned += batch
        more = page.more
        for record in page.records:
            before = record.id
            if _matches(record.entry, query):
                found.append(AuditView.of(record))
                if len(found) == query.limit:
                    more = more or record.id != page.last_id
                    break
        else:
            before = page.last_id or before
    cursor = before if more and before is not None else None
    return respond(request, AuditResponse(entries=found, next_cursor=cursor))


ROUTES = [
    ("GET", "/audit", list_audit),
]
