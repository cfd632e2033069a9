"""``GET /cluster/events``: the cluster's event channel as Server-Sent Events.

Filters: ``job_id`` (one job's events) and ``type`` (exact, e.g. ``job.completed``, or a family ending
in a dot, e.g. ``job.``). Each event is sent as ``event: <type>`` / ``id`` / ``data: <the event JSON>``.
Cancellation (the node stopping) ends the stream and propagates. The subscription survives Redis
reconnects (the stream stays open; a comment line marks the gap, since
events published meanwhile are lost, as with any pub/sub subscriber); a comment every 15 s keeps
proxies from closing an idle stream. The stream ends when the client disconnects or the node stops.
Secret values known to this node are masked in every event sent (events are masked where they are
published already; this is the last boundary).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import msgspec
from aiohttp import web
from loguru import logger
from msgspec import UNSET, UnsetType

from secauto.api.inputs import parse_query
from secauto.api.roles import requires
from secauto.api.spec import REF_TEMPLATE, operation, whole
from secauto.api.state import EVENTS
from secauto.models import Event, event_decoder
from secauto.redaction import REDACTOR
from secauto.store.events import RESUBSCRIBED, subscribe

KEEPALIVE_S = 15.0


class EventsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # UNSET, not None, for "not given": parse_query would read `?job_id=null` as None.
    job_id: Annotated[str, msgspec.Meta(max_length=100)] | UnsetType = UNSET
    type: Annotated[str, msgspec.Meta(pattern=whole(r"[a-z_]+(\.[a-z_]*)?"))] | UnsetType = UNSET


class StreamEvent(msgspec.Struct, kw_only=True):
    """One event of the stream, as an SSE client reads it (the handler writes these lines itself)."""

    event: str  # the event's type, e.g. job.completed
    id: str  # its sequence number in this stream
    data: Annotated[str, msgspec.Meta(
        description="the event as JSON (the Event schema)",
        extra_json_schema={"contentMediaType": "application/json",
                           "contentSchema": {"$ref": REF_TEMPLATE.format(name="Event")}})]


def wanted(event: Event, query: EventsQuery) -> bool:
    if query.job_id is not UNSET and event.job_id != query.job_id:
        return False
    if query.type is UNSET:
        return True
    return event.type.startswith(query.type) if query.type.endswith(".") else event.type == query.type


@requires("viewer")
@operation("The cluster's events as Server-Sent Events", query=EventsQuery, ok=StreamEvent,
           media_type="text/event-stream",
           description="Each event is sent as `event: <type>`, `id: <n>` and `data: <the event JSON>` (the Event "
                       "schema, as published on secauto:events:<cluster>); the response schema describes one "
                       "event as an SSE client reads it. Filters: job_id, and type (exact, e.g. "
                       "job.completed, or a family ending in a dot, e.g. job.). Comment lines keep the stream "
                       "alive every 15 s and mark a lost Redis connection. The stream ends when the client "
                       "disconnects or the node stops.")
async def stream_events(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, EventsQuery)
    source = request.app[EVENTS]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(b": connected\n\n")
    inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)

    async def pump() -> None:
        # A slow client that lets 10,000 events pile up loses the oldest ones rather than the node's memory.
        async for payload in subscribe(source.redis, source.channel, component="api"):
            if inbox.full():
                inbox.get_nowait()
            inbox.put_nowait(payload)

    reader = asyncio.create_task(pump(), name="sse-subscription")
    sequence = 0
    try:
        first = True
        while not reader.done():
            try:
                payload = await asyncio.wait_for(inbox.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if payload == RESUBSCRIBED:
                if not first:
                    await response.write(b": resubscribed after a lost connection; events may be missing\n\n")
                first = False
                continue
            event = event_decoder.decode(payload)
            if wanted(event, query):
                sequence += 1
                await response.write(b"event: " + event.type.encode() + b"\nid: " + str(sequence).encode()
                                     + b"\ndata: " + REDACTOR.json_bytes(payload) + b"\n\n")
        if not reader.cancelled() and reader.exception() is not None:  # it never ends by itself
            logger.bind(component="api").opt(exception=reader.exception()).error("event stream subscription failed")
    except ConnectionResetError:
        logger.bind(component="api").debug("event stream client went away")
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return response


ROUTES = [
    ("GET", "/cluster/events", stream_events),
]
