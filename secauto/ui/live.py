"""Live pages: one Server-Sent Events connection per tab (``GET /ui/live``), used only as a signal.

Every node has one :class:`LiveHub`: while at least one tab is connected it holds one subscription to
the cluster's event channel (not one per tab), keeps the latest events for the events page, and marks
every connected tab "changed". Each tab's stream sends at most one ``changed`` message per
``ui.live_interval`` seconds (2 by default), whatever the event rate: a burst of 10,000 events is one
or two messages, and each message makes the page refetch its live fragments once (htmx
``hx-trigger="sse:changed"``). A comment line every 15 s keeps proxies from closing an idle stream
(and finds out about a tab that went away: the write fails); the session is checked again then, and
a stream whose session ended sends a last ``changed`` (so the page's next fetch gets 401 and goes to
the login page) and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import msgspec
from aiohttp import web
from loguru import logger

from secauto.api.state import EventSource
from secauto.models import Event, event_decoder
from secauto.store.events import RESUBSCRIBED, subscribe
from secauto.ui.access import access
from secauto.ui.sessions import find_visitor
from secauto.ui.state import UI_CONFIG

KEEPALIVE_S = 15.0
KEEP_EVENTS = 200


class LiveHub:
    """The node's one subscription for the dashboard, shared by every open tab.

    ``join`` returns a flag that is set whenever something happened; the subscription runs while at
    least one flag is joined and stops with the last ``leave``. ``close`` (node shutdown) sets every flag
    and stops the subscription; streams see :attr:`closed` and end.
    """

    def __init__(self, source: EventSource, *, keep: int = KEEP_EVENTS) -> None:
        self.source = source
        self.listeners: set[asyncio.Event] = set()
        self.recent: deque[Event] = deque(maxlen=keep)
        self.received = 0  # events seen since the node started
        self.closed = False
        self._pump: asyncio.Task[None] | None = None

    def join(self) -> asyncio.Event:
        """A new tab's flag; starts the subscription if it is the first. RuntimeError once closed."""
        if self.closed:
            raise RuntimeError("the live hub is closed")
        flag = asyncio.Event()
        self.listeners.add(flag)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name="ui-live-subscription")
        return flag

    async def leave(self, flag: asyncio.Event) -> None:
        """Forget a tab's flag; the last one to leave stops the subscription."""
        self.listeners.discard(flag)
        if not self.listeners:
            await self._stop()

    async def close(self) -> None:
        """Wake every stream so it ends, and stop the subscription."""
        self.closed = True
        self._signal()
        await self._stop()

    def _signal(self) -> None:
        for flag in self.listeners:
            flag.set()

    async def _stop(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _run(self) -> None:
        """Relay the channel as signals until cancelled; an unexpected error is logged and ends it (the
        next tab to join starts a new one)."""
        try:
            async for payload in subscribe(self.source.redis, self.source.channel, component="ui"):
                if payload != RESUBSCRIBED:  # after a reconnect: things may have changed meanwhile
                    try:
                        event = event_decoder.decode(payload)
                    except msgspec.DecodeError:
                        logger.bind(component="ui").debug("ignoring a malformed event on {}", self.source.channel)
                        continue
                    self.recent.append(event)
                    self.received += 1
                self._signal()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.bind(component="ui").exception("the dashboard's event subscription failed")


LIVE_HUB = web.AppKey("ui_live_hub", LiveHub)


@access("viewer")
async def live_stream(request: web.Request) -> web.StreamResponse:
    """The tab's signal stream (see the module docstring). Ends when the client goes away, the session
    ends or the node stops."""
    hub = request.app[LIVE_HUB]
    interval = request.app[UI_CONFIG].live_interval
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    flag = hub.join()
    try:
        await response.write(b"retry: 5000\n: connected\n\n")
        last_sent = float("-inf")
        last_check = loop.time()
        while not hub.closed:
            with contextlib.suppress(TimeoutError):  # no signal for a while: check the session, keep alive
                await asyncio.wait_for(flag.wait(), timeout=KEEPALIVE_S)
            if hub.closed:
                break
            if loop.time() - last_check >= KEEPALIVE_S:
                last_check = loop.time()
                visitor, _ = await find_visitor(request)
                if visitor is None:
                    await response.write(b"event: changed\ndata: ended\n\n")
                    break
            if not flag.is_set():
                await response.write(b": keepalive\n\n")
                continue
            wait = last_sent + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # events arriving meanwhile are covered by this message
            flag.clear()
            await response.write(b"event: changed\ndata: 1\n\n")
            last_sent = loop.time()
    except ConnectionResetError:
        logger.bind(component="ui").debug("a dashboard tab went away")
    finally:
        await hub.leave(flag)
    return response


ROUTES = [
    ("GET", "/live", live_stream),
]
