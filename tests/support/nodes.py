"""Build settings and start in-process nodes for tests (several nodes can share one event loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec

from secauto.config import Config, Settings, settings_from_config
from secauto.node import Node

REPO = Path(__file__).resolve().parents[2]
ADMIN_KEY = "admin-key-0123456789abcdef"
OPERATOR_KEY = "operator-key-0123456789abcdef"
VIEWER_KEY = "viewer-key-0123456789abcdef"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def node_settings(node_id: str, *, redis_url: str | None = None, cluster_name: str = "test-cluster",
                  **sections: dict[str, Any]) -> Settings:
    """Settings for a test node on 127.0.0.1 and a free port; cluster mode iff ``redis_url`` is given.

    Timings are short (heartbeat 0.5 s, lease 3 s) so liveness tests run quickly.
    """
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 5},
        "cluster": {"enabled": redis_url is not None, "redis_url": redis_url or "localhost:6379",
                    "node_id": node_id, "cluster_name": cluster_name, "heartbeat_interval": 0.5,
                    "election_timeout": 3, "lease_timeout": 3, "poll_interval": 2, "retry_backoff": 0.05,
                    "retry_avoid": 0},
        "security": {"api_keys": [
            {"name": "admin", "key": ADMIN_KEY, "role": "admin"},
            {"name": "ops", "key": OPERATOR_KEY, "role": "operator"},
            {"name": "view", "key": VIEWER_KEY, "role": "viewer"},
        ]},
        "engine": {"scripts_dir": str(REPO / "automations"), "playbooks_dir": str(REPO / "playbooks")},
        "logging": {"level": "warning"},
    }
    config = msgspec.convert(_merge(raw, sections), Config)
    return settings_from_config(config, base_dir=REPO)


@asynccontextmanager
async def running_node(settings: Settings) -> AsyncIterator[Node]:
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop(grace=2)


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
