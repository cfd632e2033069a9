"""Config loading: defaults of the cluster-mode document, env overrides, redis_url forms, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from secauto.config import (
    CliOverrides,
    Config,
    ConfigError,
    hash_key,
    load_settings,
    parse_redis_url,
    settings_from_config,
)

KEY = "k" * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_cluster_document() -> None:
    cluster = load_settings(None, env={}).config.cluster
    assert (cluster.enabled, cluster.redis_url, cluster.redis_db, cluster.redis_password) == (
        False, "localhost:6379", 0, "")
    assert cluster.node_id == "" and cluster.cluster_name == "secauto-cluster"
    assert (cluster.heartbeat_interval, cluster.election_timeout, cluster.job_timeout, cluster.max_retries) == (
        30, 60, 300, 3)
    assert cluster.max_concurrent_jobs == 10 and cluster.load_balancing == "least_loaded"


def test_document_example_config_loads(tmp_path: Path) -> None:
    path = write(tmp_path, """
server:
  port: 8080
  host: "localhost"

cluster:
  enabled: true
  redis_url: "localhost:6379"
  cluster_name: "my-secauto-cluster"
  heartbeat_interval: 30
  job_timeout: 300
  max_retries: 3

logging:
  level: "info"
  destination: "stdout"
""")
    settings = load_settings(path, env={})
    assert settings.config.cluster.enabled
    assert settings.config.cluster.cluster_name == "my-secauto-cluster"
    assert settings.redis.url == "redis://localhost:6379"


def test_compose_environment_enables_cluster_mode() -> None:
    settings = load_settings(None, env={"REDIS_URL": "redis:6379"})
    assert settings.config.cluster.enabled
    assert settings.redis.url == "redis://redis:6379"


def test_explicit_enabled_false_wins_over_redis_url(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "cluster:\n  enabled: false\n"), env={"REDIS_URL": "r:6379"})
    assert not settings.config.cluster.enabled


def test_env_overrides(tmp_path: Path) -> None:
    env = {"SECAUTO_PORT": "9001", "SECAUTO_HOST": "0.0.0.0", "SECAUTO_NODE_ID": "node-7",
           "SECAUTO_CLUSTER_NAME": "blue", "SECAUTO_REDIS_PASSWORD": "s3cret", "SECAUTO_API_KEY": KEY}
    settings = load_settings(None, env=env)
    assert settings.config.server.port == 9001 and settings.config.server.host == "0.0.0.0"
    assert settings.node_id == "node-7" and settings.config.cluster.cluster_name == "blue"
    assert settings.redis.url == "redis://:s3cret@localhost:6379"
    assert "s3cret" not in settings.redis.display
    assert [key.sha256 for key in settings.api_keys] == [hash_key(KEY)]
    assert settings.generated_api_key is None


def test_secret_key_from_env_and_http_lists() -> None:
    settings = load_settings(None, env={"SECAUTO_SECRET_KEY": "k" * 32})
    assert settings.config.security.secret_key == "k" * 32
    from secauto.node import engine_settings

    raw = {"engine": {"http_allow": ["169.254.169.254", "*.internal"], "http_deny": ["10.0.0.0/8"]}}
    policy = engine_settings(settings_from_config(msgspec.convert(raw, Config), base_dir=Path.cwd())).http_policy
    assert policy.address_refusal("169.254.169.254", "x") is None and policy.allow_hosts == (".internal",)
    assert policy.address_refusal("10.0.0.1", "x") is not None


def test_cli_overrides_beat_env() -> None:
    settings = load_settings(None, env={"SECAUTO_PORT": "9001"}, overrides=CliOverrides(port=9002, node_id="x"))
    assert settings.config.server.port == 9002 and settings.node_id == "x"


@pytest.mark.parametrize(("raw", "url"), [
    ("localhost:6379", "redis://localhost:6379"),
    ("redis:6379", "redis://redis:6379"),
    ("redis://h:1/2", "redis://h:1/2"),
    ("rediss://:pw@h:6380", "rediss://:pw@h:6380"),
    ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
])
def test_redis_url_forms(raw: str, url: str) -> None:
    assert parse_redis_url(raw).url == url


def test_redis_db_and_password_are_applied() -> None:
    assert parse_redis_url("h:1", password="p w", db=3).url == "redis://:p%20w@h:1/3"
    assert parse_redis_url("unix:///tmp/r.sock", password="x", db=1).url == "unix:///tmp/r.sock?password=x&db=1"


def test_sentinel_url() -> None:
    target = parse_redis_url("redis+sentinel://s1:26379,s2:26380/mymaster")
    assert target.sentinels == (("s1", 26379), ("s2", 26380)) and target.service_name == "mymaster"


@pytest.mark.parametrize("raw", ["", "http://h:1", "h:notaport", "redis://:1", "unix://"])
def test_bad_redis_url_names_the_key(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^cluster\.redis_url: "):
        parse_redis_url(raw)


@pytest.mark.parametrize(("text", "message"), [
    ("cluster:\n  heartbeat_intervall: 3\n", "cluster.heartbeat_intervall: unknown key"),
    ("cluster:\n  heartbeat_interval: soon\n", "cluster.heartbeat_interval: Expected `float`, got `str`"),
    ("cluster:\n  heartbeat_interval: 0\n", "cluster.heartbeat_interval: Expected `float` > 0.0"),
    ("server:\n  port: 70000\n", "server.port: Expected `int` <= 65535"),
    ("cluster:\n  load_balancing: random\n", "cluster.load_balancing: Invalid enum value 'random'"),
    ("cluster:\n  cluster_name: 'a b'\n", "cluster.cluster_name: Expected `str` matching regex"),
    ("security:\n  api_keys: [short]\n", "security.api_keys[0]: an API key needs at least 16 characters"),
    ("security:\n  api_keys: [{name: a, role: root, key: " + KEY + "}]\n",
     "security.api_keys[0].role: Invalid enum value 'root'"),
    ("bogus: 1\n", "bogus: unknown key"),
    ("- a\n", "the top level must be a mapping"),
    ("cluster: [\n", "not valid YAML at line"),
    ("cluster:\n  node_id: 'bad id!'\n", "cluster.node_id: 'bad id!' must match"),
    ("security:\n  secret_key: too-short\n", "security.secret_key: needs at least 32 characters"),
    ("engine:\n  http_allow: [10.0.0.0/8, 'not a host!']\n", "engine.http_allow[1]: 'not a host!' is not a network"),
    ("engine:\n  http_deny: ['http://x/']\n", "engine.http_deny[0]: 'http://x/' is not a network"),
    # schedules: every problem names the schedule's index and field
    ("schedules:\n  - {name: a, cron: '61 * * * *', playbook_name: p}\n",
     "schedules[0].cron: '61 * * * *': bad minute"),
    ("schedules:\n  - {name: a, every: 60, playbook_name: p}\n  - {name: b, every: 60, timezone: Mars/Base, "
     "playbook_name: p}\n", "schedules[1].timezone: unknown time zone 'Mars/Base'"),
    ("schedules:\n  - {name: a, every: 0.5, playbook_name: p}\n", "schedules[0].every: Expected `float` >= 1.0"),
    ("schedules:\n  - {name: a, cron: '@daily', every: 60, playbook_name: p}\n",
     "schedules[0].cron: give exactly one of cron or every"),
    ("schedules:\n  - {name: a, every: 60}\n", "schedules[0].playbook: give exactly one of playbook or playbook_name"),
    ("schedules:\n  - {name: a, every: 60, playbook_name: p, colour: red}\n", "schedules[0].colour: unknown key"),
    ("schedules:\n  - {name: 'a b', every: 60, playbook_name: p}\n", "schedules[0].name: Expected `str` matching"),
    ("schedules:\n  - {name: a, every: 60, playbook_name: p, overlap: queue}\n",
     "schedules[0].overlap: Invalid enum value 'queue'"),
    ("schedules:\n  - {name: a, every: 60, playbook_name: p}\n  - {name: a, every: 60, playbook_name: p}\n",
     "schedules[1].name: another schedule is already named 'a'"),
    ("schedules:\n  - {name: a, every: 60, jitter: 60, playbook_name: p}\n", "schedules[0].jitter: must be less"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text), env={})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_env_port() -> None:
    with pytest.raises(ConfigError, match="SECAUTO_PORT"):
        load_settings(None, env={"SECAUTO_PORT": "eighty"})


def test_no_default_api_key_a_random_one_is_generated() -> None:
    first, second = load_settings(None, env={}), load_settings(None, env={})
    assert first.generated_api_key and second.generated_api_key
    assert first.generated_api_key != second.generated_api_key
    assert len(first.generated_api_key) >= 32
    assert [key.sha256 for key in first.api_keys] == [hash_key(first.generated_api_key)]


def test_api_key_objects_with_roles_and_hashes(tmp_path: Path) -> None:
    digest = hash_key("v" * 20).hex()
    settings = load_settings(write(tmp_path, f"""
