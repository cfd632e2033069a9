"""``/ui/events``: the latest cluster events as a live tail (the node's live hub keeps the newest
200 while a dashboard tab is open), filtered by family; the page's Pause button stops its refreshes."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from secauto.ui.access import access
from secauto.ui.errors import read_query
from secauto.ui.live import LIVE_HUB
from secauto.ui.render import render
from secauto.ui.sessions import is_fragment

SHOWN = 100
FAMILIES = ("job.", "node.", "leader.", "schedule.")


class EventsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["job.", "node.", "leader.", "schedule."] | None = None


@access("viewer")
async def events_page(request: web.Request) -> web.StreamResponse:
    query = read_query(request, EventsQuery)
    hub = request.app[LIVE_HUB]
    events = [event for event in reversed(hub.recent) if query.type is None or event.type.startswith(query.type)]
    context = {
        "nav": "events",
        "live": True,
        "events": events[:SHOWN],
        "families": FAMILIES,
        "family": query.type,
        "live_url": "/ui/events" + (f"?type={query.type}" if query.type else ""),
    }
    return render(request, "events_live.html" if is_fragment(request) else "events.html", context)


ROUTES = [
    ("GET", "/events", events_page),
]
