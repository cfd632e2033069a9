"""``GET /health`` (readiness: Redis reachable?) and ``GET /health/live`` (liveness: loop runs)."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from actors.messages import CheckHealth, HealthReport
from secauto import __version__
from secauto.api.errors import RETRY_AFTER_S
from secauto.api.roles import public
from secauto.api.spec import operation, respond
from secauto.api.state import CLUSTER_MODE, SETTINGS, SYSTEM
from secauto.models import utc_now


class HealthResponse(msgspec.Struct, kw_only=True):
    """Readiness: ``success`` and ``status`` say whether the node can reach its job store."""

    success: bool
    status: Literal["healthy", "degraded"]
    node_id: str
    version: str
    cluster_mode: bool
    reason: str | msgspec.UnsetType | None = msgspec.UNSET  # why it is degraded (only then)
    # What is wrong without making the node unready, e.g. a Redis eviction policy that can drop keys.
    warnings: list[str] = []
    timestamp: str = msgspec.field(default_factory=utc_now)


class LiveResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    status: Literal["alive"] = "alive"
    node_id: str
    timestamp: str = msgspec.field(default_factory=utc_now)


@public
@operation("Readiness: can this node reach its job store?", ok=HealthResponse, responses={503: HealthResponse},
           description="200 with status healthy, or 503 with status degraded and the reason (Redis "
                       "unreachable). The readiness probe. `warnings` lists problems that do not make the node "
                       "unready, such as a Redis eviction policy that can drop SecAuto's keys.")
async def health(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    report: HealthReport = await request.app[SYSTEM].get("heartbeat").ask(CheckHealth(), timeout=3.0)
    body = HealthResponse(success=report.healthy, status="healthy" if report.healthy else "degraded",
                          node_id=settings.node_id, version=__version__, cluster_mode=request.app[CLUSTER_MODE],
                          warnings=list(report.warnings))
    if report.healthy:
        return respond(request, body)
    body.reason = report.reason
    return respond(request, body, status=503, headers={"Retry-After": RETRY_AFTER_S})


@public
@operation("Liveness: does this node's event loop run?", ok=LiveResponse, store=False,
           description="200 while the node's event loop runs; a Redis outage does not change it. The "
                       "liveness probe.")
async def live(request: web.Request) -> web.StreamResponse:
    return respond(request, LiveResponse(node_id=request.app[SETTINGS].node_id))


ROUTES = [
    ("GET", "/health", health),
    ("GET", "/health/live", live),
]
