#!/usr/bin/env python3
"""enrich_ip: reputation of an IP address from the local data file ``data/ip_reputation.json``.

Input (JSON on stdin): ``ip`` (or ``target``). Output::

    {"enrichment": {"ip": ..., "score": 0-100, "tags": [...], "country": ..., "asn": ...,
                    "matched": "<cidr>" or null, "source": ..., "private": bool}}

The most specific matching range wins; an address in no range scores 0 (private ones too).
A missing or malformed address exits with status 2 and a message on stderr. No network access.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "ip_reputation.json"


def enrich(address: str) -> dict[str, Any]:
    ip = ipaddress.ip_address(address.strip())
    ranges = json.loads(DATA.read_text())["ranges"]
    best: dict[str, Any] | None = None
    best_prefix = -1
    for entry in ranges:
        network = ipaddress.ip_network(entry["cidr"])
        if network.version == ip.version and ip in network and network.prefixlen > best_prefix:
            best, best_prefix = entry, network.prefixlen
    found = best or {}
    return {
        "ip": str(ip),
        "score": found.get("score", 0),
        "tags": found.get("tags", []),
        "country": found.get("country"),
        "asn": found.get("asn"),
        "matched": found.get("cidr"),
        "source": found.get("source"),
        "private": ip.is_private,
    }


def main() -> int:
    context = json.load(sys.stdin)
    address = context.get("ip") or context.get("target")
    if not isinstance(address, str):
        print("enrich_ip: 'ip' (an IP address) is required", file=sys.stderr)
        return 2
    try:
        result = enrich(address)
    except ValueError as exc:
        print(f"enrich_ip: {exc}", file=sys.stderr)
        return 2
    json.dump({"enrichment": result}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
