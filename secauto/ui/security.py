"""The browser-facing protections of every dashboard response and request.

* Headers on every response under ``/ui`` (pages, fragments, errors, static files, the event stream):
  a strict Content-Security-Policy (no inline script or style, nothing from another origin, no
  framing), ``X-Frame-Options: DENY``, ``nosniff``, no referrer across origins, and ``no-store`` on
  everything but the versioned static files, so a shared browser never shows a cached page after logout.
* Same-origin and CSRF-token checks for state-changing requests (used by :mod:`secauto.ui.sessions`).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook of the dashboard app: runs for every response it sends."""
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers.setdefault("Cache-Control", "no-store")


def same_origin(request: web.Request) -> bool:
    """Whether a request comes from a page of this origin: ``Origin`` (sent by browsers on every POST)
    must name this host; without it, ``Sec-Fetch-Site`` must say same-origin, else the ``Referer`` must
    be on this host. A request with none of them is refused."""
    host = request.host.lower()
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host
    return False


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented CSRF token with the session's."""
    if not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())
