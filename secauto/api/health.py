"""``GET /health`` (readiness: Redis reachable?) and ``GET /health/live`` (liveness: loop runs)."""

from __future__ import annotations

from aiohttp import web

from actors.messages import CheckHealth, HealthReport
from secauto import __version__
from secauto.api.app import CLUSTER_MODE, RETRY_AFTER_S, SETTINGS, SYSTEM, public
from secauto.api.errors import json_response


@public
async def health(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    report: HealthReport = await request.app[SYSTEM].get("heartbeat").ask(CheckHealth(), timeout=3.0)
    body: dict[str, object] = {
        "success": report.healthy,
        "status": "healthy" if report.healthy else "degraded",
        "node_id": settings.node_id,
        "version": __version__,
        "cluster_mode": request.app[CLUSTER_MODE],
    }
    if report.healthy:
        return json_response(body)
    body["reason"] = report.reason
    return json_response(body, status=503, headers={"Retry-After": RETRY_AFTER_S})


@public
async def live(request: web.Request) -> web.StreamResponse:
    return json_response({"success": True, "status": "alive", "node_id": request.app[SETTINGS].node_id})


ROUTES = [
    ("GET", "/health", health),
    ("GET", "/health/live", live),
]
