# syntax=docker/dockerfile:1
#
# SecAuto node image: `docker build -t secauto .` from the repository root (the cluster-mode document's
# compose file uses `build: .`). See deploy/README.md for compose, nginx and Kubernetes.
#
# PID 1 is tini, which passes SIGTERM on to `secauto serve` (exec form, no shell) and reaps the child
# processes that scripts leave behind (with the node as PID 1 they would stay as zombies). On SIGTERM the
# node stops claiming jobs, lets running ones finish within server.shutdown_grace (30 s), hands the rest
# back and deregisters. Give the orchestrator a longer
# stop timeout than that (compose stop_grace_period: 60s, terminationGracePeriodSeconds: 60).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package (non-editable, no dev extras) into a self-contained venv ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY secauto ./secauto
COPY actors ./actors
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip uninstall --yes pip setuptools

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SECAUTO_CONFIG=/app/config.yaml

# tini (Debian's package): the init that reaps orphaned script processes and forwards signals.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and volumes can be chowned to it.
RUN groupadd --system --gid 10001 secauto \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/secauto --create-home \
            --shell /usr/sbin/nologin secauto

COPY --from=build /opt/venv /opt/venv

# Scripts, playbooks and config stay owned by root: the node (uid 10001) can read and run them but not
# change them.
WORKDIR /app
COPY automations/ ./automations/
COPY playbooks/ ./playbooks/
COPY deploy/config.docker.yaml ./config.yaml

USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM

# Liveness, not readiness: /health/live answers 200 while the node's event loop runs. /health turns 503
# while Redis is unreachable; Docker health feeds restarts (Swarm, autoheal), and a Redis outage must not
# get the nodes restarted. The load balancer uses the 503s of /health and the API (deploy/nginx.conf).
# No curl in slim images: python's urllib. SECAUTO_PORT moves the port, the probe follows it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SECAUTO_PORT', '8080') + '/health/live', timeout=4)"]

# Extra arguments go to `secauto serve`: `docker run secauto --node-id node-1`.
ENTRYPOINT ["/usr/bin/tini", "--", "secauto", "serve"]
