"""``GET /metrics``: the node's Prometheus metrics (public if ``metrics.public``, else viewer)."""

from __future__ import annotations

from aiohttp import web

from actors.messages import ClusterView, ExecutorStats, GetClusterView, GetStats, IsLeader, ListDeadLetters
from secauto.api.roles import metrics_role
from secauto.api.spec import operation
from secauto.api.state import METRICS, SYSTEM


@metrics_role
@operation("The node's metrics in the Prometheus text format", ok=str, media_type="text/plain",
           description="Jobs submitted, completed, failed, retried and dead-lettered, job duration and queue "
                       "wait, queue and DLQ size, running jobs, node load, active nodes, leader flag, webhook "
                       "deliveries, HTTP requests by route and status. Needs a viewer key unless metrics.public.")
async def metrics(request: web.Request) -> web.StreamResponse:
    """Refresh the gauges that describe the cluster, then render every metric."""
    system, node_metrics = request.app[SYSTEM], request.app[METRICS]
    view: ClusterView = await system.get("discovery").ask(GetClusterView(), timeout=5.0)
    dlq_size, _ = await system.get("dispatcher").ask(ListDeadLetters(offset=0, limit=0), timeout=5.0)
    stats: ExecutorStats = await system.get("executor").ask(GetStats(), timeout=5.0)
    leader: bool = await system.get("reaper").ask(IsLeader(), timeout=5.0)
    node_metrics.queue_size.set(view.queue_size)
    node_metrics.active_nodes.set(sum(1 for node in view.nodes if node.status == "active"))
    node_metrics.dlq_size.set(dlq_size)
    node_metrics.jobs_running.set(stats.running)
    node_metrics.node_load.set(stats.load)
    node_metrics.is_leader.set(1 if leader else 0)
    return web.Response(body=node_metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


ROUTES = [
    ("GET", "/metrics", metrics),
]
