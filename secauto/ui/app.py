"""Assembles the dashboard: an aiohttp sub-application mounted under ``/ui`` on the node's app.

Its routes stay out of the API's role and OpenAPI machinery (they answer HTML, not the API's JSON), but
each declares its own access (:mod:`secauto.ui.access`): building the app fails for a route without
one. Middlewares, outermost first: :func:`~secauto.ui.errors.error_pages` (errors as HTML pages),
:func:`~secauto.ui.sessions.session_middleware` (who, which role, forgery checks). Every response gets
the security headers of :mod:`secauto.ui.security`. The parent app's middlewares (metrics, errors, API
auth) run first; the API's auth lets these handlers through, since they declare no API role.
"""

from __future__ import annotations

from aiohttp import web

from secauto.api.state import EventSource
from secauto.config import UiConfig
from secauto.store.sessions import LoginThrottle, SessionStore
from secauto.ui import dlq, events, jobs, live, login, overview, schedules
from secauto.ui.access import PUBLIC, Handler, access, declared_access
from secauto.ui.errors import error_pages
from secauto.ui.live import LIVE_HUB, LiveHub
from secauto.ui.overview import ENDS_CACHE, RecentEndsCache
from secauto.ui.render import setup_templates
from secauto.ui.security import add_security_headers
from secauto.ui.sessions import redirect, session_middleware
from secauto.ui.state import SESSIONS, THROTTLE, UI_CONFIG
from secauto.ui.static import static_file

ROUTE_MODULES = (login, overview, jobs, schedules, dlq, events, live)
PREFIX = "/ui"


@access(PUBLIC)
async def to_overview(request: web.Request) -> web.StreamResponse:
    """``/`` and ``/ui/``: the overview is at ``/ui``."""
    return redirect(PREFIX)


def route_table() -> list[tuple[str, str, Handler]]:
    """Every ``(method, path under /ui, handler)`` of the dashboard."""
    table: list[tuple[str, str, Handler]] = [entry for module in ROUTE_MODULES for entry in module.ROUTES]
    table += [("GET", "/", to_overview), ("GET", "/static/{name:.+}", static_file)]
    return table


def create_ui_app(ui_config: UiConfig, sessions: SessionStore, throttle: LoginThrottle,
                  events_source: EventSource) -> web.Application:
    """The dashboard sub-application. Raises RuntimeError if a route declares no access."""
    app = web.Application(middlewares=[error_pages, session_middleware])
    app[UI_CONFIG] = ui_config
    app[SESSIONS] = sessions
    app[THROTTLE] = throttle
    app[ENDS_CACHE] = RecentEndsCache()
    hub = LiveHub(events_source)
    app[LIVE_HUB] = hub
    setup_templates(app)
    for method, path, handler in route_table():
        if declared_access(handler) is None:
            raise RuntimeError(f"dashboard route {method} {PREFIX}{path} declares no access")
        app.router.add_route(method, path, handler)
    app.on_response_prepare.append(add_security_headers)

    async def close_hub(_: web.Application) -> None:
        await hub.close()

    app.on_shutdown.append(close_hub)
    return app


def mount_ui(parent: web.Application, ui: web.Application) -> None:
    """Serve ``ui`` under /ui and redirect ``/`` there."""
    parent.add_subapp(PREFIX, ui)
    parent.router.add_get("/", to_overview)
