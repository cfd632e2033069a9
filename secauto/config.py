"""Configuration: the ``config.yaml`` schema, environment overrides and validation.

Every section is a msgspec Struct that forbids unknown fields, so a typo or a wrong type is reported
as one :class:`ConfigError` line naming the key (``cluster.heartbeat_interval: Expected `float`, got
`str```). Nothing here touches the network or the file system beyond reading the config file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec
import yaml

from secauto.engine.script_limits import (
    ScriptLimits,
    ScriptUser,
    processes_problem,
    resolve_script_user,
    script_user_problem,
)
from secauto.engine.warm_runner import DEFAULT_PRELOAD
from secauto.schedules.spec import ScheduleSpec, definition_problems

Role = Literal["admin", "operator", "viewer"]
LoadBalancing = Literal["least_loaded", "round_robin"]
LogLevel = Literal["trace", "debug", "info", "warning", "error", "critical"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
# A module the warm script runner preloads: a dotted Python module name.
ModuleName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the key and the problem."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerConfig(_Section):
    host: str = "localhost"
    port: Port = 8080
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1024 * 1024
    # How long SIGTERM waits for running jobs before handing the rest back.
    shutdown_grace: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # HTTPS: PEM files of the certificate (chain) and its private key; both or neither.
    tls_cert: str = ""
    tls_key: str = ""
    # Peers (CIDRs or addresses) whose X-Forwarded-For is believed for the client address in the audit
    # trail; from anyone else the header is ignored.
    trusted_proxies: list[str] = []


class ClusterConfig(_Section):
    enabled: bool = False
    redis_url: str = "localhost:6379"
    redis_db: Annotated[int, msgspec.Meta(ge=0)] = 0
    redis_password: str = ""
    node_id: str = ""
    cluster_name: Name = "secauto-cluster"
    heartbeat_interval: Seconds = 30.0
    election_timeout: Seconds = 60.0
    job_timeout: Seconds = 300.0
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 3
    max_concurrent_jobs: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    load_balancing: LoadBalancing = "least_loaded"
    # A claimed job's lease; the executing node renews it every lease_timeout / 3.
    lease_timeout: Seconds = 30.0
    # The dispatcher wakes on pub/sub; this slow poll only covers lost notifications.
    poll_interval: Seconds = 5.0
    # Finished jobs are kept this long (the document: 24 h).
    job_retention: Seconds = 86400.0
    # Placement: how long a job waits for its preferred node (least loaded, round-robin target) before
    # any node with a free slot takes it, and the same for a job with an affinity key.
    dispatch_wait: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    affinity_wait: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    # Cluster-wide caps of running jobs per tag, e.g. {scan: 2}.
    tag_limits: dict[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")],
                     Annotated[int, msgspec.Meta(ge=1)]] = {}
    # Retries: exponential backoff with jitter, retry_backoff * 2^(n-1) capped at retry_backoff_max.
    retry_backoff: Seconds = 1.0
    retry_backoff_max: Seconds = 300.0
    # A retry avoids the node it failed on for this long after its backoff, if other nodes claim it.
    retry_avoid: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    # A job whose attempts took their node down this many times is quarantined in the DLQ.
    poison_limit: Annotated[int, msgspec.Meta(ge=1)] = 2
    # Dead-letter queue: at most dlq_max jobs (oldest dropped), each kept dlq_retention seconds.
    dlq_max: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    dlq_retention: Seconds = 7 * 86400.0
    # Acknowledge a submission only once durable_replicas replicas have it (Redis WAIT).
    durable_submit: bool = False
    durable_replicas: Annotated[int, msgspec.Meta(ge=1)] = 1
    durable_timeout: Seconds = 2.0
    # Redis Sentinel: "host:port" entries and the primary's service name (or use redis+sentinel://).
    sentinels: list[str] = []
    sentinel_service: str = "mymaster"
    # Start even if Redis' maxmemory-policy may evict keys (anything but noeviction): jobs, node records
    # and leases could vanish. Without it such a node refuses to start.
    allow_eviction: bool = False
    # rediss:// (TLS to Redis): the CA bundle that signed the server's certificate (empty: the system's
    # trust store), and a client certificate and key when the server asks for one (tls-auth-clients).
    redis_ca_file: str = ""
    redis_cert_file: str = ""
    redis_key_file: str = ""


class RateLimit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A token bucket: ``per_second`` requests on average, bursts of up to ``burst``."""

    per_second: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)]
    burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


MaxPending = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]