security:
  api_keys:
    - {KEY}
    - {{name: ops, key: {"o" * 20}, role: operator}}
    - {{name: view, key_sha256: {digest}, role: viewer}}
"""), env={})
    assert [(key.name, key.role) for key in settings.api_keys] == [("key0", "admin"), ("ops", "operator"),
                                                                    ("view", "viewer")]
    assert settings.api_keys[2].sha256 == bytes.fromhex(digest)


def test_engine_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "engine:\n  scripts_dir: ../automations\n"), env={})
    assert settings.scripts_dir == (tmp_path.parent / "automations").resolve()


def test_engine_runner_and_preload(tmp_path: Path) -> None:
    from secauto.engine.warm_runner import DEFAULT_PRELOAD
    from secauto.node import engine_settings

    default = load_settings(None, env={})
    assert default.config.engine.runner == "warm"
    assert tuple(default.config.engine.preload) == DEFAULT_PRELOAD
    assert {"json", "re", "pkgutil", "typing"} <= set(DEFAULT_PRELOAD)
    settings = load_settings(write(tmp_path, "engine:\n  runner: spawn\n  preload: [json, urllib.parse]\n"), env={})
    engine = engine_settings(settings)
    assert (engine.runner, engine.preload) == ("spawn", ("json", "urllib.parse"))


@pytest.mark.parametrize(("text", "error"), [
    ("engine:\n  runner: hot\n", r"^engine\.runner: Invalid enum value 'hot'"),
    ("engine:\n  runner: 1\n", r"^engine\.runner: Expected `str`, got `int`"),
    ("engine:\n  preload: json\n", r"^engine\.preload: Expected `array`, got `str`"),
    ("engine:\n  preload: [json, 'os; import x']\n", r"^engine\.preload\[1\]: Expected `str` matching regex"),
    ("engine:\n  preload: [json, 3]\n", r"^engine\.preload\[1\]: Expected `str`, got `int`"),
    ("engine:\n  runer: warm\n", r"^engine\.runer: unknown key"),
])  # fmt: skip
def test_engine_runner_and_preload_errors_name_the_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_settings(write(tmp_path, text), env={})


def test_serve_exits_2_with_one_line_on_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster:\n  max_retries: lots\n")
    proc = subprocess.run([sys.executable, "-m", "secauto", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "secauto: config error: cluster.max_retries: Expected `int`, got `str`"


def test_schedules_section(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """
schedules:
  - name: threat-intel
    every: 900
    jitter: 30
    playbook_name: notify_soc
  - name: compliance-sweep
    cron: "0 2 * * *"
    timezone: Europe/Berlin
    playbook: [{action: log, message: sweep}]
    overlap: buffer_one
    catchup: none
