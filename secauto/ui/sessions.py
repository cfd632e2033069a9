"""Who is calling a dashboard route, and whether it may: the session cookie or an API key header, the
role the route declares, and the same-origin and CSRF checks of state-changing requests.

* An ``Authorization: Bearer`` or ``X-API-Key`` header is checked as the API checks it; such a request
  is not subject to the CSRF checks (a browser never adds these headers to a cross-site request).
* Otherwise the ``secauto_session`` cookie names a session in the store (:mod:`secauto.store.sessions`);
  the identity is resolved again from the key's digest on every request, so a revoked or expired key
  ends the session at once.
* Every POST needs a same-origin request (``Origin``, else ``Sec-Fetch-Site``, else ``Referer``); a
  cookie-authenticated one also needs the session's CSRF token (form field ``csrf_token`` or header
  ``X-CSRF-Token``). Refusals are 403 pages.
* A page that needs a session and gets none redirects to ``/ui/login?next=...``; a fragment, an event
  stream or a POST gets 401 (with ``HX-Redirect`` so htmx takes the tab to the login page).

The request's ``IDENTITY`` (:mod:`secauto.api.state`) is set to the key's identity, so whatever records
who did what (logs, audit) names the key for dashboard actions too.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from aiohttp import web

from secauto.api.auth import allows, authenticate, identity_for_digest, presented_key
from secauto.api.state import IDENTITY, KEYRING
from secauto.ui.access import PUBLIC, Access, Handler, declared_access
from secauto.ui.errors import PageError
from secauto.ui.security import CSRF_FIELD, CSRF_HEADER, same_origin, token_matches
from secauto.ui.state import SESSIONS, UI_CONFIG, VISITOR, Visitor

COOKIE = "secauto_session"
COOKIE_PATH = "/ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/ui/login"


def is_fragment(request: web.Request) -> bool:
    """An htmx request for a page's live part rather than the whole page."""
    return request.headers.get("HX-Request") == "true"


def set_session_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    """HttpOnly, SameSite=Strict, only under /ui; Secure under TLS or when ``ui.secure_cookie`` says so.
    No Max-Age: the browser forgets it when it closes, the server enforces the timeouts anyway."""
    secure = request.secure or request.app[UI_CONFIG].secure_cookie
    response.set_cookie(COOKIE, session_id, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=secure)


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=COOKIE_PATH)


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST, the browser GETs ``location``."""
    return web.Response(status=303, headers={"Location": location})


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path under /ui on this site, never another site."""
    if not target or len(target) > 1000 or "\\" in target:
        return "/ui"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not (parts.path == "/ui" or parts.path.startswith("/ui/")):
        return "/ui"
    if parts.path in (LOGIN_PATH, "/ui/logout", "/ui/live"):
        return "/ui"
    return target


async def find_visitor(request: web.Request) -> tuple[Visitor | None, bool]:
    """(the visitor, whether the request carried a session cookie that is no longer valid).

    Raises PageError 401 for an API key header with an unknown key."""
    keys = request.config_dict[KEYRING]
    key = presented_key(request)
    if key is not None:
        identity = authenticate(key, keys)
        if identity is None:
            raise PageError(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
        return Visitor(identity=identity, session_id=None, csrf=None), False
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None, False
    sessions = request.app[SESSIONS]
    record = await sessions.load(session_id)
    if record is None:
        return None, True
    try:
        digest = bytes.fromhex(record.key_sha256)
    except ValueError:
        digest = b""
    identity = identity_for_digest(digest, keys)
    if identity is None:  # the key was revoked or expired: so is every session it started
        await sessions.delete(session_id)
        return None, True
    return Visitor(identity=identity, session_id=session_id, csrf=record.csrf), False


def login_required(request: web.Request, stale_cookie: bool) -> web.StreamResponse:
    """Send a visitor without a (valid) session to the login page."""
    target = f"{LOGIN_PATH}?next={quote(request.path_qs, safe='')}"
    if stale_cookie:
        target += "&ended=1"
    if request.method == "GET" and not is_fragment(request) and request.path != "/ui/live":
        response = redirect(target)
    else:
        response = web.Response(status=401, text="log in at /ui/login\n",
                                headers={"HX-Redirect": target, "Cache-Control": "no-store"})
    if stale_cookie:
        clear_session_cookie(response)
    return response


async def check_forgery(request: web.Request, visitor: Visitor | None, level: Access) -> None:
    """Refuse (403) a state-changing request that may have been forged by another site."""
    if visitor is not None and visitor.session_id is None:
        return  # API key header: not something a browser sends on its own
    if not same_origin(request):
        raise PageError(403, "Cross-origin request refused: this action must come from a page of this site.")
    if visitor is None or level == PUBLIC:
        return  # the login form: it starts a new session, the same-origin check is what applies
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        field = form.get(CSRF_FIELD)
        presented = field if isinstance(field, str) else None
    if visitor.csrf is None or not token_matches(presented, visitor.csrf):
        raise PageError(403, "Missing or wrong CSRF token: reload the page and try again.")


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the visitor, enforce the route's declared access, check POSTs for forgery."""
    level = declared_access(request.match_info.handler)
    if level is None:
        return await handler(request)  # aiohttp's own 404/405 handler: let it raise
    visitor, stale_cookie = await find_visitor(request)
    if visitor is not None:
        request[VISITOR] = visitor
        request[IDENTITY] = visitor.identity
    if level != PUBLIC:
        if visitor is None:
            return login_required(request, stale_cookie)
        if not allows(visitor.identity.role, level):
            raise PageError(403, f"This needs the {level} role; you are logged in as {visitor.identity.role}.")
    if request.method not in SAFE_METHODS:
        await check_forgery(request, visitor, level)
    response = await handler(request)
    if stale_cookie and visitor is None:
        clear_session_cookie(response)
    return response
