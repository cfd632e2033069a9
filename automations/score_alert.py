#!/usr/bin/env python3
"""score_alert: a 0-100 risk score for an alert, with the reasons.

Input (JSON on stdin): ``alert`` (an object: ``severity`` low|medium|high|critical, ``type``,
``asset_criticality`` low|medium|high, ``failed_logins``...) and, optionally, ``enrichment`` (from
enrich_ip.py). Output::

    {"alert_score": {"score": 0-100, "priority": "low|medium|high|critical", "reasons": [...]}}

A missing ``alert`` object exits with status 2. No network access.
"""

from __future__ import annotations

import json
import sys
from typing import Any

SEVERITY = {"low": 10, "medium": 25, "high": 40, "critical": 55}
ASSET = {"low": 0, "medium": 10, "high": 20}
RISKY_TYPES = {"phishing": 10, "malware": 15, "brute_force": 10, "exfiltration": 20}


def score(alert: dict[str, Any], enrichment: dict[str, Any]) -> dict[str, Any]:
    total = 0
    reasons: list[str] = []

    def add(points: int, reason: str) -> None:
        nonlocal total
        if points:
            total += points
            reasons.append(f"+{points} {reason}")

    add(SEVERITY.get(str(alert.get("severity", "low")).lower(), 10), f"severity {alert.get('severity', 'low')}")
    add(ASSET.get(str(alert.get("asset_criticality", "low")).lower(), 0), "asset criticality")
    add(RISKY_TYPES.get(str(alert.get("type", "")).lower(), 0), f"alert type {alert.get('type')}")
    failed = alert.get("failed_logins")
    if isinstance(failed, int) and failed >= 10:
        add(10, f"{failed} failed logins")
    reputation = enrichment.get("score")
    if isinstance(reputation, int | float):
        add(round(reputation * 0.4), f"source reputation {reputation}")
    if "known-good" in enrichment.get("tags", []):
        total -= 30
        reasons.append("-30 known-good source")
    total = max(0, min(100, total))
    priority = "critical" if total >= 85 else "high" if total >= 65 else "medium" if total >= 40 else "low"
    return {"score": total, "priority": priority, "reasons": reasons}


def main() -> int:
    context = json.load(sys.stdin)
    alert = context.get("alert")
    if not isinstance(alert, dict):
        print("score_alert: 'alert' (an object) is required", file=sys.stderr)
        return 2
    enrichment = context.get("enrichment")
    result = score(alert, enrichment if isinstance(enrichment, dict) else {})
    json.dump({"alert_score": result}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