class ApiKeyConfig(_Section):
    name: str = ""
    key: str = ""
    key_sha256: str = ""
    role: Role = "admin"
    rate_limit: RateLimit | None = None  # overrides security.rate_limit for this key
    max_pending: MaxPending | None = None  # jobs waiting, pending or running that this key submitted


class SecurityConfig(_Section):
    api_keys: list[str | ApiKeyConfig] = []
    # Encrypts the stored secrets (POST /secrets); at least 32 characters, the same on every node.
    # Empty: this node cannot store or use secrets. $SECAUTO_SECRET_KEY overrides it.
    secret_key: str = ""
    # Per key, on each node (see README "Security"); null: no limit.
    rate_limit: RateLimit | None = None
    # The audit stream keeps entries this long (seconds) and at most audit_max_entries of them.
    audit_retention: Seconds = 30 * 86400.0
    audit_max_entries: Annotated[int, msgspec.Meta(ge=100, le=100_000_000)] = 1_000_000


class EngineConfig(_Section):
    scripts_dir: str = "automations"
    playbooks_dir: str = "playbooks"
    python: str = ""  # empty: the interpreter running SecAuto
    script_timeout: Seconds = 60.0
    max_output_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1024 * 1024
    script_env: dict[str, str] = {}
    # How run_script runs scripts: "warm" (a fork of a runner process with `preload` imported) or
    # "spawn" (a fresh interpreter per script). README "Scripts".
    runner: Literal["warm", "spawn"] = "warm"
    preload: list[ModuleName] = msgspec.field(default_factory=lambda: list(DEFAULT_PRELOAD))
    # http_request: networks, addresses or host names (*.domain) to allow despite the default refusal of
    # link-local and cloud metadata addresses, and to refuse besides them (http_deny wins).
    http_allow: list[str] = []
    http_deny: list[str] = []
    # setrlimit in each script's process (README "Script limits"); null or absent: no limit.
    script_limits: ScriptLimits = msgspec.field(default_factory=ScriptLimits)
    # Run scripts as this unprivileged user (name or uid; needs a root node). Needed for
    # script_limits.processes on a root node, where RLIMIT_NPROC does not apply.
    script_user: str | int | None = None


class WebhookConfig(_Section):
    url: str
    events: list[str] = []
    secret: str = ""
    timeout: Seconds = 10.0
    retries: Annotated[int, msgspec.Meta(ge=0)] = 3


class MetricsConfig(_Section):
    public: bool = False  # serve /metrics without an API key (otherwise: a viewer key)


class LoggingConfig(_Section):
    level: LogLevel = "info"
    destination: str = "stdout"  # stdout, stderr or a file path
    format: Literal["json", "text"] = "json"


class UiConfig(_Section):
    """The web dashboard under /ui (README: "Web dashboard")."""

    enabled: bool = True
    # A session ends after session_idle seconds without a request, and session_max after login anyway.
    session_idle: Seconds = 1800.0
    session_max: Seconds = 43200.0
    # Failed logins allowed per client address within login_window seconds; then 429 until it ends.
    login_attempts: Annotated[int, msgspec.Meta(ge=1)] = 10
    login_window: Seconds = 300.0
    # Always mark the session cookie Secure (TLS ended by a proxy in front); it is Secure under TLS anyway.
    secure_cookie: bool = False
    # Live pages: at most one "changed" signal per tab per live_interval seconds, whatever the event rate.
    live_interval: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 2.0


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    webhooks: list[WebhookConfig] = []
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    ui: UiConfig = msgspec.field(default_factory=UiConfig)
    # Schedules managed by config (README "Schedules"). None (no `schedules:` key): config-managed
    # schedules in Redis are left alone; a list, even empty, is what they must be.
    schedules: list[ScheduleSpec] | None = None


