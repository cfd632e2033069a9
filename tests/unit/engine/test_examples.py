"""The shipped automations/ and playbooks/: every example runs and does what its docstring says."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from secauto.engine import EngineSettings, load_playbook_file, resolve_named_playbook, run_playbook, validate_playbook
from tests.unit.engine.conftest import REPO


def script(name: str, payload: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "automations" / f"{name}.py")],
        input=json.dumps(payload), capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def answer(name: str, payload: Any) -> dict[str, Any]:
    done = script(name, payload)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("target", "kind", "private"),
    [
        ("192.168.1.1", "ipv4", True),
        ("8.8.8.8", "ipv4", False),
        ("2001:db8::1", "ipv6", True),
        ("mail.example.com", "hostname", False),
        ("https://evil.example/login", "url", False),
        ("http://10.1.2.3:8080/x", "url", True),
    ],
)
def test_baseit(target: str, kind: str, private: bool) -> None:
    info = answer("baseit", {"target": target})["baseit"]
    assert info["type"] == kind and info["is_private"] is private and info["target"] == target
    assert info["checked_at"].endswith("Z")


def test_baseit_reverse_pointer() -> None:
    assert answer("baseit", {"target": "192.168.1.1"})["baseit"]["reverse_pointer"] == "1.1.168.192.in-addr.arpa"


@pytest.mark.parametrize("payload", [{}, {"target": 5}, {"target": "not a host!"}])
def test_baseit_rejects_bad_targets(payload: Any) -> None:
    done = script("baseit", payload)
    assert done.returncode == 2 and "baseit:" in done.stderr


def test_enrich_ip() -> None:
    bad = answer("enrich_ip", {"ip": "203.0.113.7"})["enrichment"]
    assert (bad["score"], bad["tags"], bad["matched"]) == (90, ["botnet", "c2"], "203.0.113.0/24")
    assert answer("enrich_ip", {"target": "198.51.100.200"})["enrichment"]["matched"] == "198.51.100.128/25"
    assert answer("enrich_ip", {"ip": "2001:db8:bad::5"})["enrichment"]["score"] == 85
    unknown = answer("enrich_ip", {"ip": "10.0.0.1"})["enrichment"]
    assert (unknown["score"], unknown["matched"], unknown["private"]) == (0, None, True)
    assert script("enrich_ip", {"ip": "nope"}).returncode == 2


def test_score_alert() -> None:
    high = answer("score_alert", {"alert": {"severity": "high", "type": "malware", "asset_criticality": "high"},
                                  "enrichment": {"score": 90, "tags": []}})["alert_score"]  # fmt: skip
    assert (high["score"], high["priority"]) == (100, "critical")  # 40 + 20 + 15 + 36, capped at 100
    assert "+36 source reputation 90" in high["reasons"]
    low = answer("score_alert", {"alert": {"severity": "low"}, "enrichment": {"score": 0, "tags": ["known-good"]}})
    assert low["alert_score"]["score"] == 0 and low["alert_score"]["priority"] == "low"
    assert script("score_alert", {}).returncode == 2


def test_decide_block() -> None:
    blocked = answer("decide_block", {"ip": "203.0.113.7", "score": 90})
    assert blocked["decision"]["action"] == "block"
    assert blocked["incident_updates"] == {"decision": "block", "status": "contained"}
    assert answer("decide_block", {"ip": "203.0.113.7", "score": 50})["decision"]["action"] == "monitor"
    assert answer("decide_block", {"ip": "203.0.113.7", "score": 10})["decision"]["action"] == "allow"
    allowed = answer("decide_block", {"ip": "8.8.8.8", "score": 99})["decision"]
    assert allowed["action"] == "allow" and "allowlist" in allowed["reason"]
    assert script("decide_block", {"ip": "1.2.3.4"}).returncode == 2


# ---------------------------------------------------------------- the example playbooks


def test_every_example_playbook_validates(repo_settings: EngineSettings) -> None:
    files = sorted(p for p in (REPO / "playbooks").iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    assert len(files) >= 4
    for path in files:
        validate_playbook(load_playbook_file(path), repo_settings)


async def test_triage_ip_blocks_a_bad_address(repo_settings: EngineSettings) -> None:
    book = load_playbook_file(resolve_named_playbook("triage_ip", repo_settings))
    context = {"alert": {"source_ip": "203.0.113.7", "severity": "high", "type": "malware"},
               "incident": {"id": "INC-1"}}  # fmt: skip
    result = await run_playbook(book, context, repo_settings, job_id="triage")
    assert result.success, result.error
    assert [r.name for r in result.results] == ["classify", "enrich", "score", "decide", "report"]
    assert result.context["decision"]["action"] == "block"
    assert result.context["incident"] == {"id": "INC-1", "decision": "block", "status": "contained"}
    assert result.context["blocked"] is True


async def test_triage_ip_lets_a_good_address_go(repo_settings: EngineSettings) -> None:
    book = load_playbook_file(resolve_named_playbook("triage_ip", repo_settings))
    context = {"alert": {"source_ip": "198.51.100.200", "severity": "low"}, "block_threshold": 90}
    result = await run_playbook(book, context, repo_settings)
    assert result.success, result.error
    assert result.context["decision"]["action"] == "allow" and result.context["blocked"] is False


async def test_enrich_hosts(repo_settings: EngineSettings) -> None:
    book = load_playbook_file(resolve_named_playbook("enrich_hosts", repo_settings))
    hosts = ["203.0.113.7", "8.8.8.8", "10.0.0.1", "2001:db8:bad::1", "192.0.2.10"]
    result = await run_playbook(book, {"hosts": hosts}, repo_settings)
    assert result.success, result.error
    scores = [e["results"][0]["output"]["enrichment"]["score"] for e in result.context["reputations"]]
    assert scores == [90, 0, 0, 85, 40]


async def test_classic_phishing_with_notify_soc(repo_settings: EngineSettings) -> None:
    book = load_playbook_file(resolve_named_playbook("classic_phishing", repo_settings))
    alert = {"source_ip": "203.0.113.7", "severity": "high", "type": "phishing"}
    result = await run_playbook(book, {"alert": alert}, repo_settings)
    assert result.success, result.error
    assert result.context["soc_notified"] is True
    assert result.context["decision"]["action"] == "block"
    quiet = await run_playbook(book, {"alert": {**alert, "severity": "low", "source_ip": "10.0.0.1"}}, repo_settings)
    assert quiet.success and "soc_notified" not in quiet.context
    assert quiet.results[2].output["branch"] == "else"
