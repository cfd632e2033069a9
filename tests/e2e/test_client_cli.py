"""The client commands (`secauto submit/jobs/cluster/dlq/events`) run for real against a live node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.nodes import REPO
from tests.support.ports import free_port
from tests.support.procs import write_config

KEY = "cli-admin-key-0123456789abcdef"


@pytest.fixture
def node_url(tmp_path: Path, process_factory: Any) -> Iterator[str]:
    port = free_port()
    config = write_config(tmp_path / "node.yaml", {
        "server": {"host": "127.0.0.1", "port": port},
        "cluster": {"node_id": "cli-node", "retry_backoff": 0.05},
        "security": {"api_keys": [KEY]},
        "engine": {"scripts_dir": str(REPO / "automations"), "playbooks_dir": str(REPO / "playbooks")},
        "schedules": [{"name": "nightly-sweep", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
                       "playbook": [{"action": "log", "message": "sweep"}]}],
    })
    proc = process_factory(config, name="cli-node")
    proc.wait_http_sync(timeout=30)
    yield f"http://127.0.0.1:{port}"


def secauto(url: str, *args: str, key: str | None = KEY, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SECAUTO")}
    env["SECAUTO_URL"] = url
    if key:
        env["SECAUTO_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "secauto", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def test_cluster_table_and_json(node_url: str) -> None:
    table = secauto(node_url, "cluster")
    assert table.returncode == 0, table.stderr
    assert "NODE" in table.stdout and "cli-node *" in table.stdout
    view = json.loads(secauto(node_url, "cluster", "--json").stdout)
    assert view["total_nodes"] == 1 and view["nodes"][0]["id"] == "cli-node"


def test_submit_wait_and_exit_codes(node_url: str, tmp_path: Path) -> None:
    done = secauto(node_url, "submit", "playbooks/triage_ip.yaml", "--wait", "--context",
                   json.dumps({"alert": {"source_ip": "198.51.100.23", "severity": "high", "type": "malware"}}))
    assert done.returncode == 0, done.stderr
    job_id = done.stderr.split(":", 1)[0].strip()
    assert "completed" in done.stderr and "classify" in done.stderr  # progress, then the step results
    failing = tmp_path / "fail.json"
    failing.write_text(json.dumps([{"action": "fail", "message": "nope"}]))
    failed = secauto(node_url, "submit", str(failing), "--wait", "--json", "--tag", "cli")
    assert failed.returncode == 1
    job = json.loads(failed.stdout)
    assert job["status"] == "failed" and job["tags"] == ["cli"]
    named = secauto(node_url, "submit", "notify_soc", "--json", "--wait", "--context",
                    json.dumps({"alert": {"type": "phishing", "source_ip": "203.0.113.9"}}))
    assert named.returncode == 0 and json.loads(named.stdout)["status"] == "completed"
    shown = secauto(node_url, "jobs", job_id)
    assert shown.returncode == 0 and f"id            {job_id}" in shown.stdout
    listing = secauto(node_url, "jobs", "--status", "failed", "--json")
    assert [item["id"] for item in json.loads(listing.stdout)["jobs"]] == [job["id"]]
    assert "JOB" in secauto(node_url, "jobs").stdout


def test_dlq_list_requeue_delete(node_url: str, tmp_path: Path) -> None:
    failing = tmp_path / "fail.json"
    failing.write_text(json.dumps([{"action": "fail", "message": "nope"}]))
    job = json.loads(secauto(node_url, "submit", str(failing), "--wait", "--json").stdout)
    listed = secauto(node_url, "dlq")
    assert listed.returncode == 0 and job["id"] in listed.stdout and "playbook_error" in listed.stdout
    assert secauto(node_url, "dlq", "requeue", job["id"]).returncode == 0
    deleted = secauto(node_url, "dlq", "delete", "job-unknown")
    assert deleted.returncode == 1 and "404" in deleted.stderr


@pytest.mark.timeout(60)
def test_events_follow_a_job(node_url: str) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SECAUTO")}
    env.update(SECAUTO_URL=node_url, SECAUTO_API_KEY=KEY)
    follower = subprocess.Popen([sys.executable, "-m", "secauto", "events", "--json", "--type", "job."],
                                stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        import time

        time.sleep(1.5)  # let it subscribe
        context = json.dumps({"alert": {"type": "phishing", "source_ip": "203.0.113.9"}})
        job_id = json.loads(secauto(node_url, "submit", "notify_soc", "--json", "--context", context).stdout)["job_id"]
        kinds = []
        assert follower.stdout is not None
        for line in follower.stdout:
            event = json.loads(line)
            if event.get("job_id") == job_id:
                kinds.append(event["type"])
            if "job.completed" in kinds:
                break
        assert kinds == ["job.submitted", "job.started", "job.completed"]
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_schedules_pause_resume_trigger(node_url: str) -> None:
    listed = secauto(node_url, "schedules")
    assert listed.returncode == 0, listed.stderr
    assert "SCHEDULE" in listed.stdout and "nightly-sweep" in listed.stdout
    assert "0 3 * * * (Europe/Berlin)" in listed.stdout
    paused = secauto(node_url, "pause", "nightly-sweep", "--note", "change freeze")
    assert paused.returncode == 0 and paused.stdout.strip() == "nightly-sweep: paused"
    job_id = secauto(node_url, "trigger", "nightly-sweep").stdout.strip()
    assert job_id.startswith("job-")
    shown = secauto(node_url, "schedules", "nightly-sweep")
    assert "paused (change freeze)" in shown.stdout and "triggered" in shown.stdout and job_id in shown.stdout
    resumed = secauto(node_url, "resume", "nightly-sweep", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["paused"] is False
    detail = json.loads(secauto(node_url, "schedules", "nightly-sweep", "--json").stdout)
    assert detail["next_fires"][0].endswith(("T01:00:00.000Z", "T02:00:00.000Z"))  # 03:00 Berlin, CET or CEST
    missing = secauto(node_url, "trigger", "no-such")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_usage_errors(node_url: str) -> None:
    assert secauto(node_url, "cluster", key=None).returncode == 2
    bad = secauto(node_url, "submit", "missing.yaml")
    assert bad.returncode == 2 and "no playbook file" in bad.stderr
    wrong = secauto(node_url, "cluster", key="wrong-key-0123456789abc")
    assert wrong.returncode == 1 and "401" in wrong.stderr


def test_submit_with_dependencies(node_url: str, tmp_path: Path) -> None:
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps([{"action": "sleep", "seconds": 1}, {"action": "set", "variables": {"n": 7}}]))
    parent = secauto(node_url, "submit", str(slow), "--json")
    parent_id = json.loads(parent.stdout)["job_id"]
    reader = tmp_path / "reader.json"
    reader.write_text(json.dumps([{"action": "set", "variables": {"got": "{{dependencies." + parent_id
                                                                           + ".context.n}}"}}]))
    child = secauto(node_url, "submit", str(reader), "--depends-on", parent_id, "--on-dependency-failure", "run",
                    "--wait")
    assert child.returncode == 0, child.stderr
    assert f"waiting on {parent_id}" in child.stderr and "completed" in child.stderr
    job = json.loads(secauto(node_url, "jobs", child.stderr.split(":", 1)[0].strip(), "--json").stdout)
    assert job["status"] == "completed" and job["context"]["got"] == 7 and job["depends_on"] == [parent_id]
    assert job["on_dependency_failure"] == "run"
    shown = secauto(node_url, "jobs", job["id"])
    assert f"depends_on    ['{parent_id}']" in shown.stdout
    unknown = secauto(node_url, "submit", str(reader), "--depends-on", "job-nope")
    assert unknown.returncode == 1 and "depends_on[0]" in unknown.stderr
