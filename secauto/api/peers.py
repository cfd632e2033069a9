"""Who is on the other end: the client address recorded in the audit trail.

The address is the TCP peer's, unless that peer is a proxy named in ``server.trusted_proxies``: then
it is the right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy (each proxy
appends the address it saw, so entries left of the last untrusted one may be forged by the client and
are never believed). From an untrusted peer the header is ignored altogether.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from secauto.config import Network

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: IpAddress, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str | None:
    """The client's address given the TCP ``peer``, the ``X-Forwarded-For`` header values (in order)
    and the trusted proxies. A malformed entry in the header ends the walk: the last trusted hop is
    answered then, since nothing to its left can be believed."""
    if peer is None or not proxies:
        return peer
    current = _parse(peer)
    if current is None or not _trusted(current, proxies):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            return str(current)
        current = address
        if not _trusted(address, proxies):
            return str(address)
    return str(current)  # every hop is a trusted proxy: the left-most is as close as we get


def request_address(request: web.Request, proxies: Sequence[Network]) -> str | None:
    """:func:`client_address` for an aiohttp request."""
    return client_address(request.remote, request.headers.getall("X-Forwarded-For", []), proxies)
