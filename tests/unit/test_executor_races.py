"""Races inside the executor, on a standalone node (embedded store)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.support.nodes import auth, node_settings, running_node


async def test_lease_report_while_a_finish_is_in_flight_changes_nothing() -> None:
    # Renewals every 0.1 s; each batch of attempt ends takes 0.5 s to be acknowledged after Redis wrote
    # it. Meanwhile the renewal sees the jobs gone from the running set: that must not stop them, crash
    # the finish writer, or make the executor "recover" its own running jobs.
    settings = node_settings("racy", cluster={"lease_timeout": 0.3})
    async with running_node(settings) as node, aiohttp.ClientSession(base_url=node.url) as session:
        executor = node.system.get("executor")._cell.actor  # type: ignore[attr-defined]
        real = executor.ctx.queue.finish_many

        async def slow_ack(*args: Any, **kwargs: Any) -> list[bool]:
            written: list[bool] = await real(*args, **kwargs)
            await asyncio.sleep(0.5)
            return written

        executor.ctx.queue.finish_many = slow_ack
        ids = []
        for _ in range(5):
            async with session.post("/cluster/jobs", json={"playbook": [{"action": "log", "message": "x"}]},
                                    headers=auth()) as response:
                ids.append((await response.json())["job_id"])
        async with asyncio.timeout(10):
            while executor.completed < 5:
                await asyncio.sleep(0.05)
        for job_id in ids:
            async with session.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
                job = (await response.json())["job"]
            assert job["status"] == "completed" and job["attempt"] == 1
            assert [attempt["outcome"] for attempt in job["attempts"]] == ["completed"]
        assert node.system.get("executor").is_alive and executor.failed == 0
