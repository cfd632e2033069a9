"""`secauto run` and `secauto validate` as a user runs them (real subprocesses, no server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def secauto(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "secauto", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_run_prints_the_result_and_exits_0() -> None:
    context = json.dumps({"alert": {"source_ip": "198.51.100.23", "severity": "high", "type": "malware"}})
    proc = secauto("run", "playbooks/triage_ip.yaml", "--context", context, "--config", "config/config.yaml")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["success"] is True
    assert [step["name"] for step in result["results"]][:2] == ["classify", "enrich"]
    assert result["context"]["baseit"]["target"] == "198.51.100.23"


def test_run_reads_context_from_a_file_and_fails_with_1(tmp_path: Path) -> None:
    playbook = tmp_path / "p.json"
    playbook.write_text(json.dumps([{"action": "fail", "message": "{{why}}"}]))
    context = tmp_path / "c.json"
    context.write_text(json.dumps({"why": "on purpose"}))
    proc = secauto("run", str(playbook), "--context", f"@{context}")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["success"] is False and "on purpose" in result["error"]


@pytest.mark.parametrize(("context", "message"), [("{", "not valid JSON"), ("[1]", "must be a JSON object")])
def test_run_rejects_a_bad_context(context: str, message: str) -> None:
    proc = secauto("run", "playbooks/triage_ip.yaml", "--context", context)
    assert proc.returncode == 2 and message in proc.stderr and proc.stdout == ""


def test_validate(tmp_path: Path) -> None:
    assert secauto("validate", "playbooks/classic_phishing.json").returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("- action: run_script\n  script: ../../etc/passwd\n- action: sleep\n  seconds: soon\n")
    proc = secauto("validate", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert any(": $[0].script: bad script name" in line for line in lines), lines
    assert any(": $[1].seconds: Expected `float`" in line for line in lines), lines
    assert secauto("validate", str(tmp_path / "missing.yaml")).returncode == 2
