"""Prometheus metrics of one node (prometheus-client), served at ``GET /metrics``.

Each node has its own registry (several nodes can share a process in tests). Counters and histograms
are updated where things happen (API, executor, reaper, webhooks); gauges that describe the cluster
(queue size, ready jobs, DLQ size, active nodes) are read from the store when Prometheus scrapes, and are NaN
(unknown) in a scrape that could not read them. ``secauto_redis_up`` says whether this node's latest
Redis operation (heartbeat write, health check, scrape) succeeded.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

if TYPE_CHECKING:
    from secauto.engine.warm import WarmStats

# The *_created series double the output and nobody here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call, unused-ignore]

# Seconds: from no-op jobs (milliseconds) to long scans (an hour).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class NodeMetrics:
    """Every metric a node exports. Label values are bounded sets (status, reason, route templates)."""

    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.jobs_submitted = Counter("secauto_jobs_submitted", "Jobs accepted by this node's API",
                                      registry=registry)
        self.jobs_completed = Counter("secauto_jobs_completed", "Attempts this node completed", registry=registry)
        self.jobs_failed = Counter("secauto_jobs_failed", "Attempts this node ended as failed, by reason",
                                   ["reason"], registry=registry)
        self.jobs_retried = Counter("secauto_jobs_retried", "Failed attempts scheduled for a retry, by reason",
                                    ["reason"], registry=registry)
        self.jobs_dead_lettered = Counter("secauto_jobs_dead_lettered", "Jobs moved to the dead-letter queue, "
                                          "by reason", ["reason"], registry=registry)
        self.jobs_recovered = Counter("secauto_jobs_recovered", "Jobs this node (as leader) took back from lost "
                                      "nodes", registry=registry)
        self.job_duration = Histogram("secauto_job_duration_seconds", "Run time of attempts on this node",
                                      ["status"], buckets=_DURATION_BUCKETS, registry=registry)
        self.queue_wait = Histogram("secauto_job_queue_wait_seconds", "Time from submission to start",
                                    buckets=_DURATION_BUCKETS, registry=registry)
        self.recovery_time = Histogram("secauto_recovery_seconds", "From a lost node's last sign of life to the "
                                       "recovery of its jobs", buckets=_DURATION_BUCKETS, registry=registry)
        self.queue_size = Gauge("secauto_queue_size", "Pending jobs in the cluster", registry=registry)
        self.queue_ready = Gauge("secauto_queue_ready", "Pending jobs in the cluster that may start now (not held "
                                 "back by a delay, run_at or retry backoff)", registry=registry)
        self.dlq_size = Gauge("secauto_dlq_size", "Jobs in the dead-letter queue", registry=registry)
        self.jobs_running = Gauge("secauto_jobs_running", "Attempts running on this node", registry=registry)
        self.node_load = Gauge("secauto_node_load", "Running jobs / slots on this node", registry=registry)
        self.active_nodes = Gauge("secauto_active_nodes", "Active nodes in the cluster", registry=registry)
        self.is_leader = Gauge("secauto_leader", "1 if this node is the cluster leader", registry=registry)
        # 0 until the first heartbeat write succeeds, so a node that never reached Redis says so.
        self.redis_up = Gauge("secauto_redis_up", "1 if this node's latest Redis operation (heartbeat, health "
                              "check, scrape) succeeded, else 0", registry=registry)
        self.webhook_deliveries = Counter("secauto_webhook_deliveries", "Webhook deliveries by outcome",
                                          ["outcome"], registry=registry)
        # One series per (schedule, outcome): bounded by the schedules defined (at most 10,000).
        self.schedule_fires = Counter("secauto_schedule_fires", "Schedule slots handled by this node, by schedule "
                                      "and outcome (fired, triggered, skipped_overlap, missed, paused)",
                                      ["schedule", "outcome"], registry=registry)
        self.audit_entries = Counter("secauto_audit_entries", "Audit entries stored (written) or lost to a full "
                                     "buffer while Redis was unreachable (dropped)", ["result"], registry=registry)
        self.rate_limited = Counter("secauto_rate_limited", "Requests refused by a per-key rate limit or quota",
                                    ["code"], registry=registry)
        self.http_requests = Counter("secauto_http_requests", "HTTP requests by route, method and status",
                                     ["route", "method", "status"], registry=registry)
        self._requests: dict[tuple[str, str, int], Any] = {}  # labelled children of http_requests
        # The warm script runner (engine.runner: warm), read from its supervisor at each scrape.
        self.script_runner_up = Gauge("secauto_script_runner_up", "1 while a warm script runner is ready, else 0 "
                                      "(scripts spawn meanwhile)", registry=registry)
        self.script_runner_forks = Gauge("secauto_script_runner_forks", "Steps started in a fork of the warm "
                                         "runner since the node started", registry=registry)
        self.script_runner_restarts = Gauge("secauto_script_runner_restarts", "Warm runners that died and were "
                                            "replaced", registry=registry)
        self.script_runner_recycles = Gauge("secauto_script_runner_recycles", "Warm runners replaced after their "
                                            "fork budget", registry=registry)
        # Over the latest 10,000 warm steps (NaN before the first), labelled percentile="50" | "99"
        # (promtool keeps "quantile" for summaries): the runner's os.fork() call, and from sending a step
        # to the runner until the child's pid came back.
        self.script_runner_fork = Gauge("secauto_script_runner_fork_seconds", "os.fork() time in the warm runner "
                                        "(percentiles of the latest 10,000 steps)", ["percentile"], registry=registry)
        self.script_runner_start = Gauge("secauto_script_runner_start_seconds", "Time from sending a step to the "
                                         "warm runner to its child's pid (percentiles of the latest 10,000 steps)",
                                         ["percentile"], registry=registry)
        self.info = Gauge("secauto_node_info", "Constant 1, labelled with this node's id", ["node_id"],
                          registry=registry)
        self.info.labels(node_id=node_id).set(1)

    def count_request(self, route: str, method: str, status: int) -> None:
        """One HTTP request more for ``route`` (a route template), ``method`` and ``status``."""
        key = (route, method, status)
        child = self._requests.get(key)
        if child is None:  # prometheus-client looks labels up under a lock: done once per combination
            child = self._requests[key] = self.http_requests.labels(route=route, method=method, status=str(status))
        child.inc()

    def observe_script_runner(self, stats: WarmStats | None) -> None:
        """Copy the warm runner supervisor's figures (None: no warm runner on this node)."""
        if stats is None:
            self.script_runner_up.set(0)
            return
        self.script_runner_up.set(1 if stats.state == "ready" else 0)
        self.script_runner_forks.set(stats.forks)
        self.script_runner_restarts.set(stats.restarts)
        self.script_runner_recycles.set(stats.recycles)
        for gauge, p50, p99 in ((self.script_runner_fork, stats.fork_ms_p50, stats.fork_ms_p99),
                                (self.script_runner_start, stats.start_ms_p50, stats.start_ms_p99)):
            for percentile, value in (("50", p50), ("99", p99)):
                gauge.labels(percentile=percentile).set(math.nan if value is None else value / 1000)

    def render(self) -> bytes:
        """The text exposition format (``text/plain; version=0.0.4``)."""
        return generate_latest(self.registry)
