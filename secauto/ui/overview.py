"""``/ui`` (the overview: nodes, leader, queue, running, DLQ, last hour's success rate, run-time
percentiles and throughput) and ``/ui/nodes``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from actors.core import ActorRef
from actors.messages import ClusterView, GetClusterView
from secauto.api.state import SETTINGS, SYSTEM
from secauto.operations import dead_letters, recent_ends, summarize, throughput
from secauto.ui.access import access
from secauto.ui.render import render
from secauto.ui.sessions import is_fragment
from secauto.ui.sparkline import sparkline

ENDS_FRESH_S = 1.0


class RecentEndsCache:
    """The latest attempt ends (up to 10,000 lines), read at most once a second per node whatever the
    number of open overview tabs; concurrent readers share one read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = asyncio.Lock()
        self._read_at = float("-inf")
        self._ends: list[str] = []

    async def get(self, dispatcher: ActorRef) -> list[str]:
        async with self._lock:
            if self.clock() - self._read_at >= ENDS_FRESH_S:
                self._ends = await recent_ends(dispatcher)
                self._read_at = self.clock()
            return self._ends


ENDS_CACHE = web.AppKey("ui_recent_ends", RecentEndsCache)


async def cluster_view(request: web.Request) -> ClusterView:
    view: ClusterView = await request.config_dict[SYSTEM].get("discovery").ask(GetClusterView(), timeout=5.0)
    return view


@access("viewer")
async def overview(request: web.Request) -> web.StreamResponse:
    system = request.config_dict[SYSTEM]
    dispatcher = system.get("dispatcher")
    view = await cluster_view(request)
    ends = await request.app[ENDS_CACHE].get(dispatcher)
    dlq_size, _ = await dead_letters(dispatcher, offset=0, limit=0)
    now_ms = int(time.time() * 1000)
    up = [node for node in view.nodes if node.status != "inactive"]
    context = {
        "nav": "overview",
        "live": True,
        "cluster_name": request.config_dict[SETTINGS].config.cluster.cluster_name,
        "nodes_up": len(up),
        "nodes_stale": len(view.nodes) - len(up),
        "leader": view.leader,
        "queue_size": view.queue_size,
        "running": sum(node.jobs_running for node in up),
        "capacity": sum(node.capacity for node in up if node.status == "active"),
        "dlq_size": dlq_size,
        "stats": summarize(ends, now_ms),
        "spark": sparkline(throughput(ends, now_ms)),
    }
    return render(request, "overview_live.html" if is_fragment(request) else "overview.html", context)


@access("viewer")
async def nodes(request: web.Request) -> web.StreamResponse:
    view = await cluster_view(request)
    context = {
        "nav": "nodes",
        "live": True,
        "nodes": sorted(view.nodes, key=lambda node: node.id),
        "leader": view.leader,
        "this_node": request.config_dict[SETTINGS].node_id,
    }
    return render(request, "nodes_live.html" if is_fragment(request) else "nodes.html", context)


ROUTES = [
    ("GET", "", overview),
    ("GET", "/nodes", nodes),
]
