"""``GET /metrics``: the node's Prometheus metrics (public if ``metrics.public``, else viewer).

A scrape answers 200 whenever the node runs, Redis or not: Prometheus must keep seeing the node's own
series, and above all ``secauto_redis_up 0``, during a Redis outage (a 503 would only say "node down").
"""

from __future__ import annotations

import asyncio
import math

from aiohttp import web
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.core import ActorSystem
from actors.messages import ClusterView, GetClusterView, ListDeadLetters
from secauto.api.roles import metrics_role
from secauto.api.spec import operation
from secauto.api.state import ENGINE, METRICS, SYSTEM
from secauto.metrics import NodeMetrics

# Below Prometheus' default scrape_timeout (10 s): a slow store costs the cluster gauges, not the scrape.
CLUSTER_READ_TIMEOUT_S = 4.0


@metrics_role
@operation("The node's metrics in the Prometheus text format", ok=str, media_type="text/plain",
           description="Jobs submitted, completed, failed, retried and dead-lettered, job duration and queue "
                       "wait, queue size (all pending, and ready to start), DLQ size, running jobs, node "
                       "load, active nodes, leader flag, Redis reachability, webhook deliveries, HTTP requests "
                       "by route and status, the warm script runner (up, forks, restarts, fork time). The "
                       "cluster gauges are NaN while Redis is unreachable. Needs a viewer key unless "
                       "metrics.public.")
async def metrics(request: web.Request) -> web.StreamResponse:
    """Refresh the gauges that describe the cluster, then render every metric.

    The node-local gauges (running jobs, load, leader flag) are kept current by the actors that own
    them. When the cluster gauges cannot be read, they become NaN for this scrape; when the reason is
    a Redis error, ``secauto_redis_up`` becomes 0 too.
    """
    node_metrics = request.app[METRICS]
    await _refresh_cluster_gauges(request.app[SYSTEM], node_metrics)
    host = request.app[ENGINE].script_host
    node_metrics.observe_script_runner(host.stats() if host is not None else None)
    return web.Response(body=node_metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


async def _refresh_cluster_gauges(system: ActorSystem, node_metrics: NodeMetrics) -> None:
    """Read queue sizes, DLQ size and active nodes from the store; NaN what cannot be read in time."""
    try:
        async with asyncio.timeout(CLUSTER_READ_TIMEOUT_S):
            view: ClusterView = await system.get("discovery").ask(GetClusterView(), timeout=None)
            dlq_size, _ = await system.get("dispatcher").ask(ListDeadLetters(offset=0, limit=0), timeout=None)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        logger.bind(component="api").warning("metrics: cluster gauges unknown, Redis unreachable: {}", exc)
        node_metrics.redis_up.set(0)
        _unknown_cluster_gauges(node_metrics)
        return
    except TimeoutError:
        # The discovery or dispatcher actor is busy (often on a hung Redis); the heartbeat decides
        # whether Redis is down, this scrape only knows it could not read the cluster in time.
        logger.bind(component="api").warning("metrics: cluster gauges not read within {}s", CLUSTER_READ_TIMEOUT_S)
        _unknown_cluster_gauges(node_metrics)
        return
    node_metrics.redis_up.set(1)
    node_metrics.queue_size.set(view.queue_size)
    node_metrics.queue_ready.set(view.queue_ready)
    node_metrics.active_nodes.set(sum(1 for node in view.nodes if node.status == "active"))
    node_metrics.dlq_size.set(dlq_size)


def _unknown_cluster_gauges(node_metrics: NodeMetrics) -> None:
    # NaN rather than the last value: a stale queue size would keep autoscalers and alerts acting on
    # numbers nobody measured. Prometheus' max/min skip NaN, comparisons with NaN are false.
    for gauge in (node_metrics.queue_size, node_metrics.queue_ready, node_metrics.dlq_size, node_metrics.active_nodes):
        gauge.set(math.nan)


ROUTES = [
    ("GET", "/metrics", metrics),
]
