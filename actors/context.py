"""What every actor of a node shares: its settings and its handles on the store (no mutable state)."""

from __future__ import annotations

import msgspec

from secauto.config import Settings
from secauto.engine import EngineSettings
from secauto.metrics import NodeMetrics
from secauto.store.jobs import JobQueue
from secauto.store.registry import NodeRegistry
from secauto.vault import SecretVault


class NodeContext(msgspec.Struct, kw_only=True):
    settings: Settings
    node_id: str
    host: str
    port: int  # the port actually bound (config may say 0)
    started_at: str
    queue: JobQueue
    registry: NodeRegistry
    engine: EngineSettings
    metrics: NodeMetrics
    vault: SecretVault | None = None  # the values of {{secrets.NAME}}; None: jobs cannot use secrets

    @property
    def capacity(self) -> int:
        return self.settings.config.cluster.max_concurrent_jobs

    @property
    def lease_ms(self) -> int:
        return int(self.settings.config.cluster.lease_timeout * 1000)

    @property
    def heartbeat_interval(self) -> float:
        return self.settings.config.cluster.heartbeat_interval

