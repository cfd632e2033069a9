#!/usr/bin/env python3
"""baseit: classify a target (IP address, hostname or URL) without touching the network.

Input (JSON object on stdin): ``target`` (required): ``192.168.1.1``, ``2001:db8::1``,
``mail.example.com`` or ``https://evil.example/path``.
Output (JSON object on stdout)::

    {"baseit": {"target": ..., "type": "ipv4|ipv6|hostname|url", "host": ..., "is_private": bool,
                "is_reserved": bool, "is_loopback": bool, "is_global": bool, "reverse_pointer": ...,
                "checked_at": "...Z"}}

A missing or malformed target prints a message on stderr and exits with status 2.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){LABEL}(\.{LABEL})*\.?$")


def classify_host(host: str) -> dict[str, Any]:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not HOSTNAME.match(host):
            raise ValueError(f"not an IP address, hostname or URL: {host!r}") from None
        lowered = host.lower().rstrip(".")
        local = lowered == "localhost" or lowered.endswith((".local", ".internal", ".lan", ".localhost"))
        return {
            "type": "hostname",
            "host": lowered,
            "is_private": local,
            "is_reserved": lowered.endswith((".test", ".example", ".invalid", ".localhost")) or lowered == "localhost",
            "is_loopback": lowered == "localhost",
            "is_global": not local,
            "reverse_pointer": None,
        }
    return {
        "type": f"ipv{ip.version}",
        "host": str(ip),
        "is_private": ip.is_private,
        "is_reserved": ip.is_reserved or ip.is_unspecified or ip.is_multicast or ip.is_link_local,
        "is_loopback": ip.is_loopback,
        "is_global": ip.is_global,
        "reverse_pointer": ip.reverse_pointer,
    }


def classify(target: str) -> dict[str, Any]:
    target = target.strip()
    if "://" in target:
        parts = urlsplit(target)
        if not parts.hostname:
            raise ValueError(f"URL without a host: {target!r}")
        info = classify_host(parts.hostname)
        info.update(type="url", scheme=parts.scheme, path=parts.path or "/")
    else:
        info = classify_host(target)
    checked_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"target": target, **info, "checked_at": checked_at}


def main() -> int:
    context = json.load(sys.stdin)
    target = context.get("target") if isinstance(context, dict) else None
    if not isinstance(target, str) or not target.strip():
        print("baseit: 'target' (an IP address, hostname or URL) is required", file=sys.stderr)
        return 2
    try:
        result = classify(target)
    except ValueError as exc:
        print(f"baseit: {exc}", file=sys.stderr)
        return 2
    json.dump({"baseit": result}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
