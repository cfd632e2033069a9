"""Logging in and out: ``GET``/``POST /ui/login`` (form field ``api_key``) and ``POST /ui/logout``.

The key travels only in the POST body, never in a URL. Failed logins are counted per client address in
the store (so every node shares the count): past ``ui.login_attempts`` within ``ui.login_window``, the
address gets 429 with ``Retry-After``, whether its next key is right or not. Behind a proxy every
client has the proxy's address: the limit is then per proxy.
"""

from __future__ import annotations

from aiohttp import web

from secauto.api.auth import authenticate, key_digest
from secauto.api.spec import audited
from secauto.api.state import CALLER, KEYRING
from secauto.ui.access import PUBLIC, access
from secauto.ui.errors import PageError
from secauto.ui.render import render
from secauto.ui.sessions import COOKIE, clear_session_cookie, redirect, safe_next, set_session_cookie
from secauto.ui.state import SESSIONS, THROTTLE, VISITOR

MAX_KEY_LENGTH = 4096


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


def _login_page(request: web.Request, *, next_url: str, message: str | None, status: int = 200,
                headers: dict[str, str] | None = None) -> web.Response:
    return render(request, "login.html", {"next": next_url, "message": message}, status=status, headers=headers)


@access(PUBLIC)
async def login_form(request: web.Request) -> web.StreamResponse:
    """The login form; a visitor who already has a session goes on to ``next``."""
    next_url = safe_next(request.query.get("next"))
    visitor = request.get(VISITOR)
    if visitor is not None and visitor.session_id is not None:
        return redirect(next_url)
    message = None
    if request.query.get("ended"):
        message = "Your session ended (timeout, logout elsewhere, or the key is no longer valid). Log in again."
    elif request.query.get("bye"):
        message = "You are logged out."
    return _login_page(request, next_url=next_url, message=message)


@access(PUBLIC)
@audited("ui.login")
async def login(request: web.Request) -> web.StreamResponse:
    """Check the key; start a session (a new id, replacing any the browser had) and go to ``next``."""
    throttle = request.app[THROTTLE]
    address = _address(request)
    wait = await throttle.retry_after(address)
    if wait is not None:
        raise PageError(429, f"Too many failed logins from your address; try again in {wait} s.",
                        {"Retry-After": str(wait)})
    form = await request.post()
    key = form.get("api_key")
    raw_next = form.get("next")
    next_url = safe_next(raw_next if isinstance(raw_next, str) else None)
    key = key.strip() if isinstance(key, str) else ""
    identity = authenticate(key, request.config_dict[KEYRING]) if 0 < len(key) <= MAX_KEY_LENGTH else None
    if identity is None:
        await throttle.record_failure(address)
        return _login_page(request, next_url=next_url, message="Invalid API key.", status=401)
    await throttle.clear(address)
    request[CALLER] = identity  # the audit entry's actor (IDENTITY stays unset: not logged in when it came)
    sessions = request.app[SESSIONS]
    previous = request.cookies.get(COOKIE)
    if previous:
        await sessions.delete(previous)
    session_id, _ = await sessions.create(key_digest(key))
    response = redirect(next_url)
    set_session_cookie(request, response, session_id)
    return response


@access("viewer")
@audited("ui.logout")
async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (in the store: every node forgets it) and go back to the login page."""
    visitor = request[VISITOR]
    if visitor.session_id is not None:
        await request.app[SESSIONS].delete(visitor.session_id)
    response = redirect("/ui/login?bye=1")
    clear_session_cookie(response)
    return response


ROUTES = [
    ("GET", "/login", login_form),
    ("POST", "/login", login),
    ("POST", "/logout", logout),
]
