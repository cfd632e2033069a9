"""Assembles one node: config -> store -> actors -> HTTP API, and takes it down in reverse order.

Start: install log redaction of secret values (:mod:`secauto.redaction`), resolve the config schedules'
playbooks, open the store (Redis, or the embedded store when cluster mode is off) and, in cluster mode,
refuse a Redis whose eviction policy can drop keys (unless ``cluster.allow_eviction``), start the warm
script runner (``engine.runner: warm``; exec'd with the scripts' environment only), bind the HTTP
socket (so the node record can name the real port), spawn the actors (executor, dispatcher, discovery,
heartbeat, webhooks, secrets, scheduler, reaper), then serve HTTP.

Graceful stop (SIGTERM/SIGINT): stop claiming, let running jobs finish within
``server.shutdown_grace``, stop HTTP, stop the actors in reverse start order (the reaper releases
leadership, the heartbeat deletes the node record and publishes ``node.left``), stop the warm script
runner (its socket closed, SIGKILL after 5 s), close Redis.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import sys

import msgspec
from aiohttp import web
from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.audit import AuditActor
from actors.context import NodeContext
from actors.core import ActorRef, ActorSystem, NodeFatalError
from actors.discovery import DiscoveryActor
from actors.dispatcher import DispatcherActor
from actors.executor import ExecutorActor
from actors.heartbeat import HeartbeatActor
from actors.keys import KeysActor
from actors.messages import ExecutorStats, GetStats, HandBack, SetStatus, StopClaiming
from actors.reaper import ReaperActor
from actors.scheduler import SchedulerActor
from actors.secrets import SecretsActor
from actors.webhooks import WebhookActor
from secauto.api.app import create_app
from secauto.api.state import EventSource
from secauto.config import ConfigError, Settings
from secauto.engine import EngineSettings, PlaybookInvalid
from secauto.engine.netguard import http_policy
from secauto.engine.scripts import script_environment
from secauto.engine.warm import WarmRunner
from secauto.keyring import KeyRing
from secauto.metrics import NodeMetrics
from secauto.models import utc_now
from secauto.redaction import install_log_redaction
from secauto.schedules.definition import ScheduleRecord, resolve_steps
from secauto.secret_cipher import SecretCipher
from secauto.store.apikeys import KeyStore
from secauto.store.audit import AuditStore
from secauto.store.connection import open_embedded, open_redis, redis_tls_options
from secauto.store.jobs import DispatchPolicy, JobQueue, RetentionPolicy
from secauto.store.keys import Keys
from secauto.store.registry import NodeRegistry
from secauto.store.safety import check_eviction
from secauto.store.schedules import ScheduleStore
from secauto.store.secrets import SecretStore
from secauto.store.sessions import LoginThrottle, SessionStore
from secauto.store.webhooks import WebhookSpec, WebhookStore
from secauto.ui.app import create_ui_app, mount_ui
from secauto.vault import SecretVault


def engine_settings(settings: Settings) -> EngineSettings:
    engine = settings.config.engine
    return EngineSettings(scripts_dir=settings.scripts_dir, playbooks_dir=settings.playbooks_dir,
                          python=settings.python, script_timeout=engine.script_timeout,
                          max_output_bytes=engine.max_output_bytes, script_env=dict(engine.script_env),
                          runner=engine.runner, preload=tuple(engine.preload),
                          http_policy=http_policy(engine.http_allow, engine.http_deny),
                          script_limits=engine.script_limits, script_user=settings.script_user)


def retention_policy(settings: Settings) -> RetentionPolicy:
    cluster = settings.config.cluster
    return RetentionPolicy(job_retention_s=max(1, int(cluster.job_retention)),
                           dlq_retention_s=max(1, int(cluster.dlq_retention)), dlq_max=cluster.dlq_max,
                           backoff_base_ms=int(cluster.retry_backoff * 1000),
                           backoff_cap_ms=int(cluster.retry_backoff_max * 1000),
                           avoid_ms=int(cluster.retry_avoid * 1000), poison_limit=cluster.poison_limit)


def dispatch_policy(settings: Settings) -> DispatchPolicy:
    cluster = settings.config.cluster
    return DispatchPolicy(placement=cluster.load_balancing, dispatch_wait_ms=int(cluster.dispatch_wait * 1000),
                          affinity_wait_ms=int(cluster.affinity_wait * 1000), tag_limits=dict(cluster.tag_limits))


def config_schedules(settings: Settings, engine: EngineSettings) -> list[ScheduleRecord] | None:
    """The schedules of config.yaml with their playbooks resolved and validated; None without a
    ``schedules:`` key. Raises ConfigError naming ``schedules[i].playbook`` (or ``.playbook_name``)."""
    specs = settings.config.schedules
    if specs is None:
        return None
    records = []
    for index, spec in enumerate(specs):
        try:
            records.append(ScheduleRecord(spec=spec, steps=resolve_steps(spec, engine)))
        except PlaybookInvalid as exc:
            field = "playbook_name" if spec.playbook_name is not None else "playbook"
            problem = exc.problems[0]
            where = "" if problem.path == "$" else f" at {problem.path}"
            raise ConfigError(f"schedules[{index}].{field}: {problem.message}{where}") from None
    return records


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTPS context of ``server.tls_cert`` / ``server.tls_key`` (TLS 1.2 or newer), or None for
    plain HTTP. Raises ConfigError naming the key when a file is missing or not a matching PEM pair."""
    server = settings.config.server
    if not server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.file(server.tls_cert), settings.file(server.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_cert, server.tls_key: cannot load the certificate and key ({exc})") from None
    return context


def _advertised_host(bind_host: str) -> str:
    return socket.gethostname() if bind_host in ("", "0.0.0.0", "::") else bind_host


class Node:
    """One SecAuto node. ``start()`` then ``stop()``; both are safe to call once each."""

    def __init__(self, settings: Settings, *, redis: Redis | None = None) -> None:
        self.settings = settings
        self.cluster_mode = settings.config.cluster.enabled
        self._redis = redis
        self._owns_redis = redis is None
        self.system = ActorSystem(f"node-{settings.node_id}")
        self.metrics = NodeMetrics(settings.node_id)
        self._runner: web.AppRunner | None = None
        self._scripts: WarmRunner | None = None  # the warm script runner's supervisor (engine.runner: warm)
        self._socket: socket.socket | None = None
        self.port = settings.config.server.port
        self.keyring = KeyRing(settings.api_keys)
        self.log = logger.bind(component="node", node_id=settings.node_id)

    @property
    def url(self) -> str:
        host = self.settings.config.server.host
        host = "127.0.0.1" if host in ("", "0.0.0.0", "localhost") else host
        return f"{'https' if self.settings.tls else 'http'}://{host}:{self.port}"

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("node not started")
        return self._redis

    async def start(self) -> None:
        """Start everything; on failure, undo what was started and re-raise."""
        settings = self.settings
        cluster = settings.config.cluster
        if self._redis is None:
            self._redis = (open_redis(settings.redis, password=cluster.redis_password, db=cluster.redis_db,
                                      tls=redis_tls_options(settings))
                           if self.cluster_mode else open_embedded())
        try:
            await self._start(settings, cluster.cluster_name)
        except BaseException:
            await self.stop(grace=0)
            raise
        mode = f"cluster {cluster.cluster_name} via {settings.redis.display}" if self.cluster_mode else "standalone"
        self.log.info("node listening on {} ({}, {} slots)", self.url, mode, cluster.max_concurrent_jobs)

    async def _start(self, settings: Settings, cluster_name: str) -> None:
        server = settings.config.server
        install_log_redaction()
        engine = engine_settings(settings)
        schedules = config_schedules(settings, engine)
        if self.cluster_mode:
            await self._check_storage()
        engine = await self._start_script_runner(engine)
        tls = server_tls_context(settings)
        self._socket = socket.create_server((server.host, server.port), reuse_port=False)
        self.port = self._socket.getsockname()[1]
        keys = Keys(cluster_name)
        security = settings.config.security
        key_store = KeyStore(self.redis, keys)
        audit_store = AuditStore(self.redis, keys, retention_s=security.audit_retention,
                                 max_entries=security.audit_max_entries)
        # First spawned, last stopped: the API records and authenticates until it is down.
        audit = AuditActor(settings.node_id, audit_store, self.metrics)
        await self.system.spawn(audit, name="audit")
        await self.system.spawn(KeysActor(settings.node_id, key_store, self.keyring), name="keys")
        queue = JobQueue(self.redis, keys, retention_policy(settings), dispatch_policy(settings))
        secret_key = settings.config.security.secret_key
        vault = SecretVault(SecretStore(self.redis, keys), SecretCipher(secret_key) if secret_key else None)
        ctx = NodeContext(settings=settings, node_id=settings.node_id, host=_advertised_host(server.host),
                          port=self.port, started_at=utc_now(), queue=queue, registry=NodeRegistry(self.redis, keys),
                          engine=engine, metrics=self.metrics, vault=vault)
        await self.system.spawn(ExecutorActor(ctx), name="executor")
        dispatcher = DispatcherActor(ctx)
        await self.system.spawn(dispatcher, name="dispatcher")
        await self.system.spawn(DiscoveryActor(ctx), name="discovery")
        await self.system.spawn(HeartbeatActor(ctx), name="heartbeat")
        webhook_store = WebhookStore(self.redis, keys)
        configured = [WebhookSpec(id=f"config-{index}", url=hook.url, events=list(hook.events), secret=hook.secret,
                                  timeout=hook.timeout, retries=hook.retries, source="config")
                      for index, hook in enumerate(settings.config.webhooks)]
        await self.system.spawn(WebhookActor(ctx, webhook_store, configured), name="webhooks")
        await self.system.spawn(SecretsActor(vault, settings.node_id), name="secrets")
        # Before the reaper: it tells the scheduler whether this node leads, from its first election on.
        await self.system.spawn(SchedulerActor(ctx, ScheduleStore(queue), schedules), name="scheduler")
        await self.system.spawn(ReaperActor(ctx), name="reaper")
        events = EventSource(self.redis, keys.channel)
        app = create_app(settings, self.system, engine, self.metrics, events, webhook_store, vault,
                         cluster_mode=self.cluster_mode, keyring=self.keyring, key_store=key_store,
                         audit_store=audit_store, submissions=dispatcher.submissions, audit=audit)
        ui = settings.config.ui
        if ui.enabled:
            sessions = SessionStore(self.redis, keys, idle_s=ui.session_idle, max_s=ui.session_max)
            throttle = LoginThrottle(self.redis, keys, attempts=ui.login_attempts, window_s=ui.login_window)
            mount_ui(app, create_ui_app(ui, sessions, throttle, events))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket, ssl_context=tls).start()

    async def _start_script_runner(self, engine: EngineSettings) -> EngineSettings:
        """With ``engine.runner: warm``, start the warm script runner (before the actors, stopped after
        them) and return the engine settings that use it. A runner that fails to start is no error:
        scripts spawn until its supervisor gets one running."""
        if engine.runner != "warm":
            return engine
        if engine.python != sys.executable:
            self.log.info("engine.python is {} (not this node's interpreter): scripts run with spawn",
                          engine.python)
            return engine
        self._scripts = WarmRunner(env=script_environment(engine), preload=engine.preload)
        await self._scripts.start()
        return msgspec.structs.replace(engine, script_host=self._scripts)

    async def _check_storage(self) -> None:
        """Refuse to start (ConfigError naming cluster.allow_eviction) on a Redis whose eviction policy can
        drop keys, unless allowed; the heartbeat keeps checking and /health explains it either way."""
        try:
            check = await asyncio.wait_for(check_eviction(self.redis), timeout=5.0)
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            self.log.warning("cannot check Redis' eviction policy now ({}); checking again once it answers",
                             exc or type(exc).__name__)
            return
        if check.problem is not None and not self.settings.config.cluster.allow_eviction:
            raise ConfigError(f"cluster.allow_eviction: {check.problem} (or set cluster.allow_eviction: true to "
                              "start anyway)")

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop; ``grace`` (default ``server.shutdown_grace``) bounds the wait for running jobs."""
        grace = self.settings.config.server.shutdown_grace if grace is None else grace
        dispatcher, executor, heartbeat = self._actor("dispatcher"), self._actor("executor"), self._actor("heartbeat")
        if dispatcher is not None and executor is not None:
            try:
                await dispatcher.ask(StopClaiming(), timeout=5.0)
                if heartbeat is not None:  # placement stops counting on this node's slots
                    await heartbeat.ask(SetStatus("draining"), timeout=5.0)
                await self._wait_idle(executor, grace)
                handed_back = await executor.ask(HandBack(), timeout=15.0)
                if handed_back:
                    self.log.warning("{} unfinished job(s) handed back to the queue", handed_back)
            except Exception:
                self.log.exception("draining failed; stopping anyway")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        elif self._socket is not None:
            self._socket.close()
        self._socket = None
        await self.system.stop(timeout=10.0)
        if self._scripts is not None:  # after the actors: no job can start a script any more
            await self._scripts.stop()
            self._scripts = None
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
            self._redis = None
        self.log.info("node stopped")

    async def _wait_idle(self, executor: ActorRef, grace: float) -> None:
        """Let running jobs finish for up to ``grace`` seconds (polling, so the executor keeps answering
        the heartbeat's questions meanwhile: the node record must stay fresh while it drains)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            stats: ExecutorStats = await executor.ask(GetStats(), timeout=5.0)
            if stats.running == 0:
                return
            if loop.time() >= deadline:
                self.log.warning("{} job(s) still running after the {:g}s grace period", stats.running, grace)
                return
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    def _actor(self, name: str) -> ActorRef | None:
        try:
            return self.system.get(name)
        except KeyError:
            return None

    async def run_until_stopped(self) -> int:
        """Run until SIGTERM/SIGINT (exit code 0) or until supervision gives up (exit code 1)."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        waiter = asyncio.create_task(stop_requested.wait(), name="signal-wait")
        fatal = asyncio.create_task(self.system.wait_fatal(), name="fatal-wait")
        try:
            done, _ = await asyncio.wait({waiter, fatal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, fatal):
                task.cancel()
            await asyncio.gather(waiter, fatal, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        code = 0
        if fatal in done and not fatal.cancelled():
            error: NodeFatalError = fatal.result()
            self.log.error("stopping the node: {}", error)
            code = 1
        else:
            self.log.info("stop requested, draining")
        await self.stop()
        return code
