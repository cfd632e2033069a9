#!/usr/bin/env python3
"""decide_block: decide whether to block an address, given its score and a local allowlist.

Input (JSON on stdin): ``ip``, ``score`` (0-100), optionally ``threshold`` (default 70) and
``monitor_threshold`` (default 40). Allowlisted networks come from ``data/allowlist.json``. Output::

    {"decision": {"ip": ..., "action": "block|monitor|allow", "reason": ...},
     "incident_updates": {"decision": "block|monitor|allow", "status": "contained|investigating|closed"}}

``incident_updates`` is merged into ``context.incident`` by the engine. Bad input exits with status 2.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

ALLOWLIST = Path(__file__).resolve().parent / "data" / "allowlist.json"
STATUS = {"block": "contained", "monitor": "investigating", "allow": "closed"}


def decide(ip: str, score: float, threshold: float, monitor_threshold: float) -> dict[str, Any]:
    address = ipaddress.ip_address(ip)
    networks = [ipaddress.ip_network(n) for n in json.loads(ALLOWLIST.read_text())["networks"]]
    allowed = next((n for n in networks if n.version == address.version and address in n), None)
    if allowed is not None:
        action, reason = "allow", f"{address} is in the allowlist ({allowed})"
    elif score >= threshold:
        action, reason = "block", f"score {score:g} >= block threshold {threshold:g}"
    elif score >= monitor_threshold:
        action, reason = "monitor", f"score {score:g} >= monitor threshold {monitor_threshold:g}"
    else:
        action, reason = "allow", f"score {score:g} below {monitor_threshold:g}"
    return {"ip": str(address), "action": action, "reason": reason}


def main() -> int:
    context = json.load(sys.stdin)
    ip, score = context.get("ip"), context.get("score")
    threshold = context.get("threshold", 70)
    monitor = context.get("monitor_threshold", 40)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (score, threshold, monitor))
    if not isinstance(ip, str) or not numbers:
        print("decide_block: 'ip' (string) and 'score' (number) are required", file=sys.stderr)
        return 2
    try:
        decision = decide(ip, score, threshold, monitor)
    except ValueError as exc:
        print(f"decide_block: {exc}", file=sys.stderr)
        return 2
    updates = {"decision": decision["action"], "status": STATUS[decision["action"]]}
    json.dump({"decision": decision, "incident_updates": updates}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
