"""The vendored htmx files are exactly the recorded ones, and static files are served from memory with
long cache headers on their versioned URLs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from secauto.ui.static import FILES, STATIC
from tests.unit.ui.conftest import Tab

STATIC_DIR = Path(__file__).resolve().parents[3] / "secauto" / "ui" / "static"


def test_vendored_files_match_their_recorded_checksums() -> None:
    vendor = STATIC_DIR / "vendor"
    recorded = {}
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        recorded[name] = digest
    assert set(recorded) == {"htmx.min.js", "sse.js", "htmx.LICENSE", "htmx-ext-sse.LICENSE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert 'version:"2.0.11"' in (vendor / "htmx.min.js").read_text()
    # the served copies are the recorded files
    assert hashlib.sha256(STATIC.files["vendor/htmx.min.js"].body).hexdigest() == recorded["htmx.min.js"]
    assert hashlib.sha256(STATIC.files["vendor/sse.js"].body).hexdigest() == recorded["sse.js"]


def test_pages_load_nothing_from_another_origin() -> None:
    templates = STATIC_DIR.parent / "templates"
    for template in templates.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), template.name
        assert "<script>" not in text and "<style" not in text and "style=" not in text, template.name


async def test_static_files_are_cached_by_version(tab: Tab) -> None:
    for name, content_type in FILES.items():
        url = STATIC.url(name)
        async with tab.http.get(url) as response:
            assert response.status == 200, name
            assert response.content_type == content_type
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert response.headers["Content-Security-Policy"] and response.headers["X-Frame-Options"] == "DENY"
            etag = response.headers["ETag"]
        async with tab.http.get(url, headers={"If-None-Match": etag}) as response:
            assert response.status == 304
    async with tab.http.get("/ui/static/ui.css") as response:  # unversioned: revalidate
        assert response.status == 200 and response.headers["Cache-Control"] == "no-cache"
    for path in ("/ui/static/nope.js", "/ui/static/vendor/SHA256SUMS", "/ui/static/%2e%2e/app.py"):
        async with tab.http.get(path) as response:
            assert response.status == 404, path
