"""Secrets, for admins: ``POST /secrets``, ``GET /secrets``, ``DELETE /secrets/{name}``.

Values go in and never come out: answers carry names and update times only, and every value stored
through any node is masked (``***``) wherever it would show (see :mod:`secauto.redaction`). Storing
needs a secret key on the node that receives the request (409 ``secrets_disabled`` without one: a
state of the node, not a passing outage, so not a 503); listing and deleting do not.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from secauto.api.errors import ApiError
from secauto.api.inputs import read_json
from secauto.api.roles import requires
from secauto.api.spec import operation, respond, whole
from secauto.api.state import AUDIT_TARGET, VAULT
from secauto.engine.secrets import SECRET_NAME_PATTERN, secret_name_problem
from secauto.models import utc_now
from secauto.redaction import MIN_SECRET_LENGTH
from secauto.store.secrets import MAX_SECRETS
from secauto.vault import NoSecretKey, SecretInfo

MAX_SECRET_BYTES = 16 * 1024
SecretName = Annotated[str, msgspec.Meta(pattern=whole(SECRET_NAME_PATTERN), description="1-64 of A-Z a-z 0-9 _ -")]


class SecretBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /secrets``: creates the secret, or replaces its value."""

    name: SecretName
    value: Annotated[str, msgspec.Meta(min_length=MIN_SECRET_LENGTH, max_length=MAX_SECRET_BYTES,
                                       description=f"at least {MIN_SECRET_LENGTH} characters (shorter values "
                                                   "would mask ordinary words everywhere)")]


class SecretStoredResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    secret: SecretInfo
    created: bool  # false: an existing secret's value was replaced
    timestamp: str = msgspec.field(default_factory=utc_now)


class SecretListResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    secrets: list[SecretInfo]  # by name
    timestamp: str = msgspec.field(default_factory=utc_now)


class SecretDeletedResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    name: str
    deleted: Literal[True] = True
    timestamp: str = msgspec.field(default_factory=utc_now)


@requires("admin")
@operation("Store a secret (encrypted at rest; the value is never shown again)", body=SecretBody,
           ok=SecretStoredResponse, errors=(409,), audit="secret.put",
           description="Creates the secret or replaces its value. Steps use it as {{secrets.NAME}}. 409 with code "
                       "secrets_disabled when this node has no secret key (security.secret_key / "
                       f"$SECAUTO_SECRET_KEY), 409 with code conflict when {MAX_SECRETS} secrets exist already.")
async def store_secret(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, SecretBody)
    request[AUDIT_TARGET] = body.name  # the name only: the audit trail never sees the value
    vault = request.app[VAULT]
    if len(body.value.encode()) > MAX_SECRET_BYTES:
        raise ApiError(400, "validation_error", f"value: at most {MAX_SECRET_BYTES} bytes")
    try:
        outcome, info = await vault.put(body.name, body.value)
    except NoSecretKey as exc:
        raise ApiError(409, "secrets_disabled", str(exc)) from None
    if outcome == "full":
        raise ApiError(409, "conflict", f"{MAX_SECRETS} secrets are stored already; delete one first")
    return respond(request, SecretStoredResponse(secret=info, created=outcome == "created"))


@requires("admin")
@operation("Stored secrets: names and update times, never values", ok=SecretListResponse)
async def list_secrets(request: web.Request) -> web.StreamResponse:
    return respond(request, SecretListResponse(secrets=await request.app[VAULT].catalog()))


@requires("admin")
@operation("Delete a secret", ok=SecretDeletedResponse, path={"name": SecretName}, errors=(404,), audit="secret.delete",
           description="Jobs that still reference it fail at that step with 'unknown secret'.")
async def delete_secret(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if secret_name_problem(name) is not None or not await request.app[VAULT].delete(name):
        raise ApiError(404, "not_found", f"no secret {name[:100]!r}")
    return respond(request, SecretDeletedResponse(name=name))


ROUTES = [
    ("POST", "/secrets", store_secret),
    ("GET", "/secrets", list_secrets),
    ("DELETE", "/secrets/{name}", delete_secret),
]
