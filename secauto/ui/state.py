"""What the dashboard's sub-application and its requests carry: typed keys for its parts, and the
visitor (identity and session) on each request that passed :mod:`secauto.ui.sessions`."""

from __future__ import annotations

import msgspec
from aiohttp import web

from secauto.config import ApiKey, UiConfig
from secauto.store.sessions import LoginThrottle, SessionStore


class Visitor(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling a dashboard route: the key's identity, and the session when the browser sent one
    (None for a request that presented an API key header)."""

    identity: ApiKey
    session_id: str | None
    csrf: str | None


UI_CONFIG = web.AppKey("ui_config", UiConfig)
SESSIONS = web.AppKey("ui_sessions", SessionStore)
THROTTLE = web.AppKey("ui_login_throttle", LoginThrottle)

# Set on requests with a valid session or API key header; unset on public routes without one.
VISITOR = web.RequestKey("ui_visitor", Visitor)
