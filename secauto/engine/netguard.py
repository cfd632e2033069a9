"""Where ``http_request`` may connect: the outbound address policy (SSRF protection).

* **Refused by default**: link-local and cloud metadata addresses, :data:`DEFAULT_DENIED`
  (169.254.0.0/16, fe80::/10, AWS' fd00:ec2::254 and Alibaba's 100.100.100.200). Loopback and private
  networks stay reachable (playbook authors are trusted operators; local services are a common target).
* ``engine.http_allow`` (networks, addresses, host names or ``*.domain``) lifts the default refusal
  for what it names. ``engine.http_deny`` (the same forms) refuses more, and wins over
  ``http_allow``: refused = (defaults - http_allow) + http_deny.
* **Checked on the resolved addresses**: the host is resolved first (so ``metadata.google.internal``,
  ``0xa9fea9fe``, ``2852039166`` or ``::ffff:169.254.169.254`` are all seen as 169.254.169.254), every
  address it resolves to must pass (one refused address refuses the host), and IPv6 addresses that
  embed an IPv4 one (mapped, compatible, 6to4, NAT64 64:ff9b::/96) are checked as that IPv4 too.
* **Pinned**: the connection goes to the addresses that were checked (:class:`PinnedResolver` hands
  them to aiohttp), so a DNS answer that changes between the check and the connection (DNS rebinding)
  cannot reach a refused address. ``http_request`` follows redirects itself and checks every hop.

A refusal raises :class:`AddressRefused` (a step error naming the address and why) before anything
is sent; a name that does not resolve raises :class:`StepError`. Nothing here waits beyond the DNS
lookup, which runs under the step's timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp.abc import AbstractResolver

from secauto.engine.errors import StepError

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult
    from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENIED: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(net) for net in (
    "169.254.0.0/16",  # IPv4 link-local: the metadata service of AWS, GCP, Azure, OpenStack, ...
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS' IPv6 metadata service
    "100.100.100.200/32",  # Alibaba Cloud's metadata service
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_HOST_RE = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class AddressRefused(StepError):
    """``http_request`` may not connect there (the message says which address and why)."""


class HttpPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """``engine.http_allow`` and ``engine.http_deny``, parsed (see :func:`http_policy`)."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: tuple[str, ...] = ()  # exact names, or ".domain" for "*.domain"
    deny_networks: tuple[IPNetwork, ...] = ()
    deny_hosts: tuple[str, ...] = ()

    def host_refusal(self, host: str) -> str | None:
        """Why ``host`` (a name, before resolving) is refused, or None."""
        if _host_listed(_normal(host), self.deny_hosts):
            return f"{host} is listed in engine.http_deny"
        return None

    def address_refusal(self, address: str, host: str) -> tuple[str, str] | None:
        """Why connecting to ``address`` (resolved from ``host``) is refused: the address concerned
        (an embedded IPv4 one, maybe) and what it is; None when it is allowed."""
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return address, "not an IP address"
        allowed_host = _host_listed(_normal(host), self.allow_hosts)
        for candidate in (parsed, *_embedded_ipv4(parsed)):
            if _within(candidate, self.deny_networks):
                return str(candidate), "in engine.http_deny"
            if (not allowed_host and _within(candidate, DEFAULT_DENIED)
                    and not _within(candidate, self.allow_networks)):
                return str(candidate), "a link-local or cloud metadata address (engine.http_allow can allow it)"
        return None


def parse_entry(entry: str) -> IPNetwork | str:
    """One ``http_allow`` / ``http_deny`` entry: a network or address, else a host name (lower case;
    ``*.domain`` becomes ``.domain``). Raises ValueError saying what is accepted."""
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = _normal(text)
    if not name or not _HOST_RE.fullmatch(name):
        raise ValueError(f"{entry!r} is not a network (10.0.0.0/8), an address (169.254.169.254) or a host name "
                         "(metadata.internal, *.internal)")
    return name[1:] if name.startswith("*.") else name


