"""Deployment files: Dockerfile, deploy/docker-compose.yml, the nginx configs and deploy/kubernetes/.

No container engine, nginx or Kubernetes runs here, so these tests check what can be checked: every file
parses, and ports, probes, paths, grace periods and the environment agree with the config that
``secauto.config.load_settings`` actually loads from them. The last tests run the image's HEALTHCHECK
command against a live in-process node and time the node's SIGTERM drain against its grace period.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from secauto.config import ConfigError, Settings, load_settings, parse_redis_url
from secauto.node import Node
from secauto.store.connection import open_embedded
from secauto.store.keys import Keys
from tests.support.nodes import auth, node_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKER_CONFIG = DEPLOY / "config.docker.yaml"
API_KEY = "deploy-test-key-0123456789abcdef"
POD_NAME = "secauto-7c9d5b6f4-x2k8p"
# What Node.stop() may take beyond server.shutdown_grace: HTTP cleanup (2 s), the ordered actor stop
# (at most 10 s) and some slack. A stop timeout below shutdown_grace + this can kill a draining node.
STOP_OVERHEAD_S = 17.0

# The cluster-mode document's "Multi-Node Deployment" compose file, verbatim: it must work with our image.
DOCUMENT_COMPOSE = """
version: '3.8'
services:
  redis:
    image: redis:7-alpine
    ports:
      - "6379:6379"
    volumes:
      - redis_data:/data

  secauto-node1:
    build: .
    ports:
      - "8080:8080"
    environment:
      - REDIS_URL=redis:6379
    depends_on:
      - redis

  secauto-node2:
    build: .
    ports:
      - "8081:8080"
    environment:
      - REDIS_URL=redis:6379
    depends_on:
      - redis

  secauto-node3:
    build: .
    ports:
      - "8082:8080"
    environment:
      - REDIS_URL=redis:6379
    depends_on:
      - redis

volumes:
  redis_data:
"""


# ---------------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------------


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs), path
    return docs


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the manifests listed in kustomization.yaml, by (kind, name)."""
    kustomization = yaml_docs(K8S / "kustomization.yaml")[0]
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in yaml_docs(K8S / resource):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = doc
    return objects


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for (obj_kind, _), obj in k8s_objects().items() if obj_kind == kind]


def secauto_deployment() -> dict[str, Any]:
    return k8s_objects()[("Deployment", "secauto")]


def secauto_container() -> dict[str, Any]:
    containers = secauto_deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A numeric port, or the containerPort a named port stands for."""
    if isinstance(port, int):
        return port
    matches = [item["containerPort"] for item in container["ports"] if item.get("name") == port]
    assert len(matches) == 1, f"no container port named {port!r}"
    return matches[0]  # type: ignore[no-any-return]


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        instructions.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    return instructions


def instruction(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"not exec form (JSON array): {args}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


def healthcheck_command() -> list[str]:
    (args,) = instruction("HEALTHCHECK")
    _options, sep, command = args.partition("CMD ")
    assert sep, "HEALTHCHECK without CMD"
    return exec_form(command.strip())


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (the image that runs)."""
    instructions = dockerfile()
    last_from = max(index for index, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def image_workdir() -> str:
    workdirs = [args for word, args in runtime_stage() if word == "WORKDIR"]
    assert workdirs, "no WORKDIR in the runtime stage"
    return workdirs[-1]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in runtime_stage():
        if word == "ENV":
            for item in shlex.split(args):
                name, sep, value = item.partition("=")
                assert sep, f"ENV {args!r}: use NAME=value"
                env[name] = value
    return env


def image_copies() -> dict[str, str]:
    """COPY destinations (absolute) of the runtime stage, without --from copies: dest -> source."""
    copies: dict[str, str] = {}
    workdir = image_workdir()
    for word, args in runtime_stage():
        if word != "COPY" or "--from" in args:
            continue
        parts = [part for part in args.split() if not part.startswith("--")]
        source, dest = parts[0], parts[-1]
        absolute = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest.removeprefix('./')}"
        copies[absolute.rstrip("/")] = source.rstrip("/")
    return copies


_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $$."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("?", ":?") and unset:
            raise KeyError(f"{name}: {arg}")
        if op in ("-", ":-") and unset:
            return arg or ""
        return value or ""

    return _VAR.sub(replace, text)


def compose_file(path: Path = DEPLOY / "docker-compose.yml") -> dict[str, Any]:
    (doc,) = yaml_docs(path)
    return doc


