"""The security building blocks on their own, with injected clocks: token buckets, client addresses
behind proxies, the key ring (revocation, expiry, config precedence), the config checks."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import msgspec
import pytest

from secauto.api.limits import RateLimiter
from secauto.api.peers import client_address
from secauto.config import ApiKey, Config, ConfigError, RateLimit, settings_from_config
from secauto.keyring import KeyRing, digest_of


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(name: str, secret: str, **extra: object) -> ApiKey:
    return ApiKey(name=name, sha256=digest_of(secret), role="operator", **extra)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- rate limits


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_second=2, burst=3), clock=clock)
    caller = key("a", "secret-a")
    assert [limiter.acquire(caller) for _ in range(3)] == [None, None, None]
    assert limiter.acquire(caller) == 1  # empty: the next token comes in 0.5 s -> Retry-After 1 (never 0)
    clock.now += 0.5
    assert limiter.acquire(caller) is None
    assert limiter.acquire(caller) == 1
    clock.now += 100  # refills up to the burst, not beyond
    assert [limiter.acquire(caller) for _ in range(4)] == [None, None, None, 1]


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_second=0.1, burst=1), clock=clock)
    caller = key("slow", "secret-slow")
    assert limiter.acquire(caller) is None
    assert limiter.acquire(caller) == 10
    clock.now += 7.5
    assert limiter.acquire(caller) == 3  # 2.5 s left, rounded up


def test_buckets_are_per_key_and_a_key_may_override_the_default() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(per_second=1, burst=1), clock=clock)
    first, second = key("first", "s1"), key("second", "s2")
    roomy = key("roomy", "s3", rate_limit=RateLimit(per_second=1, burst=5))
    assert limiter.acquire(first) is None and limiter.acquire(first) == 1
    assert limiter.acquire(second) is None  # its own bucket
    assert [limiter.acquire(roomy) for _ in range(6)] == [None] * 5 + [1]


def test_no_limit_configured_costs_nothing_and_refuses_nothing() -> None:
    limiter = RateLimiter(None, clock=FakeClock())
    caller = key("free", "secret")
    assert all(limiter.acquire(caller) is None for _ in range(10_000))
    assert limiter._buckets == {}


# -------------------------------------------------------------------------------- client address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    assert client_address("203.0.113.9", ["1.2.3.4"], ()) == "203.0.113.9"


def test_forwarded_for_from_an_untrusted_peer_cannot_forge_the_address() -> None:
    assert client_address("203.0.113.9", ["10.1.1.1, 1.2.3.4"], PROXIES) == "203.0.113.9"


def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6" itself; the proxy appended the address it saw.
    assert client_address("10.0.0.2", ["6.6.6.6, 198.51.100.7"], PROXIES) == "198.51.100.7"
    # two proxies in a chain, the header given twice
    assert client_address("10.0.0.2", ["6.6.6.6, 198.51.100.7", "10.0.0.9"], PROXIES) == "198.51.100.7"
    assert client_address("::1", ["2001:db8::5"], PROXIES) == "2001:db8::5"


def test_trusted_proxy_edge_cases() -> None:
    assert client_address("10.0.0.2", [], PROXIES) == "10.0.0.2"  # no header: the proxy itself
    assert client_address("10.0.0.2", ["10.0.0.3"], PROXIES) == "10.0.0.3"  # all trusted: the left-most
    # a malformed hop ends the walk at the last trusted address: nothing left of it is believed
    assert client_address("10.0.0.2", ["1.2.3.4, not-an-ip, 10.0.0.7"], PROXIES) == "10.0.0.7"
    assert client_address(None, ["1.2.3.4"], PROXIES) is None


# ----------------------------------------------------------------------------------------- keyring


def test_keyring_revokes_expires_and_prefers_config_keys() -> None:
    clock = FakeClock()
    config = key("admin", "config-secret")
    ring = KeyRing([config], clock=clock)
    assert ring.identity_for_digest(digest_of("config-secret")) == config
    api = key("ci", "api-secret", source="api", expires_at=clock.now + 60)
    clash = key("admin", "other-secret", source="api")
    assert ring.replace_api_keys([api, clash], version=3) == ["admin"]  # config wins; the clash is ignored
    assert ring.version == 3 and ring.identity_for_digest(digest_of("other-secret")) is None
    assert ring.identity_for_digest(digest_of("api-secret")) == api
    clock.now += 60  # expiry needs no reload
    assert ring.identity_for_digest(digest_of("api-secret")) is None
    assert ring.lookup(digest_of("api-secret")) == api  # known (so the refusal can name it), but expired
    ring.replace_api_keys([], version=4)  # revoked
    assert ring.lookup(digest_of("api-secret")) is None
    assert ring.identity_for_digest(digest_of("config-secret")) == config


def test_keyring_usage_is_taken_once_and_restored_after_a_failed_flush() -> None:
    clock = FakeClock()
    ring = KeyRing([], clock=clock)
    ring.touch("a")
    clock.now += 1
    ring.touch("b")
    taken = ring.take_usage()
    assert taken == {"a": 1000.0, "b": 1001.0} and ring.take_usage() == {}
    clock.now += 1
    ring.touch("b")  # newer than the failed flush's value: kept
    ring.restore_usage(taken)
    assert ring.pending_usage() == {"a": 1000.0, "b": 1002.0}


# ------------------------------------------------------------------------------------------ config


def settings(raw: dict[str, object]) -> None:
    settings_from_config(msgspec.convert(raw, Config), base_dir=Path.cwd())


@pytest.mark.parametrize(("raw", "message"), [
    ({"security": {"api_keys": [{"name": "a", "key": "k" * 16}, {"name": "a", "key": "j" * 16}]}},
     "security.api_keys: two keys are named 'a'"),
    ({"security": {"api_keys": [{"name": "bad name", "key": "k" * 16}]}}, "security.api_keys[0].name"),
    ({"server": {"trusted_proxies": ["10.0.0.0/8", "nope"]}}, "server.trusted_proxies[1]"),
    ({"server": {"tls_cert": "cert.pem"}}, "server.tls_cert, server.tls_key: give both"),
    ({"cluster": {"redis_ca_file": "ca.pem"}}, "only for a rediss:// redis_url"),
    ({"cluster": {"redis_url": "rediss://h:6380", "redis_cert_file": "c.pem"}}, "cluster.redis_cert_file"),
])
def test_security_config_mistakes_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings(raw)


def test_rate_limit_config_is_validated() -> None:
    with pytest.raises(msgspec.ValidationError, match="per_second"):
        msgspec.convert({"security": {"rate_limit": {"per_second": 0, "burst": 1}}}, Config)
    config = msgspec.convert({"security": {"rate_limit": {"per_second": 5, "burst": 10}, "api_keys": [
        {"name": "ci", "key": "k" * 16, "rate_limit": {"per_second": 1, "burst": 2}, "max_pending": 4}]}}, Config)
    result = settings_from_config(config, base_dir=Path.cwd())
    assert result.api_keys[0].rate_limit == RateLimit(per_second=1, burst=2) and result.api_keys[0].max_pending == 4