def http_policy(allow: Sequence[str] = (), deny: Sequence[str] = ()) -> HttpPolicy:
    """The policy for these entries; raises ValueError naming the bad entry (``http_allow[2]: ...``)."""
    parsed: dict[str, tuple[list[IPNetwork], list[str]]] = {"http_allow": ([], []), "http_deny": ([], [])}
    for key, entries in (("http_allow", allow), ("http_deny", deny)):
        networks, hosts = parsed[key]
        for index, entry in enumerate(entries):
            try:
                item = parse_entry(entry)
            except ValueError as exc:
                raise ValueError(f"{key}[{index}]: {exc}") from None
            if isinstance(item, str):
                hosts.append(item)
            else:
                networks.append(item)
    return HttpPolicy(allow_networks=tuple(parsed["http_allow"][0]), allow_hosts=tuple(parsed["http_allow"][1]),
                      deny_networks=tuple(parsed["http_deny"][0]), deny_hosts=tuple(parsed["http_deny"][1]))


def _normal(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _host_listed(host: str, patterns: Sequence[str]) -> bool:
    return any(host == pattern or (pattern.startswith(".") and host.endswith(pattern)) for pattern in patterns)


def _within(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [candidate for candidate in (address.ipv4_mapped, address.sixtofour) if candidate is not None]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(low32)
    return found


async def getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    """The system resolver (a module attribute, so that tests can stand in for DNS)."""
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


class OutboundGuard:
    """Resolves and checks hosts for one ``http_request`` step."""

    def __init__(self, policy: HttpPolicy) -> None:
        self.policy = policy

    async def vet(self, host: str, port: int) -> list[ResolveResult]:
        """The addresses of ``host`` to connect to, every one of them checked.

        Raises :class:`AddressRefused` if the host or any of its addresses is refused, and
        :class:`StepError` if it does not resolve.
        """
        refusal = self.policy.host_refusal(host)
        if refusal:
            raise AddressRefused(refusal)
        try:
            infos = await getaddrinfo(host, port)
        except (socket.gaierror, UnicodeError) as exc:
            raise StepError(f"cannot resolve {host}: {exc}") from None
        results: list[ResolveResult] = []
        for family, _, proto, _, sockaddr in infos:
            address = str(sockaddr[0])
            refused = self.policy.address_refusal(address, host)
            if refused is not None:
                concerned, what = refused
                if concerned == host.strip("[]").lower():
                    raise AddressRefused(f"{concerned} is {what}")
                shown = concerned if concerned == address else f"{address} ({concerned})"
                raise AddressRefused(f"{host} resolves to {shown}, {what}")
            results.append({"hostname": host, "host": address, "port": port, "family": family, "proto": proto,
                            "flags": _NUMERIC_FLAGS})
        if not results:
            raise StepError(f"cannot resolve {host}: no address")
        return results


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one step: answers with the addresses :meth:`OutboundGuard.vet` checked
    for the hop being requested; a host it was not told about is vetted on the spot (never unchecked)."""

    def __init__(self, guard: OutboundGuard) -> None:
        self.guard = guard
        self._pinned: dict[tuple[str, int], list[ResolveResult]] = {}

    def pin(self, host: str, port: int, addresses: list[ResolveResult]) -> None:
        self._pinned[(_normal(host), port)] = addresses

    async def vet_and_pin(self, url: URL) -> None:
        """Check ``url``'s host under the policy and pin the addresses checked, so the connection goes
        to them. Call it before every request (and hop): aiohttp never asks the resolver about an IP
        literal, so this is the check for those. Raises AddressRefused, or StepError (no address)."""
        host, port = url.raw_host or "", url.port or 0
        self.pin(host, port, await self.guard.vet(host, port))

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = self._pinned.get((_normal(host), port))
        if found is None:
            found = await self.guard.vet(host, port)
        wanted = [entry for entry in found if family in (socket.AF_UNSPEC, entry["family"])]
        return wanted or found

    async def close(self) -> None:
        self._pinned.clear()
