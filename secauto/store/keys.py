"""Every Redis key and channel name SecAuto uses, in one place.

Operators use the first four from redis-cli (see the README, "Redis keys"), so their spelling is a contract.
Every key is either bounded in size or carries a TTL; the comment on each says which.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "secauto"
RECENT_MAX: Final = 10_000
SCHEDULES_MAX: Final = 10_000
SCHEDULE_HISTORY_MAX: Final = 100
SCHEDULE_ACTIVE_MAX: Final = 100


class Keys:
    """Key names for one cluster. Lua scripts receive these as KEYS/ARGV, or compiled into their
    source (the dependency settings, see ``JobQueue``); none are built in Lua except per-job keys from
    a prefix here (``job:<id>``, ``dependents:<cluster>:<id>``, ``waiting-on:<cluster>:<id>``: the
    scripts touch jobs they pop from a ZSET or LIST)."""

    __slots__ = (
        "api_keys",
        "api_keys_version",
        "audit",
        "capacity",
        "channel",
        "cluster",
        "control",
        "delayed",
        "dependency_backlog",
        "dependency_pins",
        "dependency_refs",
        "dependents_prefix",
        "dlq",
        "job_index",
        "job_prefix",
        "key_usage",
        "leader",
        "load",
        "login_failures_prefix",
        "node_index",
        "node_prefix",
        "queue",
        "quota_owner",
        "quota_pending",
        "recent",
        "round_robin",
        "running",
        "schedule_buffered",
        "schedule_due",
        "schedules",
        "secrets",
        "sequence",
        "session_prefix",
        "tag_running",
        "waiting_prefix",
        "webhook_claim_prefix",
        "webhooks",
    )

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        # ZSET of pending job ids, score -priority * 1e12 + sequence (higher priority first, then FIFO).
        # Bounded by the number of pending jobs.
        self.queue = f"{PREFIX}:jobs:{cluster}"
        # STRING per job: the JSON record. No TTL while pending/running, job_retention once finished.
        self.job_prefix = f"{PREFIX}:job:"
        # STRING per node: the node record, TTL 3 x heartbeat_interval.
        self.node_prefix = f"{PREFIX}:nodes:{cluster}:"
        # ZSET index of node ids, score = last heartbeat (ms): lists nodes without SCAN over the keyspace.
        # Members whose record expired are removed by readers, so it is bounded by the live nodes.
        self.node_index = f"{PREFIX}:node-index:{cluster}"
        # pub/sub channel of lifecycle events (a public interface, see README).
        self.channel = f"{PREFIX}:events:{cluster}"
        # pub/sub channel the nodes listen to: "wake" when jobs became claimable, and the events that
        # concern nodes (job.cancelled of running jobs, node.*, leader.changed). Internal: the public
        # channel above carries every event; nodes stay off it unless SSE clients or webhooks need it.
        self.control = f"{PREFIX}:control:{cluster}"
        # ZSET of running job ids, score = lease deadline in ms (Redis clock). Bounded by running jobs.
        self.running = f"{PREFIX}:running:{cluster}"
        # ZSET of pending job ids not due yet (retry backoff, delay/run_at), score = due time in ms.
        # Bounded by the number of pending jobs.
        self.delayed = f"{PREFIX}:delayed:{cluster}"
        # HASH node id -> running jobs, and node id -> slots: what placement compares. One field per
        # active node; a node's fields are removed when it leaves or is lost.
        self.load = f"{PREFIX}:load:{cluster}"
        self.capacity = f"{PREFIX}:capacity:{cluster}"
        # HASH tag -> running jobs with that tag, cluster-wide (cluster.tag_limits). Fields at 0 removed.
        self.tag_running = f"{PREFIX}:tag-running:{cluster}"
        # STRING counter: round-robin position. One integer.
        self.round_robin = f"{PREFIX}:rr:{cluster}"
        # ZSET of every job id by submission (score = ms * 1000 + sequence % 1000, unique and ordered),
        # for GET /cluster/jobs; entries older than the longest retention are trimmed at each submit.
        self.job_index = f"{PREFIX}:job-index:{cluster}"
        # LIST of the latest attempt ends, "end_ms status node duration_ms", capped at RECENT_MAX, for
        # GET /cluster/stats.
        self.recent = f"{PREFIX}:recent:{cluster}"
        # HASH webhook id -> JSON (webhooks added through the API; config ones live in config.yaml).
        # Bounded by what admins add.
        self.webhooks = f"{PREFIX}:webhooks:{cluster}"
        # HASH secret name -> sealed value (JSON: AES-GCM ciphertext, nonce, key id, updated_at); see
        # secauto/secret_cipher.py. Bounded: at most store/secrets.py MAX_SECRETS names (secret_put.lua).
        self.secrets = f"{PREFIX}:secrets:{cluster}"
        # STRING per (webhook, event): the node delivering it, SET NX, TTL 1 h (one delivery per event).
        self.webhook_claim_prefix = f"{PREFIX}:webhook-claim:{cluster}:"
        # STRING counter giving FIFO order inside a priority. One integer.
        self.sequence = f"{PREFIX}:seq:{cluster}"
        # STRING leader lease "<node_id>:<token>", PX election_timeout.
        self.leader = f"{PREFIX}:leader:{cluster}"
        # ZSET of dead-lettered job ids, score = time (ms); capped at cluster.dlq_max (oldest out, record
        # deleted); the records expire after cluster.dlq_retention.
        self.dlq = f"{PREFIX}:dlq:{cluster}"
        # STRING per dashboard session, named by the SHA-256 of the session id (the cookie's value is
        # never stored): the session record, TTL ui.session_idle refreshed on use, never past ui.session_max.
        self.session_prefix = f"{PREFIX}:session:{cluster}:"
        # STRING counter per client address: failed dashboard logins, TTL ui.login_window from the first.
        self.login_failures_prefix = f"{PREFIX}:login-failures:{cluster}:"
        # HASH schedule name -> its definition as JSON (definition and resolved playbook). At most
        # SCHEDULES_MAX schedules (schedule_upsert.lua refuses more).
        self.schedules = f"{PREFIX}:schedules:{cluster}"
        # ZSET schedule name -> due time (ms, Redis clock) of its pending slot; enabled schedules only.
        self.schedule_due = f"{PREFIX}:schedule-due:{cluster}"
        # SET of schedule names holding a buffered slot (overlap buffer_one). Bounded by the schedules.
        self.schedule_buffered = f"{PREFIX}:schedule-buffered:{cluster}"
        # HASH key name -> JSON (API keys made with POST /keys: SHA-256 digest, role, expiry; never the
        # key itself). Bounded by what admins create; DELETE /keys/{name} removes the field.
        self.api_keys = f"{PREFIX}:keys:{cluster}"
        # STRING counter, incremented with every change of api_keys: nodes poll it to notice a change
        # whose pub/sub notice they missed. One integer.
        self.api_keys_version = f"{PREFIX}:keys-version:{cluster}"
        # ZSET key name -> last use (ms), written in batches with ZADD GT (newest wins across nodes).
        # One member per key name in use (config or API); a deleted API key's member is removed.
        self.key_usage = f"{PREFIX}:keys-used:{cluster}"
        # STREAM of audit entries; every batch (lua/audit.lua) trims it to security.audit_max_entries and
        # drops the entries older than security.audit_retention.
        self.audit = f"{PREFIX}:audit:{cluster}"
        # HASH key name -> jobs waiting, pending or running that the key submitted, for the keys with a
        # max_pending quota. One field per such key; fields at 0 are removed.
        self.quota_pending = f"{PREFIX}:quota:{cluster}"
        # HASH job id -> the name of the key whose quota the job counts against, while the job has not
        # ended for good. Bounded by the live jobs of keys with a quota (other jobs have no field).
        self.quota_owner = f"{PREFIX}:quota-owner:{cluster}"

        # --- dependencies (README, "Dependencies"; store/lua/lib.lua, "Dependencies") ---
        # LIST per job: the jobs waiting for it, in registration order (at most MAX_DEPENDENTS, checked
        # at submission; a dependent cancelled meanwhile leaves it). Popped, and so deleted, when its
        # end is processed.
        self.dependents_prefix = f"{PREFIX}:dependents:{cluster}:"
        # SET per waiting job: its dependencies that have not ended yet (at most MAX_DEPENDENCIES).
        # Deleted when the job is released or cancelled.
        self.waiting_prefix = f"{PREFIX}:waiting-on:{cluster}:"
        # HASH job id -> how many of its dependents have not ended for good (they may still read its
        # record). A field is removed at 0. Bounded by the jobs with unfinished dependents.
        self.dependency_refs = f"{PREFIX}:dep-refs:{cluster}"
        # HASH job id -> the TTL (s) its ended record gets back once no dependent needs it; meanwhile the
        # record lives at most RetentionPolicy.dependency_hold_s. Same bound as dep-refs.
        self.dependency_pins = f"{PREFIX}:dep-pins:{cluster}"
        # ZSET "<status>:<job id>" of ended jobs whose dependents are not all processed yet (a script
        # handles at most RetentionPolicy.settle_budget dependents; the leader carries on), score = ms.
        # Entries go once processed; bounded by the jobs that ended with many dependents.
        self.dependency_backlog = f"{PREFIX}:dep-backlog:{cluster}"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    def session(self, id_digest: str) -> str:
        return f"{self.session_prefix}{id_digest}"

    def login_failures(self, address: str) -> str:
        return f"{self.login_failures_prefix}{address}"

    def schedule_state(self, name: str) -> str:
        """HASH: one schedule's state (pending slot, paused, last fire, ...). Deleted with the schedule."""
        return f"{PREFIX}:schedule:{self.cluster}:{name}"

    def schedule_history(self, name: str) -> str:
        """LIST: one schedule's slot outcomes as JSON, newest first, capped at SCHEDULE_HISTORY_MAX."""
        return f"{PREFIX}:schedule-history:{self.cluster}:{name}"

    def schedule_jobs(self, name: str) -> str:
        """SET: ids of the schedule's jobs that may still be active (overlap checks); finished ones are
        pruned at each fire, and at most SCHEDULE_ACTIVE_MAX are tracked."""
        return f"{PREFIX}:schedule-jobs:{self.cluster}:{name}"

    def node(self, node_id: str) -> str:
        return f"{self.node_prefix}{node_id}"

    @property
    def node_pattern(self) -> str:
        return f"{self.node_prefix}*"