KeySource = Literal["config", "api"]


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A usable API key: only the SHA-256 of the secret is kept after loading (config) or creation (API)."""

    name: str
    sha256: bytes
    role: Role
    source: KeySource = "config"
    expires_at: float | None = None  # Unix seconds; None: never
    rate_limit: RateLimit | None = None  # None: security.rate_limit applies
    max_pending: int | None = None  # None: no quota

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class RedisTarget(msgspec.Struct, frozen=True, kw_only=True):
    """Where Redis is, decoded from ``redis_url`` in any of its accepted forms."""

    url: str  # a URL redis-py understands (redis://, rediss:// or unix://); empty for sentinel
    display: str  # the same without password, safe to log
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str = ""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(msgspec.Struct, kw_only=True):
    """The loaded configuration plus what was derived from it at start."""

    config: Config
    node_id: str
    api_keys: tuple[ApiKey, ...]
    generated_api_key: str | None  # set when no key was configured; printed once at start
    redis: RedisTarget
    base_dir: Path  # relative engine paths resolve against this
    trusted_proxies: tuple[Network, ...] = ()  # server.trusted_proxies, parsed
    script_user: ScriptUser | None = None  # engine.script_user, resolved

    @property
    def tls(self) -> bool:
        """Whether the node serves HTTPS (server.tls_cert and server.tls_key)."""
        return bool(self.config.server.tls_cert)

    @property
    def scripts_dir(self) -> Path:
        return (self.base_dir / self.config.engine.scripts_dir).resolve()

    @property
    def playbooks_dir(self) -> Path:
        return (self.base_dir / self.config.engine.playbooks_dir).resolve()

    @property
    def python(self) -> str:
        return self.config.engine.python or sys.executable

    def file(self, value: str) -> Path:
        """A configured file path (TLS certificates, CA bundles), relative ones against ``base_dir``."""
        return (self.base_dir / value).resolve()


class CliOverrides(msgspec.Struct, kw_only=True):
    host: str | None = None
    port: int | None = None
    node_id: str | None = None


def hash_key(key: str) -> bytes:
    import hashlib

    return hashlib.sha256(key.encode()).digest()


def parse_redis_url(raw: str, *, password: str = "", db: int = 0) -> RedisTarget:
    """Decode ``host:port``, ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://``.

    Raises :class:`ConfigError` (naming ``cluster.redis_url``) for anything else.
    """
    value = raw.strip()
    if not value:
        raise ConfigError("cluster.redis_url: must not be empty")
    if "://" not in value:
        host, sep, port = value.rpartition(":")
        if not sep:
            host, port = value, "6379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"cluster.redis_url: {raw!r} is not host:port or a redis://, rediss://, unix:// URL")
        value = f"redis://{host}:{port}"
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme == "redis+sentinel":
        return _parse_sentinel(parts, raw)
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"cluster.redis_url: unsupported scheme {scheme!r} (use redis, rediss, unix or host:port)")
    if scheme == "unix" and not parts.path:
        raise ConfigError("cluster.redis_url: unix:// needs a socket path")
    if scheme != "unix":
        try:
            _ = parts.port
        except ValueError:
            raise ConfigError(f"cluster.redis_url: bad port in {raw!r}") from None
        if not parts.hostname:
            raise ConfigError(f"cluster.redis_url: no host in {raw!r}")
    if scheme == "unix":
        query = [item for item in parts.query.split("&") if item]
        if password and not any(item.startswith("password=") for item in query):
            query.append(f"password={_quote(password)}")
        if db and not any(item.startswith("db=") for item in query):
            query.append(f"db={db}")
        url = f"unix://{parts.path}" + (f"?{'&'.join(query)}" if query else "")
    else:
        url = value
        if password and not parts.password:
            url = parts._replace(netloc=f":{_quote(password)}@{parts.netloc}").geturl()
        if parts.path in ("", "/") and db:
            url = url.rstrip("/") + f"/{db}"
    display = value if not parts.password else value.replace(f":{parts.password}@", ":***@")
    return RedisTarget(url=url, display=display)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _parse_sentinel(parts: Any, raw: str) -> RedisTarget:
    # redis+sentinel://[:password@]host1:port1,host2:port2/service_name
    netloc = parts.netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "26379"
        if not host or not port.isdigit():
            raise ConfigError(f"cluster.redis_url: bad sentinel address {item!r} in {raw!r}")
        sentinels.append((host, int(port)))
    service = unquote(parts.path.strip("/")) or "mymaster"
    return RedisTarget(url="", display=f"sentinel {service} via {netloc}", sentinels=tuple(sentinels),
                       service_name=service)


def _error_line(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.cluster.port`"; we lead with the key instead.
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$"
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    unknown = re.match(r"Object contains unknown field `([^`]*)`", message)
    if unknown:
        key = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return f"{key}: unknown key"
    return f"{path or '(top level)'}: {message}"


_ENV_STR = {
    "SECAUTO_HOST": ("server", "host"),
    "REDIS_URL": ("cluster", "redis_url"),
    "SECAUTO_REDIS_PASSWORD": ("cluster", "redis_password"),
    "SECAUTO_NODE_ID": ("cluster", "node_id"),
    "SECAUTO_CLUSTER_NAME": ("cluster", "cluster_name"),
    "SECAUTO_SECRET_KEY": ("security", "secret_key"),
}


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in _ENV_STR.items():
        if env.get(var):
            _section(raw, section)[key] = env[var]
    if env.get("SECAUTO_PORT"):
        try:
            _section(raw, "server")["port"] = int(env["SECAUTO_PORT"])
        except ValueError:
            hint = (" (Kubernetes service links set this for a Service named secauto: use enableServiceLinks: false)"
                    if env["SECAUTO_PORT"].startswith("tcp://") else "")
            raise ConfigError(f"SECAUTO_PORT: {env['SECAUTO_PORT']!r} is not a port number{hint}") from None
    enabled = env.get("SECAUTO_CLUSTER_ENABLED")
    if enabled:
        if enabled.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError(f"SECAUTO_CLUSTER_ENABLED: {enabled!r} is not true or false")
        _section(raw, "cluster")["enabled"] = enabled.lower() in ("1", "true", "yes")
    elif env.get("REDIS_URL") and "enabled" not in _section(raw, "cluster"):
        # The document's compose file gives each node only REDIS_URL: that means cluster mode.
        _section(raw, "cluster")["enabled"] = True
    if env.get("SECAUTO_API_KEY"):
        security = _section(raw, "security")
        keys = security.get("api_keys") or []
        if not isinstance(keys, list):
            raise ConfigError("security.api_keys: Expected `array`")
        security["api_keys"] = [*keys, {"name": "env", "key": env["SECAUTO_API_KEY"], "role": "admin"}]


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.setdefault(name, {})
    if value is None:
        value = raw[name] = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: Expected `object`, got `{type(value).__name__}`")
    return value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _api_keys(security: SecurityConfig) -> tuple[ApiKey, ...]:
    keys: list[ApiKey] = []
    for index, item in enumerate(security.api_keys):
        where = f"security.api_keys[{index}]"
        if isinstance(item, str):
            if len(item) < 16:
                raise ConfigError(f"{where}: an API key needs at least 16 characters")
            keys.append(ApiKey(name=f"key{index}", sha256=hash_key(item), role="admin"))
            continue
        if item.name and not _NAME_RE.match(item.name):
            raise ConfigError(f"{where}.name: {item.name!r} must match {NAME_PATTERN}")
        if bool(item.key) == bool(item.key_sha256):
            raise ConfigError(f"{where}: give exactly one of key or key_sha256")
        if item.key:
            if len(item.key) < 16:
                raise ConfigError(f"{where}.key: an API key needs at least 16 characters")
            digest = hash_key(item.key)
        else:
            try:
                digest = bytes.fromhex(item.key_sha256)
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ConfigError(f"{where}.key_sha256: must be 64 hex characters")
        keys.append(ApiKey(name=item.name or f"key{index}", sha256=digest, role=item.role,
                           rate_limit=item.rate_limit, max_pending=item.max_pending))
    seen: set[str] = set()
    for key in keys:
        if key.name in seen:
            # Names identify keys in the audit trail, in rate limits and quotas, and in DELETE /keys/{name}.
            raise ConfigError(f"security.api_keys: two keys are named {key.name!r}; names must be unique")
        seen.add(key.name)
    return tuple(keys)


def _check_schedules(schedules: list[ScheduleSpec]) -> None:
    """Cron, time zone, every/cron and playbook/playbook_name choices, unique names. The playbooks
    themselves are validated at node start (they may name files in playbooks_dir)."""
    seen: set[str] = set()
    for index, spec in enumerate(schedules):
        where = f"schedules[{index}]"
        if spec.name in seen:
            raise ConfigError(f"{where}.name: another schedule is already named {spec.name!r}")
        seen.add(spec.name)
        problems = definition_problems(spec)
        if problems:
            field, message = problems[0]
            raise ConfigError(f"{where}.{field}: {message}")


def default_node_id(port: int) -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "node"
    return f"{host[:50]}-{port}"


def load_settings(
    path: Path | None,
    env: Mapping[str, str] | None = None,
    overrides: CliOverrides | None = None,
) -> Settings:
    """Read ``path`` (or nothing), apply env and command-line overrides, validate.

    Raises :class:`ConfigError` with one line naming the key on any problem.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = _read_file(path) if path is not None else {}
    for section in ("server", "cluster", "security", "engine", "logging", "ui"):
        if section in raw:
            _section(raw, section)
    logging_section = raw.get("logging")
    if isinstance(logging_section, dict) and isinstance(logging_section.get("level"), str):
        logging_section["level"] = logging_section["level"].lower()
    _apply_env(raw, env)
    if overrides is not None:
        if overrides.host is not None:
            _section(raw, "server")["host"] = overrides.host
        if overrides.port is not None:
            _section(raw, "server")["port"] = overrides.port
        if overrides.node_id is not None:
            _section(raw, "cluster")["node_id"] = overrides.node_id
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_error_line(exc)) from None
    return settings_from_config(config, base_dir=path.parent if path is not None else Path.cwd())


