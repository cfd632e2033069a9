"""SSRF protection of http_request: the address policy, resolution, pinning and redirects (local servers only;
the metadata addresses are refused before any connection, so nothing leaves the machine)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web

from secauto.engine import EngineSettings, netguard
from secauto.engine.netguard import AddressRefused, OutboundGuard, http_policy, parse_entry
from tests.unit.engine.conftest import run

METADATA = "169.254.169.254"


class FakeDns:
    """Stands in for getaddrinfo: names in ``answers`` resolve to the next address of their list
    (the last one repeats); anything else goes to the system resolver (IP literals, localhost)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self._system = netguard.getaddrinfo

    async def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        self.asked.append(host)
        queue = self.answers.get(host.lower())
        if queue is None:
            return await self._system(host, port)
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], FakeDns]:
    def install(answers: dict[str, list[str]]) -> FakeDns:
        fake = FakeDns(answers)
        monkeypatch.setattr(netguard, "getaddrinfo", fake)
        return fake

    return install


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local server: /echo answers what it got, /to?url=U redirects to U (status ?status=, default 302)."""
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        entry = {"method": request.method, "host": request.host, "headers": dict(request.headers),
                 "body": (await request.read()).decode()}
        seen.append(entry)
        return web.json_response(entry)

    async def to(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "redirect": True})
        return web.Response(status=int(request.query.get("status", "302")), headers={"Location": request.query["url"]})

    async def loop(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/loop"})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/to", to)
    app.router.add_get("/loop", loop)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def with_policy(settings: EngineSettings, allow: list[str] | None = None,
                deny: list[str] | None = None) -> EngineSettings:
    return msgspec.structs.replace(settings, http_policy=http_policy(allow or [], deny or []))


async def get(settings: EngineSettings, url: str, **fields: Any) -> tuple[bool, Any, str]:
    started = time.monotonic()
    result = await run([{"action": "http_request", "url": url, "timeout": 5, **fields}], settings)
    assert time.monotonic() - started < 3, "a refusal must not wait for a timeout"
    step = result.results[0]
    return result.success, step.output, step.error or ""


# ------------------------------------------------------------------ the policy


@pytest.mark.parametrize("address", [
    METADATA, "169.254.0.1", "fe80::1", "fe80::1%1", "fd00:ec2::254", "100.100.100.200",
    "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "::a9fe:a9fe", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
])
def test_link_local_and_metadata_addresses_are_refused(address: str) -> None:
    refused = http_policy().address_refusal(address, "example.test")
    assert refused is not None and "link-local or cloud metadata" in refused[1]


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "8.8.8.8", "2001:db8::1",
                                     "::ffff:127.0.0.1", "100.100.100.201"])
def test_loopback_private_and_public_addresses_are_allowed(address: str) -> None:
    assert http_policy().address_refusal(address, "example.test") is None


def test_allow_lifts_the_default_and_deny_wins() -> None:
    policy = http_policy(allow=["169.254.169.254", "metadata.internal"], deny=["10.0.0.0/8", "*.corp.example"])
    assert policy.address_refusal(METADATA, "x.test") is None
    assert policy.address_refusal("169.254.1.1", "x.test") is not None
    assert policy.address_refusal("169.254.1.1", "Metadata.Internal.") is None  # allowed by name
    assert policy.address_refusal("10.9.9.9", "metadata.internal") == ("10.9.9.9", "in engine.http_deny")
    assert policy.host_refusal("db.corp.example") == "db.corp.example is listed in engine.http_deny"
    assert policy.host_refusal("corp.example") is None
    both = http_policy(allow=["10.1.0.0/16"], deny=["10.0.0.0/8"])
    assert both.address_refusal("10.1.2.3", "x.test") == ("10.1.2.3", "in engine.http_deny")


@pytest.mark.parametrize("entry", ["", "not a host!", "http://x.example/", "a..b", "*."])
def test_bad_entries_say_what_is_accepted(entry: str) -> None:
    with pytest.raises(ValueError, match="is not a network"):
        parse_entry(entry)
    with pytest.raises(ValueError, match=r"^http_deny\[1\]: "):
        http_policy(deny=["10.0.0.0/8", entry])


@pytest.mark.parametrize("host", ["0xa9fea9fe", "2852039166", "169.254.43518", "0251.0376.0251.0376"])
async def test_numeric_forms_are_resolved_before_the_check(host: str) -> None:
    with pytest.raises(AddressRefused, match=f"{host} resolves to 169.254.169.254, a link-local"):
        await OutboundGuard(http_policy()).vet(host, 80)


# ------------------------------------------------------------------ http_request


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/",
    "http://0xa9fea9fe/",
    "https://169.254.169.254:8443/",
])
async def test_metadata_urls_fail_the_step_at_once(settings: EngineSettings, url: str) -> None:
    ok, _, error = await get(settings, url)
    assert not ok and ": refused: " in error and "link-local or cloud metadata address" in error


async def test_a_name_that_resolves_to_a_metadata_address(settings: EngineSettings, dns: Any) -> None:
    dns({"metadata.google.internal": [METADATA]})
    ok, _, error = await get(settings, "http://metadata.google.internal/computeMetadata/v1/")
    assert not ok
    assert error == ("GET http://metadata.google.internal/computeMetadata/v1/: refused: metadata.google.internal "
                     "resolves to 169.254.169.254, a link-local or cloud metadata address (engine.http_allow can "
                     "allow it)")


async def test_a_redirect_to_a_metadata_address_is_refused(settings: EngineSettings, site: Any) -> None:
    where, seen = site
    ok, _, error = await get(settings, f"http://{where}/to?url=http://169.254.169.254/latest/meta-data/")
    assert not ok and "refused redirect 1 to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is" in error
    assert seen == [{"method": "GET", "redirect": True}]


async def test_dns_rebinding_between_hops_is_caught(settings: EngineSettings, site: Any, dns: Any) -> None:
    # The first lookup answers the local server, the next one the metadata address: each hop is checked
    # and the connection goes to the address that was checked.
    where, _ = site
    port = where.rpartition(":")[2]
    fake = dns({"rebind.test": ["127.0.0.1", METADATA]})
    ok, output, _ = await get(settings, f"http://rebind.test:{port}/echo")
    assert ok and output["json"]["host"] == f"rebind.test:{port}"
    ok, _, error = await get(settings, f"http://rebind.test:{port}/echo")
    assert not ok and "rebind.test resolves to 169.254.169.254" in error
    fake.answers["rebind.test"] = ["127.0.0.1", METADATA]
    ok, _, error = await get(settings, f"http://rebind.test:{port}/to?url=http://rebind.test:{port}/echo")
    assert not ok and "refused redirect 1 to http://rebind.test" in error
    assert fake.asked.count("rebind.test") == 4  # one lookup per hop, none by aiohttp behind our back


async def test_allow_list_overrides(settings: EngineSettings, site: Any, dns: Any) -> None:
    where, _ = site
    port = where.rpartition(":")[2]
    dns({"metadata.test": ["127.0.0.1"], "link.test": ["169.254.7.7"]})
    # 127.0.0.1 is allowed by default; denying loopback refuses it, whatever the name.
    ok, _, error = await get(with_policy(settings, deny=["127.0.0.0/8"]), f"http://metadata.test:{port}/echo")
    assert not ok and "127.0.0.1, in engine.http_deny" in error
    ok, _, error = await get(with_policy(settings, deny=["metadata.test"]), f"http://metadata.test:{port}/echo")
    assert not ok and "metadata.test is listed in engine.http_deny" in error
    # an allowed link-local address passes the check (not connected to here: it would leave the machine)
    allowed = OutboundGuard(http_policy(allow=["169.254.7.7/32"]))
    assert [entry["host"] for entry in await allowed.vet("link.test", 80)] == ["169.254.7.7"]
    with pytest.raises(AddressRefused):
        await OutboundGuard(http_policy()).vet("link.test", 80)


async def test_cross_origin_redirects_drop_credentials(settings: EngineSettings, site: Any, dns: Any) -> None:
    where, _ = site
    port = where.rpartition(":")[2]
    dns({"other.test": ["127.0.0.1"]})
    headers = {"Authorization": "Bearer abc", "X-Api-Key": "k", "Accept": "application/json"}
    ok, output, error = await get(settings, f"http://{where}/to?url=/echo", headers=headers)
    assert ok, error
    assert output["json"]["headers"]["Authorization"] == "Bearer abc" and output["json"]["headers"]["X-Api-Key"] == "k"
    ok, output, error = await get(settings, f"http://{where}/to?url=http://other.test:{port}/echo", headers=headers)
    assert ok, error
    forwarded = output["json"]["headers"]
    assert "Authorization" not in forwarded and "X-Api-Key" not in forwarded
    assert forwarded["Accept"] == "application/json"


async def test_redirect_methods_and_limits(settings: EngineSettings, site: Any) -> None:
    where, _ = site
    ok, output, _ = await get(settings, f"http://{where}/to?url=/echo&status=303", method="POST", json={"a": 1})
    assert ok and output["json"]["method"] == "GET" and output["json"]["body"] == ""
    ok, output, _ = await get(settings, f"http://{where}/to?url=/echo&status=307", method="POST", json={"a": 1})
    assert ok and output["json"]["method"] == "POST" and output["json"]["body"] == '{"a": 1}'
    ok, _, error = await get(settings, f"http://{where}/loop")
    assert not ok and error.endswith("more than 10 redirects")
    ok, _, error = await get(settings, f"http://{where}/to?url=ftp://x.example/")
    assert not ok and "redirect 1 to a URL that is not http(s)" in error


async def test_dns_failure_is_a_step_error(settings: EngineSettings) -> None:
    ok, _, error = await get(settings, "http://does-not-exist.invalid/")
    assert not ok and "cannot resolve does-not-exist.invalid" in error


async def test_resolver_never_answers_unchecked() -> None:
    resolver = netguard.PinnedResolver(OutboundGuard(http_policy()))
    with pytest.raises(AddressRefused):
        await resolver.resolve("169.254.169.254", 80)
    assert (await resolver.resolve("127.0.0.1", 80))[0]["host"] == "127.0.0.1"
    await resolver.close()
    await asyncio.sleep(0)