"""), env={})
    first, second = settings.config.schedules or []
    assert (first.name, first.every, first.timezone, first.overlap, first.catchup) == (
        "threat-intel", 900, "UTC", "skip", "latest")
    assert (second.cron, second.timezone, second.catchup_window, second.enabled) == (
        "0 2 * * *", "Europe/Berlin", 3600, True)
    assert load_settings(None, env={}).config.schedules is None  # no key: config schedules left alone
    assert load_settings(write(tmp_path, "schedules: []\n"), env={}).config.schedules == []


def test_serve_exits_2_naming_a_schedule_whose_playbook_is_bad(tmp_path: Path) -> None:
    path = write(tmp_path, f"security:\n  api_keys: [{KEY}]\n"
                           "schedules:\n  - {name: a, every: 60, playbook_name: no-such-playbook}\n")
    proc = subprocess.run([sys.executable, "-m", "secauto", "serve", "--config", str(path), "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("secauto: config error: schedules[0].playbook_name: ")
    assert "no-such-playbook" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["config.yaml", "cluster.yaml"])
def test_shipped_config_files_load(name: str) -> None:
    path = Path(__file__).resolve().parents[2] / "config" / name
    settings = load_settings(path, env={})
    assert settings.scripts_dir.name == "automations" and settings.scripts_dir.is_dir()
    assert settings.config.cluster.enabled is (name == "cluster.yaml")