def node_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items() if "build" in service}


def service_env(service: Mapping[str, Any], shell_env: Mapping[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {name: substitute(str(value), shell_env) for name, value in raw.items()}


def container_ports(service: Mapping[str, Any]) -> list[int]:
    return [int(str(mapping).rsplit(":", 1)[1].split("/")[0]) for mapping in service.get("ports", [])]


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    assert parts and "".join(a + b for a, b in parts) == str(text), f"bad duration {text!r}"
    for amount, unit in parts:
        total += float(amount) * units[unit]
    return total


def image_config_settings(env: Mapping[str, str]) -> Settings:
    """What a container of the image loads: the baked config file plus the container's environment."""
    return load_settings(DOCKER_CONFIG, env=env)


def k8s_settings(tmp_path: Path) -> Settings:
    """What a pod loads: the ConfigMap's config.yaml plus the Deployment's env (as the kubelet fills it)."""
    configmap = k8s_objects()[("ConfigMap", "secauto-config")]
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"], encoding="utf-8")
    env: dict[str, str] = {}
    for item in secauto_container()["env"]:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = POD_NAME
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = API_KEY  # what an operator puts in the Secret
    return load_settings(path, env=env)


def nginx_directives(path: Path) -> str:
    """The config without comments, for directive checks."""
    return "\n".join(line.split("#", 1)[0].rstrip() for line in path.read_text(encoding="utf-8").splitlines())


def upstream_servers(text: str, name: str = "secauto_cluster") -> list[str]:
    match = re.search(r"upstream\s+" + name + r"\s*\{(?P<body>[^}]*)\}", text)
    assert match, f"no upstream {name}"
    return re.findall(r"^\s*server\s+([^;]+);", match.group("body"), re.MULTILINE)


# ---------------------------------------------------------------------------------------------------
# every file parses
# ---------------------------------------------------------------------------------------------------


def test_every_manifest_parses_and_the_kustomization_lists_them_all() -> None:
    kustomization = yaml_docs(K8S / "kustomization.yaml")[0]
    files = {path.name for path in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert "namespace" not in kustomization  # namespace-agnostic: kubectl apply -k ... -n NAMESPACE
    objects = k8s_objects()
    for (kind, name), obj in objects.items():
        assert obj["apiVersion"] and kind and name
        assert "namespace" not in obj["metadata"], f"{kind}/{name} pins a namespace"
    kinds = {kind for kind, _ in objects}
    assert {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "StatefulSet"} <= kinds


def test_compose_and_image_config_parse() -> None:
    assert set(node_services(compose_file())) == {"secauto-node1", "secauto-node2", "secauto-node3"}
    assert yaml_docs(DOCKER_CONFIG)[0]["server"]["port"] == 8080


# ---------------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------------


def test_dockerfile_builds_a_slim_non_root_image_that_runs_secauto_serve() -> None:
    froms = instruction("FROM")
    args = {key: value for key, _, value in (item.partition("=") for item in instruction("ARG"))}
    bases = [substitute(item.split()[0], args) for item in froms]
    assert bases and all(re.fullmatch(r"python:3\.11-slim(-\w+)?", base) for base in bases), bases
    users = [args for word, args in runtime_stage() if word == "USER"]
    assert users, "the image runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    entrypoint = exec_form(instruction("ENTRYPOINT")[-1])
    command = entrypoint + (exec_form(instruction("CMD")[-1]) if instruction("CMD") else [])
    # exec form under tini: tini (PID 1) forwards SIGTERM to the node and reaps what scripts leave behind
    assert command[:4] == ["/usr/bin/tini", "--", "secauto", "serve"]
    assert any("install" in args and "tini" in args for word, args in runtime_stage() if word == "RUN")
    assert instruction("STOPSIGNAL") == ["SIGTERM"]
    assert instruction("EXPOSE") == ["8080"]
    installs = " ".join(args for word, args in dockerfile() if word == "RUN" and "pip install" in args)
    assert re.search(r"pip install\s+\.(\s|$)", installs), "install the package from pyproject"
    assert "-e " not in installs and "--editable" not in installs and "[dev]" not in installs


def test_dockerfile_copies_scripts_playbooks_and_the_container_config() -> None:
    copies = image_copies()
    workdir = image_workdir().rstrip("/")
    assert copies[f"{workdir}/automations"] == "automations"
    assert copies[f"{workdir}/playbooks"] == "playbooks"
    config_path = image_env()["SECAUTO_CONFIG"]
    assert copies[config_path] == "deploy/config.docker.yaml"
    settings = image_config_settings({})
    assert settings.scripts_dir == Path(f"{workdir}/automations")
    assert settings.playbooks_dir == Path(f"{workdir}/playbooks")
    assert (REPO / "automations" / "baseit.py").is_file()  # the document's example script is in the image


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.removeprefix("!")
            parts = path.split("/")
            prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
            if any(fnmatch.fnmatchcase(prefix, pattern) or
                   (pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.split("/")[-1], pattern[3:]))
                   for prefix in prefixes):
                result = not negate
        return result

    sources = [args.split()[-2] for word, args in dockerfile() if word == "COPY" and "--from" not in args]
    assert sources
    for source in sources:
        assert not ignored(source.rstrip("/")), f"{source} is excluded from the build context"
    for secret_or_junk in (".git", ".venv", "tests", ".env", "deploy/kubernetes/secret.yaml", "config.yaml"):
        assert ignored(secret_or_junk), secret_or_junk


def test_healthcheck_probes_liveness_on_the_configured_port_with_python() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]  # no curl in slim images
    code = command[2]
    assert "urllib.request" in code and "/health/live" in code
    port = image_config_settings({}).config.server.port
    assert f"'SECAUTO_PORT', '{port}'" in code  # defaults to the config's port, follows SECAUTO_PORT
    assert instruction("EXPOSE") == [str(port)]


def test_container_config_listens_everywhere_and_redis_url_alone_turns_cluster_mode_on() -> None:
    standalone = image_config_settings({})
    assert standalone.config.server.host == "0.0.0.0"
    assert standalone.config.cluster.enabled is False  # no REDIS_URL: a standalone node
    clustered = image_config_settings({"REDIS_URL": "redis:6379"})
    assert clustered.config.cluster.enabled is True
    assert clustered.redis.url == "redis://redis:6379"


# ---------------------------------------------------------------------------------------------------
# docker compose
# ---------------------------------------------------------------------------------------------------


def test_compose_node_environment_works_with_the_config_loader() -> None:
    compose = compose_file()
    shell = {"SECAUTO_API_KEY": API_KEY}
    node_ids: set[str] = set()
    for name, service in node_services(compose).items():
        env = service_env(service, shell)
        for settings in (load_settings(None, env=env), image_config_settings(env)):
            cluster = settings.config.cluster
            assert cluster.enabled is True, name
            assert cluster.redis_url == "redis:6379"
            assert settings.redis.url == "redis://redis:6379"
            assert any(key.role == "admin" for key in settings.api_keys) and settings.generated_api_key is None
        host = parse_redis_url(env["REDIS_URL"]).url.split("//")[1].split(":")[0]
        assert host in compose["services"], f"{name}: REDIS_URL names no compose service"
        node_ids.add(settings.node_id)
        assert container_ports(service) == [settings.config.server.port]
    assert len(node_ids) == 3
    published = sorted(int(str(item).split(":")[0]) for service in node_services(compose).values()
                       for item in service["ports"])
    assert published == [8080, 8081, 8082]  # as in the document


def test_compose_requires_the_shared_api_key() -> None:
    for service in node_services(compose_file()).values():
        with pytest.raises(KeyError, match="SECAUTO_API_KEY"):
            service_env(service, {})
        assert service_env(service, {"SECAUTO_API_KEY": API_KEY})["SECAUTO_API_KEY"] == API_KEY


def test_compose_nodes_wait_for_a_healthy_persistent_redis_and_get_time_to_drain() -> None:
    compose = compose_file()
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"] if isinstance(redis["command"], list) else redis["command"].split()
    assert command[command.index("--appendonly") + 1] == "yes"
    volume = next(item for item in redis["volumes"] if item.endswith(":/data"))
    assert volume.split(":")[0] in compose["volumes"]
    assert redis["healthcheck"]["test"]
    assert all(not str(item).split(":")[0].isdigit() or str(item).startswith("127.0.0.1:")
               for item in redis.get("ports", [])), "publish Redis on the loopback only"
    grace = image_config_settings({}).config.server.shutdown_grace
    for name, service in node_services(compose).items():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert duration_s(service["stop_grace_period"]) >= grace + STOP_OVERHEAD_S, name
        # an init as PID 1 (tini in the image; init: true is a harmless second one) reaps orphans
        assert service["init"] is True, name
        assert service["build"]["context"] == ".." and (DEPLOY / service["build"]["context"] / "Dockerfile").is_file()


def test_compose_nginx_uses_the_compose_variant_of_the_config() -> None:
    compose = compose_file()
    nginx = compose["services"]["nginx"]
    mounts = {item.split(":")[1]: item.split(":")[0] for item in nginx["volumes"]}
    source = mounts["/etc/nginx/conf.d/default.conf"]
    assert (DEPLOY / source).resolve() == DEPLOY / "nginx.compose.conf"
    servers = [server.split()[0] for server in upstream_servers(nginx_directives(DEPLOY / "nginx.compose.conf"))]
    port = image_config_settings({}).config.server.port
    assert servers == [f"{name}:{port}" for name in sorted(node_services(compose))]
    # "resolve" in an upstream needs open-source nginx >= 1.27.3
    version = nginx["image"].split(":")[1].split("-")[0]
    assert tuple(int(part) for part in version.split(".")) >= (1, 28)


def test_the_documents_compose_file_works_with_the_image() -> None:
    compose = yaml.safe_load(DOCUMENT_COMPOSE)
    assert (REPO / "Dockerfile").is_file()  # `build: .` from the repository root
    ids = set()
    for name, service in node_services(compose).items():
        env = service_env(service, {})
        settings = image_config_settings(env)
        assert settings.config.cluster.enabled is True, name
        assert settings.redis.url == "redis://redis:6379"
        assert container_ports(service) == [settings.config.server.port]
        ids.add(settings.node_id)
    # Without SECAUTO_NODE_ID each container names itself <hostname>-<port>: the hostname is the
    # container id, distinct per container (here all three run on this test's host, hence one id).
    assert ids and all(re.fullmatch(r".+-8080", node_id) for node_id in ids)


# ---------------------------------------------------------------------------------------------------
# nginx
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nginx.conf", "nginx.compose.conf"])
def test_nginx_balances_the_three_nodes_with_failover(name: str) -> None:
    text = nginx_directives(DEPLOY / name)
    assert text.count("{") == text.count("}")
    for line in text.splitlines():
        stripped = line.strip()
        assert not stripped or stripped.endswith((";", "{", "}")), f"{name}: unterminated {stripped!r}"
    servers = upstream_servers(text)
    assert len(servers) == 3
    for server in servers:
        assert re.search(r"\bmax_fails=\d+", server) and re.search(r"\bfail_timeout=\d+s", server), server
    assert re.search(r"proxy_pass\s+http://secauto_cluster;", text)
    # the browser's Host with its port: the dashboard compares it with Origin ($host drops the port)
    for header in (r"Host \$http_host", r"X-Real-IP \$remote_addr", r"X-Forwarded-For \$proxy_add_x_forwarded_for"):
        assert re.search(r"proxy_set_header\s+" + header + ";", text), header
    assert len(re.findall(r"proxy_set_header\s+Host\s", text)) == 1  # no second one, e.g. a location's $host
    (next_upstream,) = re.findall(r"proxy_next_upstream\s+([^;]+);", text)
    assert {"error", "timeout", "http_502", "http_503", "http_504"} <= set(next_upstream.split())
    assert "non_idempotent" not in next_upstream  # a POST that reached a node is never sent twice
    assert re.search(r"proxy_next_upstream_tries\s+[2-9];", text)
    assert re.search(r"proxy_connect_timeout\s+\d+s;", text) and re.search(r"proxy_read_timeout\s+\d+s;", text)
    (body_size,) = re.findall(r"client_max_body_size\s+(\d+)([kKmM]?);", text)
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[body_size[1].lower()]
    assert int(body_size[0]) * factor == image_config_settings({}).config.server.max_body_bytes


def test_host_nginx_conf_is_the_documents_configuration() -> None:
    text = nginx_directives(DEPLOY / "nginx.conf")
    assert [server.split()[0] for server in upstream_servers(text)] == [
        "localhost:8080", "localhost:8081", "localhost:8082"]
    assert re.search(r"listen\s+80;", text) and re.search(r"server_name\s+secauto\.example\.com;", text)


# ---------------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------------


def test_pods_load_the_configmap_with_the_deployment_env(tmp_path: Path) -> None:
    settings = k8s_settings(tmp_path)
    config = settings.config
    assert config.cluster.enabled is True
    assert config.server.host == "0.0.0.0"
    assert settings.node_id == POD_NAME  # SECAUTO_NODE_ID from metadata.name
    assert settings.generated_api_key is None and [key.role for key in settings.api_keys] == ["admin"]
    container = secauto_container()
    env = {item["name"]: item for item in container["env"]}
    assert env["SECAUTO_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "secauto-api-key"
    secret = k8s_objects()[("Secret", "secauto-api-key")]
    secret_keys = secret.get("stringData") or secret.get("data") or {}
    assert env["SECAUTO_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] in secret_keys
    # the config file the image reads ($SECAUTO_CONFIG) is the ConfigMap's key, mounted
    config_path = Path(env["SECAUTO_CONFIG"]["value"])
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in secauto_deployment()["spec"]["template"]["spec"]["volumes"]}
    config_volume = next(name for name, volume in volumes.items()
                         if volume.get("configMap", {}).get("name") == "secauto-config")
    assert Path(mounts[config_volume]["mountPath"]) == config_path.parent
    assert config_path.name in k8s_objects()[("ConfigMap", "secauto-config")]["data"]
    # the engine folders are the ones the image holds
    workdir = image_workdir().rstrip("/")
    assert settings.scripts_dir == Path(f"{workdir}/automations")
    assert settings.playbooks_dir == Path(f"{workdir}/playbooks")


def test_ports_agree_between_config_container_service_probes_and_image(tmp_path: Path) -> None:
    port = k8s_settings(tmp_path).config.server.port
    container = secauto_container()
    assert [item["containerPort"] for item in container["ports"]] == [port]
    assert instruction("EXPOSE") == [str(port)]
    service = k8s_objects()[("Service", "secauto")]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == 80
    assert container_port(container, service_port["targetPort"]) == port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container_port(container, container[probe]["httpGet"]["port"]) == port, probe


def test_readiness_is_health_and_liveness_is_health_live() -> None:
    from secauto.api.health import ROUTES
    from secauto.api.roles import declared_role

    container = secauto_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    # A Redis outage turns /health to 503: that must take pods out of the Service, never restart them.
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    routes = {path: handler for method, path, handler in ROUTES if method == "GET"}
    for path in ("/health", "/health/live"):
        assert declared_role(routes[path]) == "public", f"{path} must answer probes without a key"
    healthcheck = healthcheck_command()[2]
    assert "/health/live" in healthcheck  # Docker health feeds restarts too: liveness, not readiness


def test_termination_grace_covers_prestop_and_the_drain(tmp_path: Path) -> None:
    grace = k8s_settings(tmp_path).config.server.shutdown_grace
    spec = secauto_deployment()["spec"]["template"]["spec"]
    prestop = secauto_container().get("lifecycle", {}).get("preStop", {})
    prestop_s = 0.0
    if "exec" in prestop:
        command = prestop["exec"]["command"]
        assert command[0] == "sleep", command
        prestop_s = float(command[1])
    elif "sleep" in prestop:
        prestop_s = float(prestop["sleep"]["seconds"])
    assert spec["terminationGracePeriodSeconds"] >= prestop_s + grace + STOP_OVERHEAD_S


def test_deployment_runs_three_hardened_non_root_replicas() -> None:
    deployment = secauto_deployment()
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert "shareProcessNamespace" not in pod  # tini in the image reaps what scripts leave behind
    container = secauto_container()
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    user = [args for word, args in runtime_stage() if word == "USER"][-1].split(":")[0]
    assert str(security["runAsUser"]) == user  # numeric in the image, so runAsNonRoot can verify it
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["readOnlyRootFilesystem"] is True
    tmp = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp")
    assert "emptyDir" in next(volume for volume in pod["volumes"] if volume["name"] == tmp["name"])
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


def test_service_links_are_off_because_they_would_break_the_port_override() -> None:
    # The Service named "secauto" makes the kubelet inject SECAUTO_PORT=tcp://<ip>:80 (docker-link
    # style) into every pod started after it; the node reads SECAUTO_PORT as its port and would refuse
    # to start. The nodes find Redis by DNS and need no service links.
    assert ("Service", "secauto") in k8s_objects()
    with pytest.raises(ConfigError, match="SECAUTO_PORT"):
        load_settings(None, env={"SECAUTO_PORT": "tcp://10.96.0.10:80"})
    assert secauto_deployment()["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_secret_holds_a_placeholder_the_node_refuses(tmp_path: Path) -> None:
    secret = k8s_objects()[("Secret", "secauto-api-key")]
    placeholder = secret["stringData"]["api-key"]
    assert "REPLACE" in placeholder.upper()
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings(None, env={"SECAUTO_API_KEY": placeholder})


def test_selectors_match_the_pods() -> None:
    objects = k8s_objects()
    pod_labels = secauto_deployment()["spec"]["template"]["metadata"]["labels"]
    assert secauto_deployment()["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objects[("Service", "secauto")]["spec"]["selector"].items() <= pod_labels.items()
    (pdb,) = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    replicas = secauto_deployment()["spec"]["replicas"]
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable", 0) >= replicas - 1
    (policy,) = by_kind("NetworkPolicy")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= pod_labels.items()


def test_redis_option_is_persistent_and_reachable_at_the_configured_url(tmp_path: Path) -> None:
    objects = k8s_objects()
    (statefulset,) = by_kind("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert any(mount["name"] == claim["metadata"]["name"] and mount["mountPath"] == "/data"
               for mount in container["volumeMounts"])
    assert ("Service", statefulset["spec"]["serviceName"]) in objects
    url = k8s_settings(tmp_path).redis.url  # redis://secauto-redis:6379
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    service = objects[("Service", host)]
    assert service["spec"]["selector"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == int(port)
    assert container_port(container, service_port["targetPort"]) == 6379


# ---------------------------------------------------------------------------------------------------
# against a live node: the HEALTHCHECK command and the SIGTERM drain
# ---------------------------------------------------------------------------------------------------


async def run_healthcheck(port: int) -> int:
    command = healthcheck_command()
    env = {**os.environ, "SECAUTO_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(sys.executable, *command[1:], env=env,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    return await asyncio.wait_for(proc.wait(), timeout=15)


async def test_the_image_healthcheck_command_passes_on_a_live_node_and_fails_without_one() -> None:
    node = Node(node_settings("hc"))
    await node.start()
    try:
        assert await run_healthcheck(node.port) == 0
    finally:
        await node.stop(grace=0)
    assert await run_healthcheck(node.port) != 0


@pytest.fixture
async def draining_node() -> AsyncIterator[tuple[Node, Any]]:
    redis = open_embedded()
    node = Node(node_settings("drain", server={"shutdown_grace": 4}), redis=redis)
    await node.start()
    try:
        yield node, redis
    finally:
        await node.stop(grace=0)
        await redis.aclose()


async def start_job(node: Node, seconds: float) -> str:
    """Submit a job that sleeps ``seconds`` and wait until it runs."""
    job = {"playbook": [{"action": "sleep", "seconds": seconds}], "context": {}}
    async with aiohttp.ClientSession(base_url=node.url) as http:
        async with asyncio.timeout(30):
            while True:  # a loaded machine can make the node answer 503 + Retry-After: retry, as clients do
                async with http.post("/cluster/jobs", json=job, headers=auth()) as response:
                    body = await response.json()
                    if response.status != 503:
                        break
                await asyncio.sleep(0.2)
        assert response.status == 200, body
        job_id: str = body["job_id"]
        async with asyncio.timeout(30):
            while True:
                async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
                    if (await response.json())["job"]["status"] == "running":
                        return job_id
                await asyncio.sleep(0.02)


async def job_status(node: Node, redis: Any, job_id: str) -> str:
    record = await redis.get(Keys(node.settings.config.cluster.cluster_name).job(job_id))
    status: str = json.loads(record)["status"]
    return status


async def test_sigterm_drain_returns_as_soon_as_the_running_jobs_are_done(
        draining_node: tuple[Node, Any]) -> None:
    node, redis = draining_node
    grace = node.settings.config.server.shutdown_grace
    job_id = await start_job(node, 0.3)
    started = time.monotonic()
    await node.stop()  # what SIGTERM runs (Node.run_until_stopped)
    assert time.monotonic() - started < grace - 1
    assert await job_status(node, redis, job_id) == "completed"


async def test_sigterm_drain_hands_back_what_outlives_the_grace_period(
        draining_node: tuple[Node, Any]) -> None:
    node, redis = draining_node
    grace = node.settings.config.server.shutdown_grace
    short, long = await start_job(node, 0.3), await start_job(node, 120)
    started = time.monotonic()
    await node.stop()
    elapsed = time.monotonic() - started
    # Within the grace period plus the stop overhead the orchestrators' timeouts are sized with.
    assert grace - 0.5 <= elapsed <= grace + STOP_OVERHEAD_S
    assert await job_status(node, redis, short) == "completed"
    assert await job_status(node, redis, long) == "pending"  # handed back for another node
