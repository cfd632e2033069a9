"""Dashboard actions are in the audit trail like the API's: logins (failed ones too), logouts, job and
DLQ actions, each with the key behind the session as the actor."""

from __future__ import annotations

from typing import Any

from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, auth
from tests.unit.ui.conftest import Tab, submit


async def trail(tab: Tab) -> list[dict[str, Any]]:
    async with tab.http.get("/audit?limit=50", headers=auth(ADMIN_KEY)) as response:
        assert response.status == 200
        entries: list[dict[str, Any]] = (await response.json())["entries"]
        return entries[::-1]  # oldest first


async def test_dashboard_logins_logouts_and_actions_are_audited(node: Node, tab: Tab) -> None:
    status, _, _ = await tab.post("/ui/login", {"api_key": "not-a-key-0123456789"}, csrf=False)
    assert status == 401
    await tab.login(OPERATOR_KEY)
    job_id = await submit(node, {"playbook": [{"action": "log", "message": "x"}], "run_at": "2999-01-01T00:00:00Z"})
    status, _, _ = await tab.post(f"/ui/jobs/{job_id}/cancel", {})
    assert status == 303
    status, _, _ = await tab.post("/ui/logout", {})
    assert status == 303
    entries = [(e["action"], e["actor"], e["status"], e["target"]) for e in await trail(tab)
               if e["action"] != "job.submit"]
    assert entries == [
        ("ui.login", None, 401, None),
        ("ui.login", "ops", 303, None),
        ("job.cancel", "ops", 303, job_id),
        ("ui.logout", "ops", 303, None),
    ]
    assert all(e["source_ip"] == "127.0.0.1" for e in await trail(tab))
