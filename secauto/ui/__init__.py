"""The web dashboard served by every node under ``/ui`` (README: "Web dashboard").

Server-rendered HTML (Jinja2 through aiohttp-jinja2, autoescaped), a vendored htmx with its SSE
extension for live fragments, no build step and no inline script. :func:`secauto.ui.app.create_ui_app`
builds the aiohttp sub-application; the node mounts it with :func:`secauto.ui.app.mount_ui`.
"""
