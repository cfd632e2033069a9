"""The dashboard's static files: its own CSS and JS and the vendored htmx, served from memory.

Only the files listed in :data:`FILES` exist (no path from the request ever reaches the file system).
Each URL carries a hash of the file's content (``/ui/static/ui.css?v=1a2b3c4d5e6f``), so the files are
cached for a year and a new release is fetched at once.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import msgspec
from aiohttp import web

from secauto.ui.access import PUBLIC, access

FILES: dict[str, str] = {
    "ui.css": "text/css",
    "ui.js": "text/javascript",
    "vendor/htmx.min.js": "text/javascript",
    "vendor/sse.js": "text/javascript",
}
LONG_CACHE = "public, max-age=31536000, immutable"


class StaticFile(msgspec.Struct, frozen=True):
    body: bytes
    content_type: str
    version: str  # the first 12 hex digits of the content's SHA-256


class StaticFiles:
    """The files of :data:`FILES`, read once from the package."""

    def __init__(self) -> None:
        root = resources.files("secauto.ui").joinpath("static")
        self.files: dict[str, StaticFile] = {}
        for name, content_type in FILES.items():
            body = root.joinpath(name).read_bytes()
            self.files[name] = StaticFile(body, content_type, hashlib.sha256(body).hexdigest()[:12])

    def url(self, name: str) -> str:
        """The versioned URL of a listed file; KeyError for any other name (a template bug)."""
        return f"/ui/static/{name}?v={self.files[name].version}"


STATIC = StaticFiles()


@access(PUBLIC)
async def static_file(request: web.Request) -> web.StreamResponse:
    """A listed file (404 otherwise); cached for a year when asked for by its versioned URL."""
    found = STATIC.files.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound(reason="no such file")
    etag = f'"{found.version}"'
    headers = {"ETag": etag,
               "Cache-Control": LONG_CACHE if request.query.get("v") == found.version else "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, content_type=found.content_type, charset="utf-8", headers=headers)