def _script_user(engine: EngineConfig, *, euid: int) -> ScriptUser | None:
    """``engine.script_user`` resolved, and checked together with ``engine.script_limits.processes``
    against the uid the node runs as (``euid``). Raises :class:`ConfigError` naming the key."""
    user = None
    if engine.script_user is not None and engine.script_user != "":
        try:
            user = resolve_script_user(engine.script_user)
        except ValueError as exc:
            raise ConfigError(f"engine.script_user: {exc}") from None
        problem = script_user_problem(user, euid=euid)
        if problem:
            raise ConfigError(f"engine.script_user: {problem}")
    problem = processes_problem(engine.script_limits, user, euid=euid)
    if problem:
        raise ConfigError(f"engine.script_limits.processes: {problem}")
    return user


def settings_from_config(config: Config, *, base_dir: Path, euid: int | None = None) -> Settings:
    """Derive the runtime settings (node id, hashed keys, Redis target) from a validated Config.

    ``euid`` is the uid the node runs as (default: this process'); the script user and the
    ``processes`` limit are checked against it."""
    cluster = config.cluster
    node_id = cluster.node_id or default_node_id(config.server.port)
    if not _NAME_RE.match(node_id):
        raise ConfigError(f"cluster.node_id: {node_id!r} must match {NAME_PATTERN}")
    from secauto.models import EVENT_TYPES

    for index, hook in enumerate(config.webhooks):
        parts = urlsplit(hook.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"webhooks[{index}].url: must be an http:// or https:// URL")
        unknown = sorted(set(hook.events) - EVENT_TYPES)
        if unknown:
            raise ConfigError(f"webhooks[{index}].events: unknown event type {unknown[0]!r} "
                              f"(known: {', '.join(sorted(EVENT_TYPES))})")
    secret_key = config.security.secret_key
    if secret_key:
        from secauto.secret_cipher import MIN_KEY_LENGTH

        if len(secret_key) < MIN_KEY_LENGTH:
            raise ConfigError(f"security.secret_key: needs at least {MIN_KEY_LENGTH} characters (use a random value, "
                              "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    from secauto.engine.netguard import http_policy

    try:
        http_policy(config.engine.http_allow, config.engine.http_deny)
    except ValueError as exc:
        raise ConfigError(f"engine.{exc}") from None
    _check_schedules(config.schedules or [])
    script_user = _script_user(config.engine, euid=os.geteuid() if euid is None else euid)
    keys = _api_keys(config.security)
    server = config.server
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError("server.tls_cert, server.tls_key: give both (HTTPS) or neither (HTTP)")
    if bool(cluster.redis_cert_file) != bool(cluster.redis_key_file):
        raise ConfigError("cluster.redis_cert_file, cluster.redis_key_file: give both or neither")
    if (cluster.redis_ca_file or cluster.redis_cert_file) and not cluster.redis_url.strip().startswith("rediss://"):
        raise ConfigError("cluster.redis_ca_file, cluster.redis_cert_file: only for a rediss:// redis_url")
    proxies = []
    for index, entry in enumerate(server.trusted_proxies):
        try:
            proxies.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"server.trusted_proxies[{index}]: {entry!r} is not an IP address or CIDR "
                              "network") from None
    generated = None
    if not keys:
        generated = secrets.token_urlsafe(32)
        keys = (ApiKey(name="generated", sha256=hash_key(generated), role="admin"),)
    if cluster.sentinels:
        sentinel_url = f"redis+sentinel://{','.join(cluster.sentinels)}/{cluster.sentinel_service}"
        redis = parse_redis_url(sentinel_url)
    else:
        redis = parse_redis_url(cluster.redis_url, password=cluster.redis_password, db=cluster.redis_db)
    return Settings(config=config, node_id=node_id, api_keys=keys, generated_api_key=generated, redis=redis,
                    base_dir=base_dir.resolve(), trusted_proxies=tuple(proxies), script_user=script_user)


def find_config_file(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """``--config``, else ``$SECAUTO_CONFIG``, else ``./config.yaml`` if present, else None."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("SECAUTO_CONFIG"):
        return Path(env["SECAUTO_CONFIG"])
    local = Path("config.yaml")
    return local if local.is_file() else None
